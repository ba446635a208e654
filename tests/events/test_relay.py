"""The relay: outbox rows reach the Redis stream in id order, are marked delivered only after
Redis acknowledged them, survive a Redis outage, and a crash between XADD and the mark causes a
redelivery that consumers absorb (one effect per event id)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, text

from shared import embedded
from shared.bus import EVENTS_STREAM
from shared.events import MemberRemoved
from shared.registry import outbox_schemas
from shared.runtime import build_runtime
from subgraphs.auth.models import outbox as auth_outbox
from subgraphs.notification.models import EmailMessage, ProcessedEvent
from tests.events.helpers import invoice_stamped, emit_auth, stream_event_ids, verification_requested
from workers.notifications import consume_once
from workers.relay import APPLICATION_NAME, relay_loop, relay_once


async def _rows(rt, event_ids):
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(auth_outbox).where(auth_outbox.c.event_id.in_(event_ids)).order_by(auth_outbox.c.id))).all()
    return rows


_LEADERS = text(
    "SELECT l.objid::bigint AS key, a.pid, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = CAST(x'726C6179' AS int)::oid "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND a.application_name = :app")


async def _leaders(rt) -> list:
    """(schema key, leading backend's pid, its start) of every schema a relay loop leads."""
    async with rt.sessionmaker() as s:
        return (await s.execute(_LEADERS, {"app": APPLICATION_NAME})).all()


async def _until_led(rt, *, not_by: set[int] = frozenset()) -> list:
    """Wait until every outbox schema is led (by a backend not in `not_by`); returns the leaders."""
    for _ in range(500):
        rows = await _leaders(rt)
        if len(rows) == len(outbox_schemas()) and not {r.pid for r in rows} & not_by:
            return rows
        await asyncio.sleep(0.02)
    pytest.fail(f"the schemas are not led: {rows}")


async def _delivered(rt, ev, *, tries: int = 300) -> bool:
    """Wait until the event's row is marked delivered (in the stream is not enough: a loop
    cancelled between XADD and the mark would leave it to be re-sent into the next test)."""
    for _ in range(tries):
        (row,) = await _rows(rt, [ev.id])
        if row.delivered_at is not None:
            return str(ev.id) in await stream_event_ids(rt.redis, last=500)
        await asyncio.sleep(0.03)
    return False


async def test_rows_reach_the_stream_in_id_order_and_are_marked_delivered(rt):
    org = uuid.uuid4()
    events = [await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=org, aggregate_id=f"agg-{i}")
              for i in range(5)]
    before = await _rows(rt, [e.id for e in events])
    assert all(r.delivered_at is None for r in before)

    assert await relay_once(rt) >= 5

    ours = {str(e.id) for e in events}
    in_stream = [i for i in await stream_event_ids(rt.redis) if i in ours]
    assert in_stream == [str(e.id) for e in events]  # emitted order == id order == stream order
    after = await _rows(rt, [e.id for e in events])
    assert all(r.delivered_at is not None and r.last_error is None for r in after)
    await relay_once(rt)  # a second pass sends nothing of ours again
    assert [i for i in await stream_event_ids(rt.redis) if i in ours] == in_stream


async def test_stream_entries_carry_the_envelope(rt):
    ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
    await relay_once(rt)
    entries = await rt.redis.xrevrange(EVENTS_STREAM, count=50)
    fields = next(f for _, f in entries if f[b"id"] == str(ev.id).encode())
    assert fields[b"type"] == b"auth.member_removed"
    assert str(ev.organization_id).encode() in fields[b"event"]


async def test_organization_events_are_published_live(rt):
    from shared.bus import listen, org_channel

    org = uuid.uuid4()
    received: list[dict] = []

    async def subscriber():
        async for msg in listen(rt.redis, org_channel(org)):
            received.append(msg)
            return

    task = asyncio.create_task(subscriber())
    for _ in range(100):
        if (await rt.redis.pubsub_numsub(org_channel(org)))[0][1]:
            break
        await asyncio.sleep(0.01)
    # Auth events (which may carry single-use links) stay off live channels; others go out.
    await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=org)
    ev = await emit_auth(rt, invoice_stamped(created_by=None), organization_id=org)
    await relay_once(rt)
    await asyncio.wait_for(task, 5)
    assert received[0]["id"] == str(ev.id) and received[0]["type"] == "invoice.stamped"


async def test_redis_outage_keeps_rows_undelivered_until_it_is_back(settings, tmp_path):
    proc, url = embedded.start_redis(workdir=tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    rt = build_runtime("relay-outage-test", settings.model_copy(update={"redis_url": url}))
    try:
        proc.kill()
        proc.wait(5)
        ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
        await relay_once(rt)
        (row,) = await _rows(rt, [ev.id])
        assert row.delivered_at is None
        assert row.attempts >= 1 and row.last_error

        proc, _ = embedded.start_redis(port=port, workdir=tmp_path)
        delivered = 0
        for _ in range(3):  # the first command may meet a stale pooled connection
            delivered += await relay_once(rt)
            (row,) = await _rows(rt, [ev.id])
            if row.delivered_at is not None:
                break
        assert row.delivered_at is not None
        assert str(ev.id) in await stream_event_ids(rt.redis)
    finally:
        await rt.close()
        proc.kill()
        proc.wait(5)


async def test_crash_between_xadd_and_mark_redelivers_and_the_consumer_acts_once(rt):
    ev = await emit_auth(rt, verification_requested(), organization_id=uuid.uuid4())

    async def die(schema, events):
        if any(e.id == ev.id for e in events):
            raise RuntimeError("relay killed after XADD")

    with pytest.raises(RuntimeError):
        await relay_once(rt, after_publish=die)
    (row,) = await _rows(rt, [ev.id])
    assert row.delivered_at is None  # the mark rolled back with the crash
    assert (await stream_event_ids(rt.redis)).count(str(ev.id)) == 1

    await relay_once(rt)
    (row,) = await _rows(rt, [ev.id])
    assert row.delivered_at is not None
    assert (await stream_event_ids(rt.redis)).count(str(ev.id)) == 2  # at least once: it went twice

    await consume_once(rt)
    async with rt.sessionmaker() as s:
        emails = (await s.execute(select(func.count()).select_from(EmailMessage).where(EmailMessage.event_id == ev.id))).scalar()
        processed = (await s.execute(select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.event_id == ev.id))).scalar()
    assert emails == 1 and processed == 1


async def test_per_aggregate_order_is_kept_with_concurrent_relays(rt, settings):
    others = [build_runtime(f"relay-{i}", settings) for i in range(3)]
    try:
        aggregates = [f"invoice-{uuid.uuid4()}" for _ in range(3)]
        emitted: dict[str, list[str]] = {a: [] for a in aggregates}

        async def produce():
            for i in range(30):
                agg = aggregates[i % 3]
                ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4(), aggregate_id=agg)
                emitted[agg].append(str(ev.id))
                await asyncio.sleep(0)

        async def relay_repeatedly(r):
            for _ in range(10):
                await relay_once(r)
                await asyncio.sleep(0)

        await asyncio.gather(produce(), *(relay_repeatedly(r) for r in others))
        await relay_once(rt)
        stream = await stream_event_ids(rt.redis)
        for agg, ids in emitted.items():
            ours = set(ids)
            assert [i for i in stream if i in ours] == ids  # same order, each exactly once
    finally:
        for r in others:
            await r.close()


async def test_the_loop_wakes_on_notify_without_waiting_for_the_sweep(rt):
    await relay_once(rt)
    task = asyncio.create_task(relay_loop(rt, sweep_interval=60))
    try:
        await _until_led(rt)  # it leads, so it LISTENs
        ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
        if not await _delivered(rt, ev, tries=100):
            pytest.fail("NOTIFY did not wake the relay")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_authority_changes_are_published_live_and_other_auth_events_are_not(rt):
    from shared.bus import AUTHORITY_CHANNEL, listen
    from shared.events import ApiKeyRevoked, MemberRoleChanged, PasswordChanged

    org, user = uuid.uuid4(), uuid.uuid4()
    got: list[dict] = []

    async def collect():
        async for msg in listen(rt.redis, AUTHORITY_CHANNEL):
            got.append(msg)
            if len(got) == 2:
                return

    task = asyncio.create_task(collect())
    for _ in range(300):
        if (await rt.redis.pubsub_numsub(AUTHORITY_CHANNEL))[0][1]:
            break
        await asyncio.sleep(0.01)
    await emit_auth(rt, PasswordChanged(user_id=user, email="x@example.mx"), organization_id=org)
    await emit_auth(rt, MemberRoleChanged(user_id=user, old_role="ADMIN", new_role="MEMBER"), organization_id=org)
    await emit_auth(rt, ApiKeyRevoked(api_key_id=uuid.uuid4()), organization_id=org)
    await relay_once(rt)
    await asyncio.wait_for(task, 10)
    assert [m["type"] for m in got] == ["auth.member_role_changed", "auth.api_key_revoked"]
    assert got[0]["payload"]["user_id"] == str(user) and got[0]["organization_id"] == str(org)


async def test_emit_many_appends_in_one_statement_in_order_and_the_relay_delivers_them(rt):
    from sqlalchemy import event

    from shared.db import transaction
    from shared.outbox import emit_many

    org, actor = uuid.uuid4(), uuid.uuid4()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with transaction(rt.sessionmaker) as session:
            events = await emit_many(session, auth_outbox, [
                (MemberRemoved(user_id=uuid.uuid4()), org, actor if i % 2 else None, f"many-{i}") for i in range(4)])
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1 and "pg_notify" in statements[0]
    rows = await _rows(rt, [e.id for e in events])
    assert [r.event_id for r in rows] == [e.id for e in events]  # id order == the order given
    assert [(r.type, r.organization_id, r.actor_id, r.aggregate_id) for r in rows] == [
        ("auth.member_removed", org, actor if i % 2 else None, f"many-{i}") for i in range(4)]
    assert [r.payload for r in rows] == [e.payload for e in events]
    assert await relay_once(rt) >= 4
    ours = {str(e.id) for e in events}
    assert [i for i in await stream_event_ids(rt.redis) if i in ours] == [str(e.id) for e in events]


async def test_one_loop_leads_the_others_stand_by_and_one_shot_passes_keep_out(rt, settings):
    """Two workers' loops: one leads every schema (its connection holds the locks) and relays; the
    other neither relays nor listens; a one-shot pass (the arq job) relays nothing meanwhile, so
    the leader's batch is not sent twice, nor out of order, while it waits between XADD and mark."""
    held, release = asyncio.Event(), asyncio.Event()
    held_aggregate = f"held-{uuid.uuid4()}"

    async def hold(schema, events):
        if any(e.aggregate_id == held_aggregate for e in events):
            held.set()
            await release.wait()

    first = asyncio.create_task(relay_loop(rt, sweep_interval=0.05, after_publish=hold))
    leaders = await _until_led(rt)
    second = asyncio.create_task(relay_loop(rt, sweep_interval=0.05, after_publish=hold))
    other = build_runtime("relay-one-shot", settings)
    try:
        await asyncio.sleep(0.3)  # several of the standby's sweeps: it takes nothing over
        assert {r.pid for r in await _leaders(rt)} == {r.pid for r in leaders} and len({r.pid for r in leaders}) == 1
        async with rt.sessionmaker() as s:
            listeners = (await s.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = :app "
                "AND query LIKE 'LISTEN %'"), {"app": APPLICATION_NAME})).scalar()
        ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4(),
                             aggregate_id=held_aggregate)
        await asyncio.wait_for(held.wait(), 10)  # the leader sent it and has not marked it
        assert await relay_once(other, schemas=["auth"]) == 0
        release.set()
        assert await _delivered(rt, ev)
        assert (await stream_event_ids(rt.redis)).count(str(ev.id)) == 1
        assert listeners <= 1  # the standby does not LISTEN (the leader may be mid-pass)
    finally:
        release.set()
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        await other.close()


async def test_a_standby_takes_over_when_the_leader_dies(rt):
    first = asyncio.create_task(relay_loop(rt, sweep_interval=0.05))
    second: asyncio.Task | None = None
    try:
        leaders = await _until_led(rt)
        second = asyncio.create_task(relay_loop(rt, sweep_interval=0.05))
        await asyncio.sleep(0.2)
        first.cancel()  # the leading process ends: its connection, and its locks, go with it
        await asyncio.gather(first, return_exceptions=True)
        await _until_led(rt, not_by={r.pid for r in leaders})
        ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
        if not await _delivered(rt, ev):
            pytest.fail("nobody relays after the leader died")
    finally:
        for task in (first, second):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def test_a_leader_whose_connection_is_killed_is_replaced_and_delivery_goes_on(rt):
    """The server ends the leader's backend (a Postgres restart, an admin): the locks go with it,
    a loop (the same, reconnecting, or another) leads again and relays what was emitted meanwhile."""
    loops = [asyncio.create_task(relay_loop(rt, sweep_interval=0.05)) for _ in range(2)]
    try:
        leaders = await _until_led(rt)
        async with rt.sessionmaker() as s, s.begin():
            await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": leaders[0].pid})
        ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
        await _until_led(rt, not_by={leaders[0].pid})
        assert await _delivered(rt, ev)
        assert str(ev.id) in await stream_event_ids(rt.redis, last=200)
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)


async def _age(rt, ev, *, hours: int) -> None:
    """Make the event's row look delivered `hours` ago."""
    async with rt.sessionmaker() as s, s.begin():
        await s.execute(auth_outbox.update().where(auth_outbox.c.event_id == ev.id)
                        .values(delivered_at=func.now() - text(f"interval '{hours} hours'")))


async def test_the_leader_deletes_rows_delivered_longer_ago_than_the_retention_and_nothing_else(rt):
    """Nothing else deletes outbox rows: the leader removes those delivered more than
    `outbox_retention_hours` ago, keeps recent ones and never touches an undelivered row."""
    from workers.relay import _Leader

    old, recent = [await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
                   for _ in range(2)]
    await relay_once(rt)
    await _age(rt, old, hours=rt.settings.outbox_retention_hours + 1)
    await _age(rt, recent, hours=rt.settings.outbox_retention_hours - 1)
    leader = _Leader(rt, None)
    try:
        await leader.connect()
        assert "auth" in await leader.take_over()
        pending = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
        async with rt.sessionmaker() as s, s.begin():  # undelivered and as old as can be
            await s.execute(auth_outbox.update().where(auth_outbox.c.event_id == pending.id)
                            .values(occurred_at=func.now() - text("interval '400 days'")))
        assert await leader.purge(rt.settings.outbox_retention_hours) >= 1
        rows = {r.event_id: r for r in await _rows(rt, [old.id, recent.id, pending.id])}
        assert old.id not in rows
        assert rows[recent.id].delivered_at is not None and rows[pending.id].delivered_at is None
    finally:
        await leader.close()


async def test_the_relay_loop_purges_old_delivered_rows_when_it_leads(rt):
    ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
    await relay_once(rt)
    await _age(rt, ev, hours=rt.settings.outbox_retention_hours + 1)
    loop = asyncio.create_task(relay_loop(rt, sweep_interval=0.05))
    try:
        for _ in range(300):
            if not await _rows(rt, [ev.id]):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the leading loop did not delete a row delivered past the retention")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
