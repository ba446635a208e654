"""Access-token verification, done by every subgraph itself (never trusting the gateway alone).

Keys come from the auth service's JWKS, cached and refreshed when a token names an unknown `kid`
(that is how key rotation reaches other services without a restart). Only asymmetric algorithms
are accepted; `alg: none` and HMAC tokens are refused before any key lookup.

An access token is verified in full (signature, issuer, audience, claims) the first time this
process sees it; a client then sends the same token with every request for its whole lifetime, and
PyJWT's decode was a tenth of a `stampInvoice`'s CPU in the invoice subgraph. The token's exact
text is remembered with its claims, and each later use checks only what can change: that it has
not expired (`exp`, same leeway) and that the key that verified it is still the one the JWKS gives
for its `kid` (a refresh that drops or replaces the key forgets the token). Nothing the gateway
says is trusted: a token this process has not verified itself is never in the cache. Tokens for
another audience (MFA challenges) are always verified in full.
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
LEEWAY_SECONDS = 5
VERIFIED_MAX_ENTRIES = 4096  # tokens remembered per process (the oldest forgotten first)


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


@dataclass
class _Verified:
    """An access token this process verified: its claims, the key that verified it, its expiry."""
    claims: dict
    kid: str
    key: PyJWK
    expires_at: float  # exp + leeway: from then on, refused (PyJWT: exp <= now - leeway)
    principal: Principal | None = None


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
        self._verified: dict[str, _Verified] = {}

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

    def _remembered(self, token: str) -> _Verified | None:
        hit = self._verified.get(token)
        if hit is None:
            return None
        if time.time() >= hit.expires_at or self._keys.get(hit.kid) is not hit.key:
            del self._verified[token]  # expired, or its key is gone: verified in full again (and refused)
            return None
        return hit

    def _remember(self, token: str, claims: dict, kid: str, key: PyJWK) -> _Verified | None:
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            return None
        while len(self._verified) >= VERIFIED_MAX_ENTRIES:
            del self._verified[next(iter(self._verified))]
        entry = self._verified[token] = _Verified(claims, kid, key, exp + LEEWAY_SECONDS)
        return entry

    async def verify(self, token: str, *, audience: str | None = None) -> dict:
        if audience is None and (hit := self._remembered(token)) is not None:
            return dict(hit.claims)
        claims, kid, key = await self._decode(token, audience)
        if audience is None:
            self._remember(token, claims, kid, key)
        return dict(claims)

    async def _decode(self, token: str, audience: str | None) -> tuple[dict, str, PyJWK]:
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
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm_name] if key.algorithm_name in ALLOWED_ALGORITHMS else ALLOWED_ALGORITHMS,
                audience=audience or self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS if audience is None else ["sub", "exp", "iat", "aud", "iss"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        return claims, kid, key

    async def principal(self, token: str) -> Principal:
        hit = self._remembered(token)
        if hit is not None and hit.principal is not None:
            return hit.principal
        claims = await self.verify(token)
        try:
            principal = Principal(
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
        if (entry := self._verified.get(token)) is not None:
            entry.principal = principal
        return principal


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidTokenError("Authorization must be 'Bearer <token>'")
    return value.strip()
