"""Whether an access token still reflects its member's current role.

Access tokens live `ACCESS_TOKEN_TTL_SECONDS`; a role change or a removal must not wait for them to
expire. The auth service stamps the membership's `authz_version` into every token (`ver` claim)
and, when it changes a role or removes a member, raises the minimum accepted version in Redis
(`authz:min:{organization}:{user}`) BEFORE its transaction commits, for one token lifetime. Every
subgraph refuses a token whose `ver` is below that minimum (`RequestContext.optional_principal`).

A rolled-back change can only leave the minimum too high (tokens refused, a refresh fixes it: the
auth service issues tokens with max(database, Redis) and writes that back), never too low.

Lookups are cached per process for `AUTHZ_CACHE_SECONDS` (default 1 s; 0 = ask Redis on every
request): that is the longest a role change or removal can lag in any subgraph.
"""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

_MAX_ENTRIES = 50_000  # plenty for one process; cleared wholesale past it


def _key(organization_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"authz:min:{organization_id}:{user_id}"


class MembershipVersions:
    def __init__(self, redis: Redis, *, cache_seconds: float, clock=time.monotonic):
        self.redis, self.cache_seconds, self._clock = redis, cache_seconds, clock
        self._cache: dict[tuple[uuid.UUID, uuid.UUID], tuple[float, int]] = {}

    async def minimum(self, organization_id: uuid.UUID, user_id: uuid.UUID, *, cached: bool = True) -> int:
        """The lowest token version still accepted for this membership (0: any)."""
        now = self._clock()
        hit = self._cache.get((organization_id, user_id)) if cached else None
        if hit and hit[0] > now:
            return hit[1]
        raw = await self.redis.get(_key(organization_id, user_id))
        value = int(raw) if raw else 0
        if self.cache_seconds > 0:
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[(organization_id, user_id)] = (now + self.cache_seconds, value)
        return value

    async def is_current(self, organization_id: uuid.UUID, user_id: uuid.UUID, version: int) -> bool:
        return version >= await self.minimum(organization_id, user_id)

    async def raise_minimum(self, organization_id: uuid.UUID, user_id: uuid.UUID, version: int, *, keep_seconds: int) -> None:
        """Refuse tokens below `version` from now on (auth service only, before its commit)."""
        await self.redis.set(_key(organization_id, user_id), version, ex=keep_seconds)
        self._cache.pop((organization_id, user_id), None)
