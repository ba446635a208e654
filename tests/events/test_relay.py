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
from shared.runtime import build_runtime
from subgraphs.auth.models import outbox as auth_outbox
from subgraphs.notification.models import EmailMessage, ProcessedEvent
from tests.events.helpers import invoice_stamped, emit_auth, stream_event_ids, verification_requested
from workers.notifications import consume_once
from workers.relay import relay_loop, relay_once


async def _rows(rt, event_ids):
    async with rt.sessionmaker() as s:
        rows = (await s.execute(select(auth_outbox).where(auth_outbox.c.event_id.in_(event_ids)).order_by(auth_outbox.c.id))).all()
    return rows


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
        for _ in range(300):  # until the loop's LISTEN is in place
            async with rt.sessionmaker() as s:
                listening = (await s.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                ))).scalar()
            if listening:
                break
            await asyncio.sleep(0.01)
        ev = await emit_auth(rt, MemberRemoved(user_id=uuid.uuid4()), organization_id=uuid.uuid4())
        for _ in range(100):
            if str(ev.id) in await stream_event_ids(rt.redis, last=200):
                break
            await asyncio.sleep(0.03)
        else:
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
