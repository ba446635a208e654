"""Per-request DataLoaders: every entity reference and list field is one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.auth import service


def users(ctx: RequestContext, visible_to: uuid.UUID | None) -> DataLoader:
    async def batch(ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.users_by_ids(session, ids, visible_to=visible_to)
        return [found.get(i) for i in ids]

    return ctx.loader(f"users:{visible_to}", lambda: DataLoader(batch))


def organizations(ctx: RequestContext) -> DataLoader:
    async def batch(ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.organizations_by_ids(session, ids)
        return [found.get(i) for i in ids]

    return ctx.loader("organizations", lambda: DataLoader(batch))


def memberships(ctx: RequestContext) -> DataLoader:
    async def batch(user_ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.memberships_of_users(session, user_ids)
        return [found[u] for u in user_ids]

    return ctx.loader("memberships", lambda: DataLoader(batch))
