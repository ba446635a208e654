"""The consumer applies a stream read's events together and sends their mail in groups, without
losing what one-at-a-time gave: each event once, a poison event failing alone until the dead
letter, each message at most once whichever sender sees it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from shared.bus import EVENTS_STREAM
from shared.embedded import free_port
from shared.events import UserRegistered, make_event
from subgraphs.notification import service
from subgraphs.notification.models import FAILED_PERMANENT, QUEUED, SENT, EmailMessage, Notification
from tests.auth.test_no_n_plus_one import count_statements
from tests.events.helpers import emit_auth, invoice_stamped, password_changed
from tests.notification.conftest import Inbox, SmtpListener, principal, with_settings
from workers import notifications
from workers.relay import relay_once


async def _registered(rt) -> uuid.UUID:
    user = uuid.uuid4()
    await service.handle_event(rt, make_event(UserRegistered(user_id=user, email=f"u-{user.hex[:10]}@example.mx",
                                                             full_name="Ana", locale="es-MX"),
                                              organization_id=None, actor_id=user))
    return user


async def _stamped_in_stream(rt, org, creators, n, **payload) -> list[uuid.UUID]:
    ids = [(await emit_auth(rt, invoice_stamped(created_by=creators[i % len(creators)], **payload),
                            organization_id=org)).id for i in range(n)]
    await relay_once(rt)
    return ids


async def _counts(rt, event_ids) -> tuple[int, int]:
    async with rt.sessionmaker() as s:
        notices = (await s.execute(select(func.count()).select_from(Notification)
                                   .where(Notification.event_id.in_(event_ids)))).scalar()
        mails = (await s.execute(select(func.count()).select_from(EmailMessage)
                                 .where(EmailMessage.event_ids.overlap(list(event_ids))))).scalar()
    return notices, mails


async def test_a_stream_read_costs_the_same_statements_for_3_and_12_events(rt, smtp):
    mail_rt = with_settings(rt, smtp_port=smtp.port)
    await notifications.consume_once(mail_rt)  # what earlier tests left
    await notifications.SENDER.drain()
    org = uuid.uuid4()
    creators = [await _registered(rt), await _registered(rt)]
    seen = {}
    for n in (3, 12):
        ids = await _stamped_in_stream(rt, org, creators, n, customer_email=None)
        before = len(smtp.messages)
        with count_statements(rt.engine) as statements:
            assert await notifications.consume_once(mail_rt) == n
            await notifications.SENDER.drain()  # the group sender's statements count too
        seen[n] = statements
        # Each invoice its in-app notice; its creator one e-mail (3: a digest of 2 and a single mail).
        assert await _counts(rt, ids) == (n, 2)
        assert len(smtp.messages) - before == 2
    assert len(seen[12]) == len(seen[3]), (seen[3], seen[12])


async def test_a_poison_event_fails_alone_and_reaches_the_dead_letter(rt):
    await notifications.consume_once(rt)  # what earlier tests left
    org = uuid.uuid4()
    await service.update_organization_settings(rt, principal(org_id=org), send_cfdi_to_customer=True, defaults=None)
    creators = [await _registered(rt)]
    good = await _stamped_in_stream(rt, org, creators, 2)
    # The customer's mail cannot be stored (the address is longer than the column): every try fails.
    (poison,) = await _stamped_in_stream(rt, org, creators, 1, customer_email="c" * 400 + "@example.mx")
    good += await _stamped_in_stream(rt, org, creators, 2)

    assert await notifications.consume_once(rt) == 4  # one read: the batch fails, then entry by entry
    assert await _counts(rt, good) == (4, 8)  # creator in-app + mail, customer mail
    assert await _counts(rt, [poison]) == (0, 0)
    for _ in range(notifications.MAX_DELIVERIES - 2):
        await notifications.consume_once(rt, claim_idle_ms=0)
    assert not any(f[b"id"] == str(poison).encode() for _, f in await rt.redis.xrange(notifications.DEAD_LETTER_STREAM))
    assert (await rt.redis.xpending(EVENTS_STREAM, notifications.GROUP))["pending"] == 1
    await notifications.consume_once(rt, claim_idle_ms=0)  # the MAX_DELIVERIES-th failure
    dead = await rt.redis.xrange(notifications.DEAD_LETTER_STREAM)
    assert [f[b"id"] for _, f in dead].count(str(poison).encode()) == 1
    assert (await rt.redis.xpending(EVENTS_STREAM, notifications.GROUP))["pending"] == 0
    assert await _counts(rt, good) == (4, 8)  # nothing applied twice
    await notifications.SENDER.drain()


async def _queued(rt, address: str) -> uuid.UUID:
    payload = password_changed(email=address)
    (mid,) = (await service.handle_event(rt, make_event(payload, organization_id=uuid.uuid4(),
                                                        actor_id=payload.user_id))).email_ids
    return mid


async def _statuses(rt, ids) -> dict[uuid.UUID, str]:
    async with rt.sessionmaker() as s:
        return dict((await s.execute(select(EmailMessage.id, EmailMessage.status).where(EmailMessage.id.in_(ids)))).all())


class RefusingInbox(Inbox):
    def __init__(self, refused: str):
        super().__init__()
        self.refused = refused

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address == self.refused:
            return "550 5.1.1 Buzón inexistente"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_a_recipient_refused_for_good_fails_alone_in_its_group(rt):
    refused = f"nadie-{uuid.uuid4().hex[:8]}@example.mx"
    listener = SmtpListener(free_port(), inbox=RefusingInbox(refused)).start()
    try:
        ok = [await _queued(rt, f"ok-{uuid.uuid4().hex[:8]}@example.mx") for _ in range(3)]
        bad = await _queued(rt, refused)
        statuses = await notifications.send_group(with_settings(rt, smtp_port=listener.port), [*ok[:2], bad, ok[2]])
    finally:
        listener.stop()
    assert statuses == {**{m: SENT for m in ok}, bad: FAILED_PERMANENT}
    assert await _statuses(rt, [*ok, bad]) == statuses
    assert sorted(m["To"] for m in listener.messages) == sorted(await _row_addresses(rt, ok))
    async with rt.sessionmaker() as s:
        attempts = dict((await s.execute(select(EmailMessage.id, EmailMessage.attempts)
                                         .where(EmailMessage.id.in_([*ok, bad])))).all())
    assert set(attempts.values()) == {1}


async def _row_addresses(rt, ids) -> list[str]:
    async with rt.sessionmaker() as s:
        return list((await s.execute(select(EmailMessage.to_address).where(EmailMessage.id.in_(ids)))).scalars())


class SlowInbox(Inbox):
    """Holds each message a moment before accepting it: the sender keeps its row lock meanwhile."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(0.3)
        return await super().handle_DATA(server, session, envelope)


async def test_a_message_is_sent_once_whether_the_group_or_the_job_sees_it_first(rt):
    listener = SmtpListener(free_port(), inbox=SlowInbox()).start()
    mail_rt = with_settings(rt, smtp_port=listener.port)
    job = {"runtime": mail_rt, "job_try": 1}
    try:
        # The group first, then the job: the job finds it sent.
        first = await _queued(rt, f"a-{uuid.uuid4().hex[:8]}@example.mx")
        assert await notifications.send_group(mail_rt, [first]) == {first: SENT}
        assert await notifications.send_email(job, str(first)) == SENT
        # The job first, then the group: the group selects nothing.
        second = await _queued(rt, f"b-{uuid.uuid4().hex[:8]}@example.mx")
        assert await notifications.send_email(job, str(second)) == SENT
        assert await notifications.send_group(mail_rt, [second]) == {}
        # Both at once, either way round: one of them sends, the other skips or finds it sent.
        both = [await _queued(rt, f"c-{uuid.uuid4().hex[:8]}@example.mx") for _ in range(2)]
        group_then_job, job_then_group = both
        results = await asyncio.gather(
            notifications.send_group(mail_rt, [group_then_job]), notifications.send_email(job, str(group_then_job)),
            notifications.send_email(job, str(job_then_group)), notifications.send_group(mail_rt, [job_then_group]))
        assert results[1] == SENT and results[2] == SENT
        assert results[0] in ({}, {group_then_job: SENT}) and results[3] in ({}, {job_then_group: SENT})
    finally:
        listener.stop()
    sent_to = [m["To"] for m in listener.messages]
    assert len(sent_to) == 4 and len(set(sent_to)) == 4, sent_to
    assert set((await _statuses(rt, [first, second, *both])).values()) == {SENT}
    assert QUEUED not in (await _statuses(rt, [first, second, *both])).values()


async def test_the_received_mail_has_its_headers_alternatives_and_attachments(rt, smtp):
    """What the classic MIME build sends, read back with the modern parser: encoded UTF-8
    headers, a stable Message-ID, text and HTML alternatives, attachments after them."""
    from subgraphs.notification import mailer

    settings = with_settings(rt, smtp_port=smtp.port).settings
    rendered = mailer.Rendered(subject="Factura A-1 timbrada: «Señor Peña»", text="Hola Peña,\ntu factura.\n",
                               html="<p>Hola <b>Peña</b></p>")
    files = [mailer.FetchedAttachment("F.xml", "application/xml", "<a>ñ</a>".encode()),
             mailer.FetchedAttachment("F.pdf", "application/pdf", b"%PDF-1.7 \x00\xff")]
    await mailer.send(settings, mailer.build_message(settings, message_id="abc", to_address="pena@example.mx",
                                                     rendered=rendered, attachments=files))
    (msg,) = smtp.messages
    assert msg["From"].addresses[0].display_name == "Facturación"
    assert (msg["To"], msg["Subject"], msg["Message-ID"]) == ("pena@example.mx", "Factura A-1 timbrada: «Señor Peña»",
                                                              "<abc@facturacion.local>")
    assert msg["Date"].datetime is not None
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/xml", "application/pdf"]
    assert msg.get_body(preferencelist=("plain",)).get_content() == "Hola Peña,\r\ntu factura.\r\n"
    assert msg.get_body(preferencelist=("html",)).get_content() == "<p>Hola <b>Peña</b></p>\r\n"
    assert {a.get_filename(): a.get_payload(decode=True) for a in msg.iter_attachments()} == {
        "F.xml": "<a>ñ</a>".encode(), "F.pdf": b"%PDF-1.7 \x00\xff"}
