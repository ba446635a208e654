"""The expense subgraph's ASGI app (port 4003): GraphQL and health."""

from __future__ import annotations

from collections.abc import Callable

from shared.config import Settings
from shared.graphql import create_service_app
from shared.runtime import Runtime, build_runtime
from subgraphs.expense.schema import schema


def create_app(settings: Settings | None = None, *, runtime_factory: Callable[[str, Settings], Runtime] = build_runtime):
    return create_service_app("expense", schema, settings=settings, runtime_factory=runtime_factory)


app = create_app()
