"""Per-request DataLoaders: entity references and list fields are one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.invoice import service


def invoices(ctx: RequestContext, org: uuid.UUID) -> DataLoader:
    async def batch(ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.invoices_by_ids(session, org, ids)
        return [found.get(i) for i in ids]

    return ctx.loader(f"invoices:{org}", lambda: DataLoader(batch))


def customers(ctx: RequestContext, org: uuid.UUID) -> DataLoader:
    async def batch(ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.customers_by_ids(session, org, ids)
        return [found.get(i) for i in ids]

    return ctx.loader(f"customers:{org}", lambda: DataLoader(batch))


def history(ctx: RequestContext) -> DataLoader:
    async def batch(ids: list[uuid.UUID]):
        async with ctx.runtime.sessionmaker() as session:
            found = await service.history(session, ids)
        return [found[i] for i in ids]

    return ctx.loader("history", lambda: DataLoader(batch))
