"""The notification subgraph's ASGI app (port 4004): GraphQL over HTTP and WebSocket, health."""

from __future__ import annotations

from collections.abc import Callable

from shared.config import Settings
from shared.graphql import create_service_app
from shared.runtime import Runtime, build_runtime
from subgraphs.notification.schema import schema


def create_app(settings: Settings | None = None, *, runtime_factory: Callable[[str, Settings], Runtime] = build_runtime):
    # `runtime_factory` lets tests verify tokens against the auth keys directly instead of HTTP.
    return create_service_app("notification", schema, settings=settings, runtime_factory=runtime_factory)


app = create_app()
