"""What a running service holds for its whole life: settings, database, Redis, token verifier."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.authz import MembershipVersions
from shared.config import Settings
from shared.db import make_engine, make_sessionmaker
from shared.pubsub import LiveHub
from shared.tokens import TokenVerifier, http_jwks_source


@dataclass
class Runtime:
    service: str
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    verifier: TokenVerifier
    authz: MembershipVersions
    live: LiveHub  # GraphQL subscriptions: one pub/sub connection for the process, started on first use

    async def close(self) -> None:
        await self.live.close()
        await self.redis.aclose()
        await self.engine.dispose()


def build_runtime(service: str, settings: Settings, *, verifier: TokenVerifier | None = None) -> Runtime:
    engine = make_engine(settings.database_url)
    redis = Redis.from_url(settings.redis_url, decode_responses=False)
    return Runtime(
        service=service,
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        redis=redis,
        verifier=verifier or TokenVerifier(
            http_jwks_source(settings.auth_jwks_url),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        ),
        authz=MembershipVersions(redis, cache_seconds=settings.authz_cache_seconds),
        live=LiveHub(redis, max_per_user=settings.subscriptions_max_per_user,
                     max_per_organization=settings.subscriptions_max_per_organization),
    )
