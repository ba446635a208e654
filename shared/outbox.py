"""Transactional outbox: an event is a row written in the same transaction as the change it
describes, so a change is never committed without its event nor an event published for a change
that rolled back. The relay (workers/relay.py) later moves rows to Redis and marks them delivered.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from sqlalchemy import (
    BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, Text, bindparam, cast, column, func,
    insert, select, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.sql.expression import CTE
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
    """Append an event to the outbox inside the caller's transaction (`emit_many` of one)."""
    [ev] = await emit_many(session, outbox, [(payload, organization_id, actor_id, aggregate_id)])
    return ev


# One event to append with `emit_many`: (payload, organization_id, actor_id, aggregate_id).
EventSpec = tuple[EventPayload, object, object, "str | None"]

# The columns `appending` fills, each from one array parameter `outbox_<name>` (payload as text,
# cast to jsonb in SQL: no jsonb[] codec needed), and the one traceparent of the request.
_ARRAY_COLUMNS = (("event_id", UUID(as_uuid=True)), ("type", Text()), ("version", Integer()),
                  ("organization_id", UUID(as_uuid=True)), ("actor_id", UUID(as_uuid=True)),
                  ("aggregate_id", Text()), ("occurred_at", DateTime(timezone=True)), ("payload", Text()))


@functools.cache
def appending(outbox: Table) -> CTE:
    """`INSERT INTO outbox ... SELECT ... FROM unnest(<one array per column>) RETURNING id` as a
    CTE named "appended", built once per outbox: the same SQL text whatever the number of events
    (bound by `event_rows`), so it is compiled once and can join another statement's CTEs (one
    round trip for a change and its events)."""
    rows = func.unnest(*(bindparam(f"outbox_{name}", type_=ARRAY(type_)) for name, type_ in _ARRAY_COLUMNS)) \
        .table_valued(*(column(name, type_) for name, type_ in _ARRAY_COLUMNS), with_ordinality="n") \
        .render_derived(name="e")
    names = [name for name, _ in _ARRAY_COLUMNS]
    return insert(outbox).from_select(
        [*names, "traceparent"],
        select(*(rows.c[name] for name in names if name != "payload"), cast(rows.c.payload, JSONB),
               bindparam("outbox_traceparent", type_=Text()))
        .select_from(rows).order_by(rows.c.n),  # ids (the relay's delivery order) in the order given
    ).returning(outbox.c.id).cte("appended")


# `traceparent` left out: the current one (the request's or job's span).
CURRENT = object()


def event_rows(events: Sequence[EventSpec], traceparent: str | None | object = CURRENT) -> tuple[list[Event], dict]:
    """The events `appending` writes and its parameters."""
    made = [make_event(payload, organization_id=org, actor_id=actor, aggregate_id=aggregate)
            for payload, org, actor, aggregate in events]
    params = {f"outbox_{name}": [getattr(ev, name) for ev in made] for name, _ in _ARRAY_COLUMNS[1:-1]}
    params["outbox_event_id"] = [ev.id for ev in made]
    params["outbox_payload"] = [json.dumps(ev.payload) for ev in made]
    # None while tracing is off
    params["outbox_traceparent"] = current_traceparent() if traceparent is CURRENT else traceparent
    return made, params


def wake_up(outbox: Table):
    """The relay's wake-up (transactional NOTIFY: sent only if and when the transaction commits)."""
    return func.pg_notify(OUTBOX_CHANNEL, outbox.schema or "")


@functools.cache
def _emit_many_statement(outbox: Table):
    return select(wake_up(outbox)).add_cte(appending(outbox))


async def emit_many(session: AsyncSession, outbox: Table, events: Sequence[EventSpec], *,
                    traceparent: str | None | object = CURRENT) -> list[Event]:
    """Append several events to the outbox inside the caller's transaction: one statement, the same
    whatever their number, and one wake-up for the relay. `events` holds (payload,
    organization_id, actor_id, aggregate_id) tuples; `traceparent`, the work they belong to when
    it is not the current span's (the stamping worker records several jobs' events at once)."""
    if not events:
        return []
    made, params = event_rows(events, traceparent)
    await session.execute(_emit_many_statement(outbox), params)
    return made
