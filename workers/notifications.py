"""Notification jobs: the event consumer (in-app inbox, queued e-mail) and the e-mail sender.

Consumer: reads the `events` stream through its own consumer group. A message is acknowledged
only after its effects committed; messages a crashed consumer left pending are claimed again
after `CLAIM_IDLE_MS`; a message failing `MAX_DELIVERIES` times moves to a dead-letter stream so
one poison event cannot block the rest. Effects are deduplicated by event id in Postgres.

Sender (`send_email`): at most once per idempotency key. The message row is locked while it is
sent and marked sent in the same transaction, so a duplicate job waits and then finds it sent.
Temporary SMTP failures retry with backoff; 5xx replies are final.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import timedelta

from arq import Retry
from arq.connections import ArqRedis
from arq.cron import cron
from arq.worker import func
from redis.exceptions import ResponseError
from sqlalchemy import or_, select

from shared.bus import EVENTS_STREAM, publish_live, user_channel
from shared.db import transaction
from shared.events import Event, UnknownEventType, utcnow
from shared.runtime import Runtime
from workers.background import background_loop
from subgraphs.notification import mailer, service
from subgraphs.notification.models import FAILED_PERMANENT, QUEUED, SENT, EmailMessage

log = logging.getLogger(__name__)

GROUP = "notification"
DEAD_LETTER_STREAM = "events:dead:notification"
FAILURES_KEY = "events:failures:notification"
CLAIM_IDLE_MS = 30_000  # a message pending this long belongs to a consumer that died
MAX_DELIVERIES = 10
BATCH = 100
SEND_EMAIL_MAX_TRIES = 8


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def ensure_group(redis) -> None:
    try:
        # From the start of the stream: a new deployment catches up on history (dedupe makes
        # already-applied events no-ops).
        await redis.xgroup_create(EVENTS_STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _arq(rt: Runtime) -> ArqRedis:
    return ArqRedis(connection_pool=rt.redis.connection_pool)


async def enqueue_email(arq: ArqRedis, message_id: uuid.UUID) -> None:
    # One job id per message: enqueuing twice (consumer + sweep) runs it once.
    await arq.enqueue_job("send_email", str(message_id), _job_id=f"send_email:{message_id}")


async def _process(rt: Runtime, arq: ArqRedis, msg_id: bytes, fields: dict) -> None:
    raw = fields.get(b"event")
    try:
        event = Event.model_validate_json(raw)
        event.typed_payload()  # a payload that does not match its declared shape never will
    except UnknownEventType:
        pass  # a type this service does not know yet: handle_event ignores it
    except Exception:  # noqa: BLE001 - a malformed entry can never succeed
        log.error("notification consumer: unreadable stream entry %s", msg_id)
        await _dead_letter(rt, msg_id, fields, "unreadable")
        return
    handled = await service.handle_event(rt, event)
    # After the commit: live pushes and mail jobs. If we die right here the e-mail rows stay
    # `queued` and the sweep enqueues them; a lost live push is only a view (the inbox has it).
    for n in handled.notifications:
        try:
            await publish_live(rt.redis, user_channel(n.user_id), service.live_message(n))
        except Exception:  # noqa: BLE001
            log.warning("live push failed for notification %s", n.id)
    for mid in handled.email_ids:
        try:
            await enqueue_email(arq, mid)
        except Exception:  # noqa: BLE001
            log.warning("could not enqueue e-mail %s; the sweep will", mid)


async def _dead_letter(rt: Runtime, msg_id: bytes, fields: dict, reason: str) -> None:
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.xadd(DEAD_LETTER_STREAM, {**fields, b"stream_id": msg_id, b"reason": reason.encode()[:500]})
        pipe.xack(EVENTS_STREAM, GROUP, msg_id)
        pipe.hdel(FAILURES_KEY, msg_id)
        await pipe.execute()


async def _handle_batch(rt: Runtime, arq: ArqRedis, entries) -> int:
    done = 0
    for msg_id, fields in entries:
        if fields is None:  # trimmed from the stream while pending
            await rt.redis.xack(EVENTS_STREAM, GROUP, msg_id)
            continue
        try:
            await _process(rt, arq, msg_id, fields)
        except Exception as exc:  # noqa: BLE001 - leave it pending; it is claimed again later
            failures = await rt.redis.hincrby(FAILURES_KEY, msg_id, 1)
            log.exception("notification consumer: event %s failed (%s/%s)", msg_id, failures, MAX_DELIVERIES)
            if failures >= MAX_DELIVERIES:
                await _dead_letter(rt, msg_id, fields, repr(exc))
            continue
        async with rt.redis.pipeline(transaction=False) as pipe:
            pipe.xack(EVENTS_STREAM, GROUP, msg_id)
            pipe.hdel(FAILURES_KEY, msg_id)
            await pipe.execute()
        done += 1
    return done


async def consume_once(rt: Runtime, *, consumer: str | None = None, block_ms: int | None = None,
                       claim_idle_ms: int = CLAIM_IDLE_MS, arq: ArqRedis | None = None) -> int:
    """Process what is waiting: first messages stuck with dead consumers, then new ones. Returns
    how many messages were processed and acknowledged (duplicates included)."""
    consumer = consumer or consumer_name()
    arq = arq or _arq(rt)
    await ensure_group(rt.redis)  # one cheap round trip per pass; survives a Redis that lost the group
    total = 0
    start = "0-0"
    while True:
        start, claimed, *_ = await rt.redis.xautoclaim(EVENTS_STREAM, GROUP, consumer, claim_idle_ms,
                                                       start_id=start, count=BATCH)
        total += await _handle_batch(rt, arq, claimed)
        if start in (b"0-0", "0-0"):
            break
    while True:
        resp = await rt.redis.xreadgroup(GROUP, consumer, {EVENTS_STREAM: ">"}, count=BATCH, block=block_ms)
        entries = resp[0][1] if resp else []
        total += await _handle_batch(rt, arq, entries)
        if len(entries) < BATCH:
            return total
        block_ms = None  # only the first read waits


async def consumer_loop(rt: Runtime, arq: ArqRedis | None = None) -> None:
    name = consumer_name()
    delay = 1.0
    while True:
        try:
            await consume_once(rt, consumer=name, block_ms=5000, arq=arq)
            delay = 1.0
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis or Postgres down: back off and try again
            log.exception("notification consumer pass failed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


# --- e-mail -------------------------------------------------------------------------------------

def backoff_seconds(job_try: int) -> int:
    return min(10 * 2 ** (job_try - 1), 900)


async def send_email(ctx, message_id: str) -> str:
    """arq job: send one queued message. Returns its final status for this run."""
    rt: Runtime = ctx["runtime"]
    job_try: int = ctx.get("job_try", 1)
    retry: Retry | None = None
    async with transaction(rt.sessionmaker) as s:
        row = (await s.execute(
            select(EmailMessage).where(EmailMessage.id == uuid.UUID(message_id)).with_for_update()
        )).scalar_one_or_none()
        if row is None:
            return "missing"
        if row.status != QUEUED:
            return row.status  # sent (or given up) already: never twice
        row.attempts += 1
        row.last_attempt_at = utcnow()
        try:
            template, context, locale = row.template, dict(row.context), row.locale
            if "link" in context:  # minted now, used for this message only, never written back
                minted = await mailer.fetch_link(rt.settings, context.pop("link"), row.to_address)
                context.update(minted.context)
                template, locale = minted.template or template, minted.locale or locale
            rendered = mailer.render(template, locale, context)
            files = await mailer.fetch_attachments(rt.settings, row.attachments)
            msg = mailer.build_message(rt.settings, message_id=str(row.id), to_address=row.to_address,
                                       rendered=rendered, attachments=files)
            await mailer.send(rt.settings, msg)
        except mailer.PermanentFailure as exc:
            row.status, row.last_error = FAILED_PERMANENT, str(exc)[:2000]
            log.warning("e-mail %s failed permanently: %s", row.id, exc)
            return row.status
        except Exception as exc:  # noqa: BLE001 - temporary failures and anything unexpected retry
            if not isinstance(exc, mailer.TemporaryFailure):
                log.exception("e-mail %s: unexpected error", row.id)
            row.last_error = str(exc)[:2000] or type(exc).__name__
            if job_try >= SEND_EMAIL_MAX_TRIES:
                row.status = FAILED_PERMANENT
                row.last_error = f"reintentos agotados: {row.last_error}"[:2000]
                return row.status
            retry = Retry(defer=backoff_seconds(job_try))
        else:
            row.status, row.sent_at, row.last_error = SENT, utcnow(), None
            return row.status
    # Outside the transaction, so the attempt and its error are committed before arq reschedules.
    raise retry


async def requeue_queued_emails(ctx, older_than_seconds: int = 60) -> int:
    """Safety net: messages still `queued` whose job may never have been enqueued (a crash right
    after the consumer's commit). The job id makes this a no-op for messages already scheduled."""
    rt: Runtime = ctx["runtime"]
    arq = ctx.get("redis") or _arq(rt)
    now = utcnow()
    # Never tried, or last tried longer ago than the longest retry backoff: its job is gone.
    # Messages waiting on a scheduled retry are left alone, so they cannot crowd out lost ones.
    lost = or_(EmailMessage.last_attempt_at.is_(None),
               EmailMessage.last_attempt_at < now - timedelta(seconds=backoff_seconds(SEND_EMAIL_MAX_TRIES) + 300))
    async with rt.sessionmaker() as s:
        ids = list((await s.execute(
            select(EmailMessage.id).where(EmailMessage.status == QUEUED, EmailMessage.created_at < now - timedelta(
                seconds=older_than_seconds), lost).order_by(EmailMessage.created_at).limit(500)
        )).scalars())
    for mid in ids:
        await enqueue_email(arq, mid)
    return len(ids)


_start, _stop = background_loop("notification-consumer", lambda ctx: consumer_loop(ctx["runtime"], ctx.get("redis")))


FUNCTIONS = [func(send_email, max_tries=SEND_EMAIL_MAX_TRIES)]
CRON_JOBS = [cron(requeue_queued_emails, second={0}, run_at_startup=True)]
STARTUP = [_start]
SHUTDOWN = [_stop]
