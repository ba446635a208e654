"""Per-request DataLoaders: entity references and list fields are one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.expense import models as m
from subgraphs.expense import service


async def _expenses_by_ids(session, org: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, m.Expense]:
    from sqlalchemy import select

    rows = await session.scalars(select(m.Expense).where(m.Expense.organization_id == org, m.Expense.id.in_(ids)))
    return {e.id: e for e in rows}


def expenses(ctx: RequestContext, org: uuid.UUID) -> DataLoader:
    return ctx.batch_loader(f"expenses:{org}", lambda s, ids: _expenses_by_ids(s, org, ids))


def categories(ctx: RequestContext, org: uuid.UUID) -> DataLoader:
    return ctx.batch_loader(f"categories:{org}", lambda s, ids: service.categories_by_ids(s, org, ids))


def history(ctx: RequestContext) -> DataLoader:
    return ctx.batch_loader("history", service.history, default=[])


def report_expenses(ctx: RequestContext) -> DataLoader:
    return ctx.batch_loader("report_expenses", service.report_expenses, default=[])


def receipts(ctx: RequestContext) -> DataLoader:
    return ctx.batch_loader("receipts", service.receipts, default=[])


def approvals(ctx: RequestContext) -> DataLoader:
    """Keyed by expense row (its round matters); answers who approved in the current round."""

    async def batch(rows: list[m.Expense]) -> list[list[uuid.UUID]]:
        async with ctx.runtime.sessionmaker() as session:
            found = await service.approvals_this_round(session, rows)
        return [found.get(r.id, []) for r in rows]

    return ctx.loader("approvals", lambda: DataLoader(batch, get_cache_key=lambda r: (r.id, r.round)))
