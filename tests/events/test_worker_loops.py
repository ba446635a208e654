"""The worker as wired in workers.main: the STARTUP hooks start the relay loop and the consumer,
the arq functions are registered, the sweep re-enqueues mail whose job was lost, and a poison
event ends in the dead-letter stream instead of blocking the group."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from shared.bus import EVENTS_STREAM
from shared.events import make_event
from subgraphs.notification import service
from subgraphs.notification.models import EmailMessage
from tests.events.helpers import emit_auth, verification_requested
from workers import notifications, relay


async def test_startup_hooks_relay_and_consume_without_being_asked(rt):
    ctx = {"runtime": rt}
    for hook in relay.STARTUP + notifications.STARTUP:
        await hook(ctx)
    try:
        ev = await emit_auth(rt, verification_requested(), organization_id=uuid.uuid4())
        for _ in range(200):
            async with rt.sessionmaker() as s:
                row = (await s.execute(select(EmailMessage).where(EmailMessage.event_id == ev.id))).scalar_one_or_none()
            if row is not None:
                break
            await asyncio.sleep(0.03)
        else:
            pytest.fail("the worker loops did not turn the event into an e-mail")
        # Handed to the mailer: the consumer tries to send it at once and, the SMTP server of
        # this test being absent, leaves it to the send_email job.
        for _ in range(200):
            if await rt.redis.exists(f"arq:job:send_email:{row.id}"):
                break
            await asyncio.sleep(0.03)
        else:
            pytest.fail("the e-mail was neither sent nor handed to the send_email job")
    finally:
        for hook in relay.SHUTDOWN + notifications.SHUTDOWN:
            await hook(ctx)


def test_worker_settings_register_the_jobs():
    from workers.main import WorkerSettings

    names = {getattr(f, "name", getattr(f, "__name__", None)) for f in WorkerSettings.functions}
    assert {"relay_outbox", "send_email"} <= names
    assert any("requeue_queued_emails" in c.name for c in WorkerSettings.cron_jobs)


async def test_relay_outbox_job_runs_one_pass(rt):
    ev = await emit_auth(rt, verification_requested(), organization_id=uuid.uuid4())
    assert await relay.relay_outbox({"runtime": rt}) >= 1
    entries = await rt.redis.xrevrange(EVENTS_STREAM, count=50)
    assert any(f[b"id"] == str(ev.id).encode() for _, f in entries)


async def test_sweep_enqueues_queued_mail_whose_job_was_lost(rt):
    payload = verification_requested()
    handled = await service.handle_event(rt, make_event(payload, organization_id=None, actor_id=None))
    (mid,) = handled.email_ids
    async with rt.sessionmaker() as s, s.begin():  # pretend it has waited for a while
        await s.execute(update(EmailMessage).where(EmailMessage.id == mid)
                        .values(created_at=EmailMessage.created_at - timedelta(minutes=5)))
    assert not await rt.redis.exists(f"arq:job:send_email:{mid}")
    assert await notifications.requeue_queued_emails({"runtime": rt}) >= 1
    assert await rt.redis.exists(f"arq:job:send_email:{mid}")
    # Running it again does not schedule a second job for the same message.
    await notifications.requeue_queued_emails({"runtime": rt})
    queued = await rt.redis.zrange("arq:queue", 0, -1)
    assert queued.count(f"send_email:{mid}".encode()) == 1


async def test_sweep_leaves_mail_waiting_on_a_scheduled_retry_alone(rt):
    waiting = (await service.handle_event(rt, make_event(verification_requested(), organization_id=None, actor_id=None))).email_ids[0]
    lost = (await service.handle_event(rt, make_event(verification_requested(), organization_id=None, actor_id=None))).email_ids[0]
    async with rt.sessionmaker() as s, s.begin():
        await s.execute(update(EmailMessage).where(EmailMessage.id.in_([waiting, lost]))
                        .values(created_at=EmailMessage.created_at - timedelta(hours=2)))
        # `waiting` was tried a minute ago: arq holds its retry. `lost` was tried two hours ago.
        await s.execute(update(EmailMessage).where(EmailMessage.id == waiting)
                        .values(attempts=1, last_attempt_at=func.now() - timedelta(minutes=1)))
        await s.execute(update(EmailMessage).where(EmailMessage.id == lost)
                        .values(attempts=1, last_attempt_at=func.now() - timedelta(hours=2)))
    await notifications.requeue_queued_emails({"runtime": rt})
    assert await rt.redis.exists(f"arq:job:send_email:{lost}")
    assert not await rt.redis.exists(f"arq:job:send_email:{waiting}")


async def test_poison_event_goes_to_the_dead_letter_stream(rt, monkeypatch):
    await notifications.consume_once(rt)  # drain
    ev = await emit_auth(rt, verification_requested(), organization_id=uuid.uuid4())
    await relay.relay_once(rt)

    async def broken(runtime, event, **kw):
        if event.id == ev.id:
            raise RuntimeError("boom")
        return service.Handled()

    async def broken_batch(runtime, events, **kw):  # the batch fails, then each entry alone
        if any(e.id == ev.id for e in events):
            raise RuntimeError("boom")
        return service.Handled()

    monkeypatch.setattr(notifications.service, "handle_event", broken)
    monkeypatch.setattr(notifications.service, "handle_events", broken_batch)
    for _ in range(notifications.MAX_DELIVERIES):
        await notifications.consume_once(rt, claim_idle_ms=0)
    dead = await rt.redis.xrange(notifications.DEAD_LETTER_STREAM)
    assert any(f[b"id"] == str(ev.id).encode() for _, f in dead)
    assert (await rt.redis.xpending(EVENTS_STREAM, notifications.GROUP))["pending"] == 0
