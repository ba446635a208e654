"""Per-request DataLoaders for the `User` entity's notification fields: one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.notification import service


def unread_counts(ctx: RequestContext, organization_id: uuid.UUID) -> DataLoader:
    return ctx.batch_loader(f"unread_counts:{organization_id}",
                            lambda s, ids: service.unread_counts(s, organization_id, ids), default=0)


def preferences(ctx: RequestContext, organization_id: uuid.UUID) -> DataLoader:
    return ctx.batch_loader(f"preferences:{organization_id}",
                            lambda s, ids: service.effective_preferences(s, organization_id, ids), default=[])
