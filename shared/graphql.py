"""Building a subgraph's Strawberry schema and ASGI app the same way in every service."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import strawberry
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.extensions import (
    AddValidationRules, MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, ParserCache,
    QueryDepthLimiter, ValidationCache,
)
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from graphql.validation import NoSchemaIntrospectionCustomRule

from shared.config import Settings, get_settings
from shared.context import RequestContext
from shared.errors import is_expected_error
from shared.health import health_routes
from shared.logs import RequestIdMiddleware, configure_logging
from shared.runtime import Runtime, build_runtime

log = logging.getLogger(__name__)


def _should_mask(error: GraphQLError) -> bool:
    if is_expected_error(error):
        return False
    log.error("unexpected error in resolver", exc_info=error.original_error)
    return True


def schema_extensions() -> list:
    """Hardening and per-request overhead cuts shared by every subgraph.

    Read from the environment directly (not `Settings`) so that exporting the SDL needs no
    database URL. Parsing and validation results are cached: dashboards repeat the same documents.
    """
    max_depth = int(os.environ.get("GRAPHQL_MAX_DEPTH", "12"))
    # Factories, not instances: Strawberry builds fresh extensions per request. The caches are
    # module-level functools caches inside these extensions, so they still persist across requests.
    extensions: list = [
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
        lambda: QueryDepthLimiter(max_depth=max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=30),
        lambda: MaxTokensLimiter(max_token_count=5000),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Error interno del servidor."),
    ]
    introspection = os.environ.get("GRAPHQL_INTROSPECTION")
    production = os.environ.get("APP_ENV") == "production"
    if (introspection or "").lower() in ("0", "false") or (introspection is None and production):
        extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return extensions


def build_schema(*, query: type, mutation: type | None = None, subscription: type | None = None,
                 types: Sequence[type] = ()) -> strawberry.federation.Schema:
    return strawberry.federation.Schema(
        query=query, mutation=mutation, subscription=subscription, types=list(types),
        extensions=schema_extensions(),
    )


class ServiceGraphQL(GraphQL):
    def __init__(self, schema, runtime_getter: Callable[[], Runtime]):
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            keep_alive=True,
            keep_alive_interval=15,
        )
        self._runtime_getter = runtime_getter

    async def get_context(self, request, response) -> RequestContext:
        return RequestContext(request=request, response=response, runtime=self._runtime_getter())


def create_service_app(
    service: str,
    schema,
    *,
    routes: Sequence[BaseRoute] = (),
    settings: Settings | None = None,
    runtime_factory: Callable[[str, Settings], Runtime] = build_runtime,
    on_startup: Callable[[Runtime], Awaitable[None]] | None = None,
    on_shutdown: Callable[[Runtime], Awaitable[None]] | None = None,
) -> Starlette:
    """A subgraph's ASGI app: `/graphql` (HTTP + WebSocket), health checks, its own routes."""
    holder: dict[str, Runtime] = {}

    def runtime() -> Runtime:
        return holder["runtime"]

    @asynccontextmanager
    async def lifespan(app):
        cfg = settings or get_settings()
        if cfg.app_env != "test":  # under pytest, its own log capture stays in charge
            configure_logging(service, cfg.log_level)
        rt = runtime_factory(service, cfg)
        holder["runtime"] = rt
        app.state.runtime = rt
        if on_startup:
            await on_startup(rt)
        log.info("service started")
        try:
            yield
        finally:
            if on_shutdown:
                await on_shutdown(rt)
            await rt.close()

    graphql_app = ServiceGraphQL(schema, runtime)
    return Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            *health_routes(runtime),
            *routes,
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
