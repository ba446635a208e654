"""Access-token signing keys (Ed25519), their JWKS, and minting of access tokens."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.crypto import seal, unseal
from subgraphs.auth.models import SigningKey

_KEY_CONTEXT = "auth.signing_key"
_cache: dict[str, tuple[float, str, Ed25519PrivateKey]] = {}
_CACHE_SECONDS = 30  # a rotated key is picked up by every instance within this time


async def create_signing_key(session: AsyncSession, settings: Settings) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = uuid.uuid4().hex
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": "EdDSA", "use": "sig"})
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key = SigningKey(kid=kid, algorithm="EdDSA", private_key_sealed=seal(pem, context=f"{_KEY_CONTEXT}:{kid}", settings=settings), public_jwk=json.dumps(jwk))
    session.add(key)
    await session.flush()
    return key


async def rotate_signing_key(session: AsyncSession, settings: Settings) -> SigningKey:
    """New tokens are signed with a new key; the old one stays in the JWKS until its tokens expire."""
    await session.execute(update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=datetime.now(timezone.utc)))
    _cache.clear()
    return await create_signing_key(session, settings)


async def active_key(session: AsyncSession, settings: Settings) -> tuple[str, Ed25519PrivateKey]:
    cached = _cache.get("active")
    if cached and time.monotonic() - cached[0] < _CACHE_SECONDS:
        return cached[1], cached[2]
    row = (await session.execute(
        select(SigningKey).where(SigningKey.retired_at.is_(None)).order_by(SigningKey.created_at.desc()).limit(1)
    )).scalar_one_or_none()
    if row is None:
        row = await create_signing_key(session, settings)
    pem = unseal(row.private_key_sealed, context=f"{_KEY_CONTEXT}:{row.kid}", settings=settings)
    private = serialization.load_pem_private_key(pem, password=None)
    _cache["active"] = (time.monotonic(), row.kid, private)
    return row.kid, private


async def jwks(session: AsyncSession, settings: Settings) -> dict:
    # Retired keys remain published for the lifetime of the longest token they may have signed
    # (access tokens and MFA challenges), plus a margin for clock skew.
    horizon = datetime.now(timezone.utc) - timedelta(seconds=settings.access_token_ttl_seconds + 300)
    rows = (await session.execute(
        select(SigningKey).where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > horizon))
        .order_by(SigningKey.created_at.desc())
    )).scalars()
    return {"keys": [json.loads(r.public_jwk) for r in rows]}


async def sign(session: AsyncSession, settings: Settings, claims: dict, *, ttl: int, audience: str) -> str:
    kid, private = await active_key(session, settings)
    now = int(time.time())
    payload = {"iss": settings.jwt_issuer, "aud": audience, "iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, private, algorithm="EdDSA", headers={"kid": kid})

