"""Who belongs to which organization with which role, as a projection of auth's membership events.

Services that decide by role (expense approvals, notification audiences) keep this table in their
own schema, filled by their event consumer, so none of them reads auth's tables. Applying an event
twice, or an older event after a newer one, leaves the same row: each row remembers the time of
the event that last wrote it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Column, DateTime, MetaData, String, Table, select
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import Event

MEMBERSHIP_EVENTS = frozenset({"auth.member_joined", "auth.member_role_changed", "auth.member_removed"})


def members_table(metadata: MetaData) -> Table:
    return Table(
        "members", metadata,
        Column("organization_id", UUID(as_uuid=True), primary_key=True),
        Column("user_id", UUID(as_uuid=True), primary_key=True),
        Column("role", String(40)),  # NULL: removed (kept so a late `joined` cannot resurrect it)
        Column("as_of", DateTime(timezone=True), nullable=False),
    )


async def apply_membership_event(session: AsyncSession, members: Table, event: Event) -> bool:
    """Project one auth membership event; False for any other event type."""
    if event.type not in MEMBERSHIP_EVENTS or event.organization_id is None:
        return False
    p = event.payload
    role = {"auth.member_joined": p.get("role"), "auth.member_role_changed": p.get("new_role"),
            "auth.member_removed": None}[event.type]
    stmt = insert(members).values(organization_id=event.organization_id, user_id=uuid.UUID(str(p["user_id"])),
                                  role=role, as_of=event.occurred_at)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[members.c.organization_id, members.c.user_id],
        set_={"role": stmt.excluded.role, "as_of": stmt.excluded.as_of},
        where=members.c.as_of <= stmt.excluded.as_of,
    ))
    return True


async def role_of(session: AsyncSession, members: Table, organization_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    return (await session.execute(select(members.c.role).where(
        members.c.organization_id == organization_id, members.c.user_id == user_id))).scalar_one_or_none()


async def members_with_roles(session: AsyncSession, members: Table, organization_id: uuid.UUID,
                             roles: set[str] | frozenset[str]) -> list[uuid.UUID]:
    rows = await session.execute(select(members.c.user_id).where(
        members.c.organization_id == organization_id, members.c.role.in_(sorted(roles))))
    return [r[0] for r in rows]
