"""Access-token verification, done by every subgraph itself (never trusting the gateway alone).

Keys come from the auth service's JWKS, cached and refreshed when a token names an unknown `kid`
(that is how key rotation reaches other services without a restart). Only asymmetric algorithms
are accepted; `alg: none` and HMAC tokens are refused before any key lookup.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import jwt
from jwt import PyJWK

ALLOWED_ALGORITHMS = ["EdDSA", "RS256"]
REQUIRED_CLAIMS = ["sub", "org", "perms", "iss", "aud", "exp", "iat", "jti"]


class InvalidTokenError(Exception):
    """The token is missing, malformed, forged, expired or not meant for us."""


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    organization_id: uuid.UUID
    permissions: frozenset[str]
    token_id: str
    api_key_id: uuid.UUID | None = None
    authz_version: int = 0  # the membership version the token was issued at (`ver`)
    claims: dict = field(default_factory=dict, compare=False, repr=False)

    def has(self, permission: str) -> bool:
        return permission in self.permissions


JwksSource = Callable[[], Awaitable[dict]]


def http_jwks_source(url: str, *, timeout: float = 5.0) -> JwksSource:
    async def fetch() -> dict:
        async with httpx.AsyncClient(timeout=timeout) as client:
            resp = await client.get(url)
            resp.raise_for_status()
            return resp.json()

    return fetch


class TokenVerifier:
    def __init__(self, source: JwksSource, *, issuer: str, audience: str, min_refresh_interval: float = 5.0):
        self._source = source
        self._issuer = issuer
        self._audience = audience
        self._keys: dict[str, PyJWK] = {}
        self._last_refresh = 0.0
        self._min_refresh_interval = min_refresh_interval
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:
            # An attacker sending random kids must not turn us into a JWKS hammer: at most one
            # fetch per interval (the first fetch, with no keys yet, always goes).
            if self._keys and time.monotonic() - self._last_refresh < self._min_refresh_interval:
                return
            jwks = await self._source()
            keys = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("kid") and jwk.get("use", "sig") == "sig":
                    try:
                        keys[jwk["kid"]] = PyJWK(jwk)
                    except jwt.PyJWTError:
                        continue
            self._keys, self._last_refresh = keys, time.monotonic()

    async def key_for(self, kid: str) -> PyJWK:
        if kid not in self._keys:
            await self._refresh()  # an unknown kid is how a rotated key first shows up
        try:
            return self._keys[kid]
        except KeyError:
            raise InvalidTokenError("unknown signing key") from None

    async def verify(self, token: str, *, audience: str | None = None) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("malformed token") from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise InvalidTokenError("algorithm not allowed")
        kid = header.get("kid")
        if not kid:
            raise InvalidTokenError("token has no kid")
        key = await self.key_for(kid)
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm_name] if key.algorithm_name in ALLOWED_ALGORITHMS else ALLOWED_ALGORITHMS,
                audience=audience or self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS if audience is None else ["sub", "exp", "iat", "aud", "iss"]},
                leeway=5,
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc

    async def principal(self, token: str) -> Principal:
        claims = await self.verify(token)
        try:
            return Principal(
                user_id=uuid.UUID(claims["sub"]),
                organization_id=uuid.UUID(claims["org"]),
                permissions=frozenset(claims["perms"]),
                token_id=claims["jti"],
                api_key_id=uuid.UUID(claims["akid"]) if claims.get("akid") else None,
                authz_version=int(claims.get("ver", 0)),
                claims=claims,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidTokenError("malformed claims") from exc


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidTokenError("Authorization must be 'Bearer <token>'")
    return value.strip()
