"""Per-request DataLoaders: entity references and list fields are one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.invoice import service


def invoices(ctx: RequestContext, org: uuid.UUID) -> DataLoader:
    return ctx.batch_loader(f"invoices:{org}", lambda s, ids: service.invoices_by_ids(s, org, ids))


def customers(ctx: RequestContext, org: uuid.UUID) -> DataLoader:
    return ctx.batch_loader(f"customers:{org}", lambda s, ids: service.customers_by_ids(s, org, ids))


def history(ctx: RequestContext) -> DataLoader:
    return ctx.batch_loader("history", service.history, default=[])
