"""The event relay: moves committed outbox rows of every service to Redis.

For each service schema that has an outbox, undelivered rows are read in id order, appended to
the `events` stream (durable, consumer groups) and published on the organization's live channel
(subscriptions), and only then marked delivered. A crash between Redis and the mark re-delivers
the rows on the next pass; consumers deduplicate by event id, so at-least-once is enough.

One relay at a time per schema (a transaction-scoped advisory lock): two relays racing over the
same rows could interleave XADDs and break the per-aggregate order consumers rely on.

Wake-ups: Postgres NOTIFY on `outbox_wakeup` (sent by `shared.outbox.emit` when the producing
transaction commits) makes delivery near-instant; a periodic sweep covers missed notifications
(listener reconnecting, rows left behind by a Redis outage).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
from sqlalchemy import MetaData, Table, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import to_plain_url
from shared.bus import EVENTS_STREAM, STREAM_MAXLEN, live_channels, stream_fields
from shared.events import Event
from shared.registry import outbox_schemas
from shared.outbox import OUTBOX_CHANNEL, outbox_table
from shared.runtime import Runtime
from workers.background import background_loop
from workers.event_jobs import enqueue_event_jobs

log = logging.getLogger(__name__)

BATCH_SIZE = 200
SWEEP_INTERVAL = 2.0  # seconds between safety-net passes when no NOTIFY arrives
REDIS_TIMEOUT = 10.0
# Advisory-lock namespace ("rlay"); the second key is per schema so schemas relay in parallel.
_LOCK_NAMESPACE = 0x726C6179

# Test seam: called after Redis acknowledged a batch and before the rows are marked delivered, to
# simulate a relay dying in between. Never set in production code.
AfterPublish = Callable[[str, list[Event]], Awaitable[None]]

_tables: dict[str, Table] = {}


def _outbox(schema: str) -> Table:
    # Table objects only describe the shape; every service's outbox has the same one.
    if schema not in _tables:
        _tables[schema] = outbox_table(MetaData(schema=schema))
    return _tables[schema]


async def _schemas_with_outbox(session: AsyncSession) -> list[str]:
    rows = await session.execute(text("SELECT s FROM unnest(CAST(:schemas AS text[])) AS s "
                                      "WHERE to_regclass(s || '.outbox') IS NOT NULL"), {"schemas": list(outbox_schemas())})
    return [r[0] for r in rows]


def _row_event(row) -> Event:
    return Event(id=row.event_id, type=row.type, version=row.version, organization_id=row.organization_id,
                 actor_id=row.actor_id, aggregate_id=row.aggregate_id, occurred_at=row.occurred_at, payload=row.payload,
                 traceparent=row.traceparent)


async def relay_schema(rt: Runtime, schema: str, *, after_publish: AfterPublish | None = None,
                       batch_size: int = BATCH_SIZE) -> int:
    """Deliver one batch of one schema's outbox. Returns rows delivered (0 if another relay holds
    the schema or nothing is pending). Raises nothing for Redis failures: they are recorded on
    the rows, which stay undelivered for the next pass."""
    ob = _outbox(schema)
    async with rt.sessionmaker() as session, session.begin():
        got = (await session.execute(
            select(func.pg_try_advisory_xact_lock(_LOCK_NAMESPACE, func.hashtext(schema)))
        )).scalar()
        if not got:
            return 0
        rows = (await session.execute(
            select(ob).where(ob.c.delivered_at.is_(None)).order_by(ob.c.id).limit(batch_size)
        )).all()
        if not rows:
            return 0
        events = [_row_event(r) for r in rows]
        ids = [r.id for r in rows]
        try:
            # One round trip; non-transactional pipeline because a MULTI would not make a partial
            # failure any safer (unmarked rows are re-sent and deduplicated anyway).
            async with rt.redis.pipeline(transaction=False) as pipe:
                for ev in events:
                    pipe.xadd(EVENTS_STREAM, stream_fields(ev), maxlen=STREAM_MAXLEN, approximate=True)
                    for channel in live_channels(ev):  # dashboards; authority changes (shared.bus)
                        pipe.publish(channel, json.dumps(ev.model_dump(mode="json")))
                # Bounded: a hung Redis must not hold the schema's lock (and its rows) forever.
                await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            # Jobs the events ask for (stamping, cancelling): queued before the rows count as
            # delivered, so a request's job is never lost with Redis (workers/event_jobs.py).
            await asyncio.wait_for(enqueue_event_jobs(rt.redis, events), REDIS_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any Redis failure leaves rows pending
            log.warning("relay: redis unavailable for %s: %r", schema, exc)
            await session.execute(
                update(ob).where(ob.c.id.in_(bindparam("ids", expanding=True)))
                .values(attempts=ob.c.attempts + 1, last_error=(str(exc) or type(exc).__name__)[:1000]),
                {"ids": ids},
            )
            return 0
        if after_publish is not None:
            await after_publish(schema, events)
        await session.execute(
            update(ob).where(ob.c.id.in_(bindparam("ids", expanding=True)))
            .values(delivered_at=func.now(), attempts=ob.c.attempts + 1, last_error=None),
            {"ids": ids},
        )
        return len(rows)


async def relay_once(rt: Runtime, *, after_publish: AfterPublish | None = None,
                     schemas: Iterable[str] | None = None) -> int:
    """Drain every outbox (or only `schemas`) batch after batch once; returns how many rows were
    delivered."""
    if schemas is None:
        async with rt.sessionmaker() as session:
            schemas = await _schemas_with_outbox(session)
    total = 0
    for schema in schemas:
        while True:
            n = await relay_schema(rt, schema, after_publish=after_publish)
            total += n
            if n < BATCH_SIZE:
                break
    return total


# --- arq ----------------------------------------------------------------------------------------

async def relay_outbox(ctx) -> int:
    """arq job: one relay pass (the long-running loop below normally makes it unnecessary)."""
    return await relay_once(ctx["runtime"])


async def relay_loop(rt: Runtime, *, sweep_interval: float = SWEEP_INTERVAL) -> None:
    """Relay on every NOTIFY, and at least every `sweep_interval` seconds. Runs until cancelled."""
    wake = asyncio.Event()
    conn: asyncpg.Connection | None = None
    # Schemas named by NOTIFY since the last pass: only those are relayed on a wake-up (each
    # commit with an event wakes every worker's relay; a pass over every schema cost one
    # transaction per schema). The periodic pass still covers them all.
    notified: set[str] = set()
    swept_at = 0.0

    def on_notify(_conn, _pid, _channel, payload) -> None:
        if payload in outbox_schemas():
            notified.add(payload)
        wake.set()

    try:
        while True:
            if conn is None or conn.is_closed():
                try:
                    conn = await asyncpg.connect(to_plain_url(rt.settings.database_url))
                    await conn.add_listener(OUTBOX_CHANNEL, on_notify)
                except Exception as exc:  # noqa: BLE001 - the sweep keeps working without LISTEN
                    log.warning("relay: cannot LISTEN on %s: %s", OUTBOX_CHANNEL, exc)
                    conn = None
            wake.clear()
            now = asyncio.get_running_loop().time()
            everything = now - swept_at >= sweep_interval or not notified
            schemas = None if everything else set(notified)
            notified.clear()
            try:
                await relay_once(rt, schemas=schemas)
                if everything:
                    swept_at = now
            except Exception:  # noqa: BLE001 - database hiccup: try again on the next tick
                log.exception("relay pass failed")
            try:
                await asyncio.wait_for(wake.wait(), timeout=sweep_interval)
            except TimeoutError:
                pass
    finally:
        if conn is not None and not conn.is_closed():
            await conn.close()


_start, _stop = background_loop("outbox-relay", lambda ctx: relay_loop(ctx["runtime"]))


FUNCTIONS = [relay_outbox]
STARTUP = [_start]
SHUTDOWN = [_stop]
