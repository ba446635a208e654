"""Per-request DataLoaders: every entity reference and list field is one query per batch."""

from __future__ import annotations

import uuid

from aiodataloader import DataLoader

from shared.context import RequestContext
from subgraphs.auth import service


def users(ctx: RequestContext, visible_to: uuid.UUID | None) -> DataLoader:
    return ctx.batch_loader(f"users:{visible_to}", lambda s, ids: service.users_by_ids(s, ids, visible_to=visible_to))


def organizations(ctx: RequestContext) -> DataLoader:
    return ctx.batch_loader("organizations", service.organizations_by_ids)


def memberships(ctx: RequestContext) -> DataLoader:
    return ctx.batch_loader("memberships", service.memberships_of_users, default=[])
