"""Notification jobs: the event consumer (in-app inbox, queued e-mail) and the e-mail sender.

Consumer: the `notification` group on the `events` stream (workers/consumer.py: ack after
commit, reclaim from dead consumers, dead-letter after MAX_DELIVERIES). The entries of one stream
read are applied in one transaction (`_process_batch`); if it fails, one by one (`_process`), so a
poison event fails alone. Effects are deduplicated by event id in Postgres. Within one read, the
invoice status mails to one recipient become one digest (decisions.outgoing); entries applied one
by one get their single mails.

Sender: at most once per idempotency key. The message row is locked while it is sent and marked
sent in the same transaction, so a duplicate sender waits (or skips it) and then finds it sent.
The consumer sends its new messages itself right after its commit, in groups (`Sender`,
`send_group`: one locking statement and one outcome statement per group, over reused SMTP
connections); the arq job `send_email` (one message) takes over what fails there. Temporary SMTP
failures retry with backoff; 5xx replies are final.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Sequence
from datetime import timedelta

from arq import Retry
from arq.connections import ArqRedis
from arq.cron import cron
from arq.worker import func
from sqlalchemy import or_, select, text, update

from shared.bus import publish_live_many, user_channel
from shared.db import transaction
from shared.events import Event, UnknownEventType, utcnow
from shared.runtime import Runtime
from workers.background import background_loop
from workers.consumer import MAX_DELIVERIES, StreamConsumer  # noqa: F401 - MAX_DELIVERIES re-exported for tests
from subgraphs.notification import mailer, service
from subgraphs.notification.models import FAILED_PERMANENT, QUEUED, SENT, EmailMessage

log = logging.getLogger(__name__)

SEND_EMAIL_MAX_TRIES = 8


def _arq(rt: Runtime) -> ArqRedis:
    return ArqRedis(connection_pool=rt.redis.connection_pool)


async def enqueue_email(arq: ArqRedis, message_id: uuid.UUID) -> None:
    # One job id per message: enqueuing twice (consumer + sweep) runs it once.
    await arq.enqueue_job("send_email", str(message_id), _job_id=f"send_email:{message_id}")


def _parsed(fields: dict) -> Event | None:
    """The entry's event, or None when it is unreadable (it can never succeed)."""
    try:
        event = Event.model_validate_json(fields.get(b"event"))
        event.typed_payload()  # a payload that does not match its declared shape never will
    except UnknownEventType:
        pass  # a type this service does not know yet: handle_events ignores it
    except Exception:  # noqa: BLE001
        return None
    return event


async def _process(rt: Runtime, msg_id: bytes, fields: dict) -> None:
    event = _parsed(fields)
    if event is None:
        log.error("notification consumer: unreadable stream entry %s", msg_id)
        await CONSUMER.dead_letter(rt, msg_id, fields, "unreadable")
        return
    await _after_commit(rt, await service.handle_event(rt, event))


async def _process_batch(rt: Runtime, entries: list[tuple[bytes, dict]]) -> None:
    """A stream read's entries in one transaction (service.handle_events); unreadable ones go to
    the dead letter only after that commit, so the per-entry fallback cannot dead-letter them twice."""
    parsed = [(msg_id, fields, _parsed(fields)) for msg_id, fields in entries]
    handled = await service.handle_events(rt, [e for _, _, e in parsed if e is not None])
    for msg_id, fields, event in parsed:
        if event is None:
            log.error("notification consumer: unreadable stream entry %s", msg_id)
            await CONSUMER.dead_letter(rt, msg_id, fields, "unreadable")
    await _after_commit(rt, handled)


async def _after_commit(rt: Runtime, handled: service.Handled) -> None:
    """Live pushes (one pipeline) and the new e-mails to the sender. If we die right here the
    e-mail rows stay `queued` and the sweep enqueues them; a lost live push is only a view (the
    inbox has it)."""
    if handled.notifications:
        try:
            await publish_live_many(rt.redis, [(user_channel(n.user_id), service.live_message(n))
                                               for n in handled.notifications])
        except Exception:  # noqa: BLE001
            log.warning("live push failed for %s notifications", len(handled.notifications))
    if handled.email_ids:
        await SENDER.send_soon(rt, handled.email_ids)


CONSUMER = StreamConsumer("notification", _process, wants=service.concerns, process_batch=_process_batch)
GROUP = CONSUMER.group
DEAD_LETTER_STREAM = CONSUMER.dead_letter_stream
ensure_group = CONSUMER.ensure_group
consume_once = CONSUMER.consume_once


# --- e-mail -------------------------------------------------------------------------------------

def backoff_seconds(job_try: int) -> int:
    return min(10 * 2 ** (job_try - 1), 900)


_emails = EmailMessage.__table__


_TO_SEND = (_emails.c.id, _emails.c.status, _emails.c.template, _emails.c.context, _emails.c.locale,
            _emails.c.to_address, _emails.c.attachments)


async def send_email(ctx, message_id: str) -> str:
    """arq job: send one queued message. Returns its final status for this run.

    Core statements (a locking SELECT of what the message needs, one UPDATE of the outcome), no
    ORM unit of work: the row lock held across the SMTP call is what makes it at most once."""
    rt: Runtime = ctx["runtime"]
    job_try: int = ctx.get("job_try", 1)
    mid = uuid.UUID(message_id)
    async with transaction(rt.sessionmaker) as s:
        row = (await s.execute(select(*_TO_SEND).where(_emails.c.id == mid).with_for_update())).first()
        if row is None:
            return "missing"
        if row.status != QUEUED:
            return row.status  # sent (or given up) already: never twice
        outcome, retry = await _attempt(rt, row, job_try)
        await s.execute(update(_emails).where(_emails.c.id == mid).values(
            attempts=_emails.c.attempts + 1, last_attempt_at=utcnow(), **outcome))
        if not retry:
            return outcome["status"]
    # Outside the transaction, so the attempt and its error are committed before arq reschedules.
    raise Retry(defer=backoff_seconds(job_try))


async def _attempt(rt: Runtime, row, job_try: int) -> tuple[dict, bool]:
    """Compose and send one locked, queued message: (the outcome's column values, whether to
    retry later). Temporary failures retry until the last try; 5xx replies are final."""
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
        log.warning("e-mail %s failed permanently: %s", row.id, exc)
        return {"status": FAILED_PERMANENT, "last_error": str(exc)[:2000]}, False
    except Exception as exc:  # noqa: BLE001 - temporary failures and anything unexpected retry
        if not isinstance(exc, mailer.TemporaryFailure):
            log.exception("e-mail %s: unexpected error", row.id)
        error = str(exc)[:2000] or type(exc).__name__
        if job_try >= SEND_EMAIL_MAX_TRIES:
            return {"status": FAILED_PERMANENT, "last_error": f"reintentos agotados: {error}"[:2000]}, False
        return {"status": QUEUED, "last_error": error}, True
    return {"status": SENT, "sent_at": utcnow(), "last_error": None}, False


# The outcomes of a group of messages in one statement.
_OUTCOMES = text("""
UPDATE notification.email_messages AS m
SET status = o.status, last_error = o.last_error, attempts = m.attempts + 1, last_attempt_at = :at,
    sent_at = CASE WHEN o.status = 'sent' THEN CAST(:at AS timestamptz) ELSE m.sent_at END
FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:errors AS text[])) AS o(id, status, last_error)
WHERE m.id = o.id""")


async def send_group(rt: Runtime, message_ids: Sequence[uuid.UUID], *, connections: int = 4) -> dict[uuid.UUID, str]:
    """Send a group of messages at most once each: ONE locking statement for the group, each message
    rendered and sent over the reused SMTP connections (`connections` at a time), ONE statement for
    the outcomes. A row locked by someone else (an arq job sending it) is skipped, not waited for;
    one no longer queued is not selected: neither is sent here. Returns the status of each message
    attempted (`queued` after a temporary failure: the caller hands it to the job's retries)."""
    async with transaction(rt.sessionmaker) as s:
        rows = (await s.execute(select(*_TO_SEND).where(_emails.c.id.in_(message_ids), _emails.c.status == QUEUED)
                                .with_for_update(skip_locked=True))).all()
        if not rows:
            return {}
        slots = asyncio.Semaphore(connections)

        async def one(row) -> dict:
            async with slots:
                return (await _attempt(rt, row, 1))[0]

        outcomes = await asyncio.gather(*(one(row) for row in rows))
        await s.execute(_OUTCOMES, {"at": utcnow(), "ids": [r.id for r in rows],
                                    "statuses": [o["status"] for o in outcomes],
                                    "errors": [o["last_error"] for o in outcomes]})
    return {r.id: o["status"] for r, o in zip(rows, outcomes)}


class Sender:
    """Sends the consumer's new messages right after its commit, in groups (`send_group`: one
    locking statement and one outcome statement per group), instead of queueing one arq job each:
    a job per e-mail cost its enqueue, poll, start and finish (several Redis round trips and arq's
    bookkeeping), as much CPU as the sending itself. What cannot be sent now goes to the arq job
    `send_email` (row lock, at most once per message): a temporary failure is retried there with
    its backoff, and the sweep (`requeue_queued_emails`) covers a worker that dies with messages
    in flight."""

    GROUP = 16  # messages per group
    IN_FLIGHT = 2  # groups per consumer, each sending up to CONNECTIONS messages at a time
    CONNECTIONS = 4  # the SMTP connections they use are kept open (mailer.CONNECTIONS)

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _state(self) -> tuple[asyncio.Semaphore, set[asyncio.Task]]:
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._loops[loop] = (asyncio.Semaphore(self.IN_FLIGHT), set())
        return self._loops[loop]

    async def send_soon(self, rt: Runtime, message_ids: Sequence[uuid.UUID]) -> None:
        """Start sending; waits only while IN_FLIGHT groups are being sent (back-pressure)."""
        slots, tasks = self._state()
        for start in range(0, len(message_ids), self.GROUP):
            await slots.acquire()
            task = asyncio.create_task(self._send(rt, list(message_ids[start:start + self.GROUP]), slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _send(self, rt: Runtime, message_ids: list[uuid.UUID], slots: asyncio.Semaphore) -> None:
        try:
            statuses = await send_group(rt, message_ids, connections=self.CONNECTIONS)
        except Exception:  # noqa: BLE001 - e.g. Postgres away: the job has the outage retries
            log.warning("e-mails %s not sent now; handed to the job", message_ids, exc_info=True)
            for mid in message_ids:
                await self._to_job(rt, mid)
        else:
            for mid, status in statuses.items():
                if status == QUEUED:  # attempt recorded; the job retries after the first backoff
                    await self._to_job(rt, mid, defer=backoff_seconds(1))
        finally:
            slots.release()

    @staticmethod
    async def _to_job(rt: Runtime, message_id: uuid.UUID, defer: int | None = None) -> None:
        try:
            await _arq(rt).enqueue_job("send_email", str(message_id), _job_id=f"send_email:{message_id}",
                                       _defer_by=defer)
        except Exception:  # noqa: BLE001
            log.warning("could not enqueue e-mail %s; the sweep will", message_id)

    async def drain(self, timeout: float = 20.0) -> None:
        """Let messages in flight finish (the worker stopping): cancelled mid-send, one could be
        delivered without being marked sent, and go out again."""
        _, tasks = self._state()
        if tasks:
            await asyncio.wait(list(tasks), timeout=timeout)


SENDER = Sender()


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


_start, _stop = background_loop("notification-consumer", lambda ctx: CONSUMER.loop(ctx["runtime"]))


async def _close_smtp(ctx) -> None:
    await SENDER.drain()
    await mailer.CONNECTIONS.close()


FUNCTIONS = [func(send_email, max_tries=SEND_EMAIL_MAX_TRIES)]
CRON_JOBS = [cron(requeue_queued_emails, second={0}, run_at_startup=True)]
STARTUP = [_start]
SHUTDOWN = [_stop, _close_smtp]
