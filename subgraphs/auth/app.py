"""The auth subgraph's ASGI app: GraphQL, health, and the JWKS other services verify with."""

from __future__ import annotations

import logging
import os

from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.config import Settings
from shared.graphql import create_service_app
from shared.runtime import Runtime, build_runtime
from shared.tokens import TokenVerifier
from subgraphs.auth import internal, keys, service
from subgraphs.auth.schema import schema

log = logging.getLogger(__name__)


def auth_runtime(name: str, settings: Settings) -> Runtime:
    rt = build_runtime(name, settings)

    # The auth service verifies its own tokens from its own table, not over HTTP to itself.
    async def source() -> dict:
        async with rt.sessionmaker() as session:
            return await keys.jwks(session, settings)

    rt.verifier = TokenVerifier(source, issuer=settings.jwt_issuer, audience=settings.jwt_audience, min_refresh_interval=0.5)
    return rt


async def jwks_endpoint(request):
    rt: Runtime = request.app.state.runtime
    async with rt.sessionmaker() as session:
        body = await keys.jwks(session, rt.settings)
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})


async def on_startup(rt: Runtime) -> None:
    async with rt.sessionmaker() as session, session.begin():
        await keys.active_key(session, rt.settings)  # first start creates the signing key
    demo_email = os.environ.get("DEMO_USER_EMAIL")
    if demo_email:
        password = os.environ.get("DEMO_USER_PASSWORD", "")
        if await service.ensure_demo(rt, email=demo_email, password=password):
            log.info("demo organization and user created", extra={"email": demo_email})


def create_app(settings: Settings | None = None):
    return create_service_app(
        "auth", schema, routes=[Route("/.well-known/jwks.json", jwks_endpoint), *internal.routes], settings=settings,
        runtime_factory=auth_runtime, on_startup=on_startup,
    )


app = create_app()
