"""The event relay: moves committed outbox rows of every service to Redis.

For each service schema that has an outbox, undelivered rows are read in id order, appended to
the `events` stream (durable, consumer groups) and published on the organization's live channel
(subscriptions), and only then marked delivered. A crash between Redis and the mark re-delivers
the rows on the next pass; consumers deduplicate by event id, so at-least-once is enough.

One relay at a time per schema (an advisory lock on the schema's key): two relays racing over the
same rows could interleave XADDs and break the per-aggregate order consumers rely on.

The worker's loop (`relay_loop`) leads: it takes the schemas' locks at session level on a
connection of its own and keeps them while that connection lives, so one worker process relays
and the others stand by, trying to take over at each sweep (a leader that dies closes its
connection, and Postgres releases its locks). The leader LISTENs for `outbox_wakeup` (the NOTIFY
`shared.outbox.emit` sends when the producing transaction commits) and relays on its own
connection without a transaction: a read, then a mark, two statements per batch. Standbys
neither listen nor open transactions, so a commit wakes one process, not every worker. A
periodic sweep covers missed notifications (listener reconnecting, rows left behind by a Redis
outage). One-shot passes (`relay_once`: the arq job, tests) take the same key with a
transaction-scoped lock on a pooled connection, and so relay nothing while a leader exists.

The leader also deletes rows delivered more than `OUTBOX_RETENTION_HOURS` ago (a week by
default), so the outbox holds a recent history instead of every event ever; an undelivered row is
never deleted.

Statements are plain SQL built once per schema (on asyncpg: prepared once per connection); the
ORM's statement building and sessions cost more than the relaying itself. Every read is a
statement of its own after the lock was taken: its snapshot then sees what the previous holder
marked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable

import asyncpg
from redis.asyncio import Redis

from shared.config import to_plain_url
from shared.bus import EVENTS_STREAM, STREAM_MAXLEN, live_channels, stream_fields
from shared.events import Event
from shared.registry import outbox_schemas
from shared.outbox import OUTBOX_CHANNEL
from shared.runtime import Runtime
from workers.background import background_loop
from workers.event_jobs import enqueue_event_jobs

log = logging.getLogger(__name__)

BATCH_SIZE = 200
SWEEP_INTERVAL = 2.0  # seconds between safety-net passes (and standbys' takeover attempts)
PURGE_INTERVAL = 600.0  # seconds between the leader's deletions of old delivered rows
PURGE_BATCH = 5000  # rows per DELETE (short statements: producers insert meanwhile)
PURGE_MAX_BATCHES = 20  # per schema per purge; the rest waits for the next one
REDIS_TIMEOUT = 10.0
# Advisory-lock namespace ("rlay"); the second key is per schema so schemas relay in parallel.
_LOCK_NAMESPACE = 0x726C6179
APPLICATION_NAME = "facturacion-relay"  # the leading loop's connection, as pg_stat_activity shows it

# Test seam: called after Redis acknowledged a batch and before the rows are marked delivered, to
# simulate a relay dying in between. Never set in production code.
AfterPublish = Callable[[str, list[Event]], Awaitable[None]]

_COLUMNS = ("id, event_id, type, version, organization_id, actor_id, aggregate_id, occurred_at, "
            "payload::text AS payload, traceparent")


@functools.cache
def _purge_statement(schema: str) -> str:
    """Delete up to $2 rows delivered more than $1 hours ago (never an undelivered one)."""
    table = f'"{schema}".outbox'
    return (f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE delivered_at IS NOT NULL "
            "AND delivered_at < now() - make_interval(hours => $1) ORDER BY id LIMIT $2)")


@functools.cache
def _statements(schema: str) -> tuple[str, str, str]:
    """(read, mark delivered, record failure) for one schema's outbox."""
    table = f'"{schema}".outbox'
    read = f"SELECT {_COLUMNS} FROM {table} WHERE delivered_at IS NULL ORDER BY id LIMIT $1"
    mark = (f"UPDATE {table} SET delivered_at = now(), attempts = attempts + 1, last_error = NULL "
            "WHERE id = ANY($1::bigint[])")
    failed = f"UPDATE {table} SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1::bigint[])"
    return read, mark, failed


# Its own statement, before the read: the read's snapshot must be taken after the lock, or it could
# still see rows the previous holder marked and committed in between (and send them again).
_XACT_LOCK = f"SELECT pg_try_advisory_xact_lock({_LOCK_NAMESPACE}, hashtext($1))"


_EXISTING = ("SELECT s FROM unnest($1::text[]) AS s WHERE to_regclass(quote_ident(s) || '.outbox') IS NOT NULL")
# Session-level: held until released or the connection ends (the leader's process dies).
_LEAD = ("SELECT s FROM unnest($1::text[]) AS s WHERE CASE WHEN to_regclass(quote_ident(s) || '.outbox') IS NULL "
         f"THEN false ELSE pg_try_advisory_lock({_LOCK_NAMESPACE}, hashtext(s)) END")


def _row_event(row) -> Event:
    return Event(id=row["event_id"], type=row["type"], version=row["version"],
                 organization_id=row["organization_id"], actor_id=row["actor_id"],
                 aggregate_id=row["aggregate_id"], occurred_at=row["occurred_at"],
                 payload=json.loads(row["payload"]), traceparent=row["traceparent"])


async def _deliver(conn: asyncpg.Connection, redis: Redis, schema: str, rows: list,
                   after_publish: AfterPublish | None) -> int:
    """Send `rows` to Redis, then mark them delivered (or record the Redis failure on them)."""
    _, mark, failed = _statements(schema)
    events = [_row_event(r) for r in rows]
    ids = [r["id"] for r in rows]
    try:
        # One round trip; non-transactional pipeline because a MULTI would not make a partial
        # failure any safer (unmarked rows are re-sent and deduplicated anyway).
        async with redis.pipeline(transaction=False) as pipe:
            for ev in events:
                pipe.xadd(EVENTS_STREAM, stream_fields(ev), maxlen=STREAM_MAXLEN, approximate=True)
                for channel in live_channels(ev):  # dashboards; authority changes (shared.bus)
                    pipe.publish(channel, json.dumps(ev.model_dump(mode="json")))
            # Bounded: a hung Redis must not hold the schema's lock (and its rows) forever.
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        # Jobs the events ask for (stamping, cancelling): queued before the rows count as
        # delivered, so a request's job is never lost with Redis (workers/event_jobs.py).
        await asyncio.wait_for(enqueue_event_jobs(redis, events), REDIS_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any Redis failure leaves rows pending
        log.warning("relay: redis unavailable for %s: %r", schema, exc)
        await conn.execute(failed, ids, (str(exc) or type(exc).__name__)[:1000])
        return 0
    if after_publish is not None:
        await after_publish(schema, events)
    await conn.execute(mark, ids)
    return len(rows)


async def relay_schema(rt: Runtime, schema: str, *, after_publish: AfterPublish | None = None,
                       batch_size: int = BATCH_SIZE) -> int:
    """Deliver one batch of one schema's outbox. Returns rows delivered (0 if another relay holds
    the schema or nothing is pending). Raises nothing for Redis failures: they are recorded on
    the rows, which stay undelivered for the next pass."""
    async with rt.engine.connect() as sa_conn:
        conn = (await sa_conn.get_raw_connection()).driver_connection
        async with conn.transaction():  # the lock, the read and the mark: one transaction
            if not await conn.fetchval(_XACT_LOCK, schema):
                return 0
            rows = await conn.fetch(_statements(schema)[0], batch_size)
            if not rows:
                return 0
            return await _deliver(conn, rt.redis, schema, rows, after_publish)


async def _existing_schemas(rt: Runtime) -> list[str]:
    async with rt.engine.connect() as sa_conn:
        conn = (await sa_conn.get_raw_connection()).driver_connection
        return [r[0] for r in await conn.fetch(_EXISTING, list(outbox_schemas()))]


async def relay_once(rt: Runtime, *, after_publish: AfterPublish | None = None,
                     schemas: Iterable[str] | None = None) -> int:
    """Drain every outbox (or only `schemas`) batch after batch once; returns how many rows were
    delivered."""
    if schemas is None:
        schemas = await _existing_schemas(rt)
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


class _Leader:
    """The loop's own connection: the session-level locks of the schemas it leads, LISTEN while
    it leads any, and the leader's passes (no transaction: the lock already excludes others)."""

    def __init__(self, rt: Runtime, after_publish: AfterPublish | None) -> None:
        self.rt, self.after_publish = rt, after_publish
        self.conn: asyncpg.Connection | None = None
        self.led: list[str] = []
        self.listening = False
        self.wake = asyncio.Event()
        # Schemas named by NOTIFY since the last pass: only those are relayed on a wake-up.
        self.notified: set[str] = set()

    def _on_notify(self, _conn, _pid, _channel, payload) -> None:
        if payload in outbox_schemas():
            self.notified.add(payload)
        self.wake.set()

    async def connect(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            return
        # A new connection holds no lock: whatever the old one led, Postgres released with it.
        self.conn, self.led, self.listening = None, [], False
        self.conn = await asyncpg.connect(to_plain_url(self.rt.settings.database_url),
                                          server_settings={"application_name": APPLICATION_NAME,
                                                           "statement_timeout": "30000"})

    async def take_over(self) -> list[str]:
        """Lead every schema no other relay leads (one statement); LISTEN once leading any.
        Returns the schemas newly led (they need a full pass: rows may have waited)."""
        wanted = [s for s in outbox_schemas() if s not in self.led]
        if not wanted:
            return []
        new = [r[0] for r in await self.conn.fetch(_LEAD, wanted)]
        self.led += new
        if self.led and not self.listening:
            await self.conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
            self.listening = True
        return new

    async def relay(self, schemas: Iterable[str], batch_size: int = BATCH_SIZE) -> int:
        total = 0
        for schema in schemas:
            read = _statements(schema)[0]
            while True:
                rows = await self.conn.fetch(read, batch_size)
                n = await _deliver(self.conn, self.rt.redis, schema, rows, self.after_publish) if rows else 0
                total += n
                if n < batch_size:
                    break
        return total

    async def purge(self, retention_hours: int) -> int:
        """Delete the led schemas' rows delivered more than `retention_hours` ago: nothing else
        ever deletes outbox rows, and every event would stay in Postgres forever. Returns how many
        were deleted."""
        total = 0
        for schema in self.led:
            for _ in range(PURGE_MAX_BATCHES):
                status = await self.conn.execute(_purge_statement(schema), retention_hours, PURGE_BATCH)
                deleted = int(status.rsplit(" ", 1)[-1])
                total += deleted
                if deleted < PURGE_BATCH:
                    break
        return total

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()  # releases the locks: a standby takes over at its next sweep


async def relay_loop(rt: Runtime, *, sweep_interval: float = SWEEP_INTERVAL,
                     after_publish: AfterPublish | None = None) -> None:
    """Lead the relay of every schema it can; relay the led ones on every NOTIFY and at least
    every `sweep_interval` seconds, and try to take over the others as often. Runs until
    cancelled."""
    me = _Leader(rt, after_publish)
    swept_at = 0.0
    purged_at: float | None = None  # first purge at the first sweep that leads something
    retention = rt.settings.outbox_retention_hours
    try:
        while True:
            me.wake.clear()
            now = asyncio.get_running_loop().time()
            everything = now - swept_at >= sweep_interval or not me.notified
            try:
                await me.connect()
                notified = set(me.notified)
                me.notified.clear()  # a NOTIFY during the pass wakes the next one
                if everything:
                    await me.take_over()  # newly led schemas are in `me.led`: relayed in full
                    schemas = list(me.led)
                else:
                    schemas = [s for s in me.led if s in notified]
                await me.relay(schemas)
                if everything:
                    swept_at = now
                    if retention and me.led and (purged_at is None or now - purged_at >= PURGE_INTERVAL):
                        purged_at = now
                        if deleted := await me.purge(retention):
                            log.info("relay: deleted %d outbox rows delivered over %d h ago", deleted, retention)
            except Exception:  # noqa: BLE001 - database or connection hiccup: again on the next tick
                log.exception("relay pass failed")
                if me.conn is not None and not me.conn.is_closed():
                    # Unknown state (a statement timed out, a failed read): start afresh, which
                    # also gives the schemas back to whoever takes them first.
                    me.conn.terminate()
            try:
                await asyncio.wait_for(me.wake.wait(), timeout=sweep_interval)
            except TimeoutError:
                pass
    finally:
        await me.close()


_start, _stop = background_loop("outbox-relay", lambda ctx: relay_loop(ctx["runtime"]))


FUNCTIONS = [relay_outbox]
STARTUP = [_start]
SHUTDOWN = [_stop]
