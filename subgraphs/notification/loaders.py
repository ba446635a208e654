"""Per-request DataLoaders for the `User` entity's notification fields: one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.notification import service


def unread_counts(ctx: RequestContext, organization_id: uuid.UUID) -> DataLoader:
    async def batch(user_ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.unread_counts(session, organization_id, user_ids)
        return [found[u] for u in user_ids]

    return ctx.loader(f"unread_counts:{organization_id}", lambda: DataLoader(batch))


def preferences(ctx: RequestContext, organization_id: uuid.UUID) -> DataLoader:
    async def batch(user_ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.effective_preferences(session, organization_id, user_ids)
        return [found[u] for u in user_ids]

    return ctx.loader(f"preferences:{organization_id}", lambda: DataLoader(batch))
