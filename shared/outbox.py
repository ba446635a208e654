"""Transactional outbox: an event is a row written in the same transaction as the change it
describes, so a change is never committed without its event nor an event published for a change
that rolled back. The relay (workers/relay.py) later moves rows to Redis and marks them delivered.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text, func, insert, select, text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import Event, EventPayload, make_event
from shared.telemetry import current_traceparent

OUTBOX_CHANNEL = "outbox_wakeup"  # Postgres NOTIFY channel; payload = schema name


def outbox_table(metadata: MetaData) -> Table:
    """The outbox of one service, in that service's own schema."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),  # commit order ≈ delivery order
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("type", String(120), nullable=False),
        Column("version", Integer, nullable=False),
        Column("organization_id", UUID(as_uuid=True)),
        Column("actor_id", UUID(as_uuid=True)),
        Column("aggregate_id", String(120)),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("delivered_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        # W3C traceparent of the request that wrote the row (only while tracing is on): the relay
        # hands it to the job the event asks for, so the worker's spans join the request's trace.
        Column("traceparent", Text),
        Index("ix_outbox_undelivered", "id", postgresql_where=text("delivered_at IS NULL")),
    )


async def emit(
    session: AsyncSession,
    outbox: Table,
    payload: EventPayload,
    *,
    organization_id=None,
    actor_id=None,
    aggregate_id: str | None = None,
) -> Event:
    """Append an event to the outbox inside the caller's transaction."""
    ev = make_event(payload, organization_id=organization_id, actor_id=actor_id, aggregate_id=aggregate_id)
    traceparent = current_traceparent()  # None (and no column written) while tracing is off
    row = insert(outbox).values(
        event_id=ev.id, type=ev.type, version=ev.version, organization_id=ev.organization_id,
        actor_id=ev.actor_id, aggregate_id=ev.aggregate_id, occurred_at=ev.occurred_at,
        payload=ev.payload, **({"traceparent": traceparent} if traceparent else {}),
    ).returning(outbox.c.id).cte("appended")
    # The row and the relay's wake-up in one round trip. NOTIFY is transactional: the relay is
    # woken only if and when this transaction commits.
    await session.execute(select(func.pg_notify(OUTBOX_CHANNEL, outbox.schema or "")).select_from(row))
    return ev
