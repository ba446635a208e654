"""The notification consumer group: acknowledges after processing, takes over messages a crashed
consumer left pending, and applies each event once however often it is delivered."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from shared.bus import EVENTS_STREAM
from subgraphs.notification.models import EmailMessage, Recipient
from tests.events.helpers import emit_auth, verification_requested
from workers.notifications import GROUP, consume_once, ensure_group
from workers.relay import relay_once


async def _emails(rt, event_id) -> int:
    async with rt.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(EmailMessage).where(EmailMessage.event_id == event_id))).scalar()


async def test_messages_of_a_crashed_consumer_are_claimed_and_processed(rt):
    await ensure_group(rt.redis)
    await consume_once(rt)  # drain what earlier tests left
    ev = await emit_auth(rt, verification_requested(), organization_id=uuid.uuid4())
    await relay_once(rt)
    # A consumer reads the message and dies before processing/acknowledging it.
    taken = await rt.redis.xreadgroup(GROUP, "crashed-consumer", {EVENTS_STREAM: ">"}, count=1000)
    assert any(f[b"id"] == str(ev.id).encode() for _, f in taken[0][1])
    assert await consume_once(rt, consumer="healthy", claim_idle_ms=60_000) == 0  # not stuck long enough yet
    assert await _emails(rt, ev.id) == 0

    assert await consume_once(rt, consumer="healthy", claim_idle_ms=0) >= 1
    assert await _emails(rt, ev.id) == 1
    pending = await rt.redis.xpending(EVENTS_STREAM, GROUP)
    assert pending["pending"] == 0


async def test_consumer_keeps_the_recipient_projection(rt):
    payload = verification_requested(locale="en")
    await emit_auth(rt, payload, organization_id=uuid.uuid4())
    await relay_once(rt)
    await consume_once(rt)
    async with rt.sessionmaker() as s:
        r = await s.get(Recipient, payload.user_id)
    assert (r.email, r.full_name, r.locale) == (payload.email, payload.full_name, "en")


async def test_redelivered_stream_entry_is_applied_once(rt):
    ev = await emit_auth(rt, verification_requested(), organization_id=uuid.uuid4())
    await relay_once(rt)
    await consume_once(rt)
    # The same entry written again (a relay that crashed before marking) changes nothing.
    entries = await rt.redis.xrevrange(EVENTS_STREAM, count=200)
    fields = next(f for _, f in entries if f[b"id"] == str(ev.id).encode())
    await rt.redis.xadd(EVENTS_STREAM, fields)
    assert await consume_once(rt) >= 1
    assert await _emails(rt, ev.id) == 1
