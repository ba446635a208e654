"""Invoices stamped together: their creator gets ONE e-mail per stream read listing them all (a lone
stamp keeps its own mail), through the real consumer, Postgres and an SMTP listener; in-app notices
stay one per invoice, preferences still hold, and a redelivered batch never mails an invoice twice."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select

from shared.events import UserRegistered, make_event
from subgraphs.notification import service
from subgraphs.notification.decisions import DIGEST_TEMPLATE
from subgraphs.notification.models import SENT, EmailMessage, Notification, ProcessedEvent
from tests.events.helpers import emit_auth, invoice_stamp_failed, invoice_stamped
from tests.notification.conftest import principal, with_settings
from workers import notifications
from workers.relay import relay_once


async def _user(rt, *, locale="es-MX", name="Ana López") -> tuple[uuid.UUID, str]:
    user = uuid.uuid4()
    address = f"u-{user.hex[:10]}@example.mx"
    await service.handle_event(rt, make_event(UserRegistered(user_id=user, email=address, full_name=name, locale=locale),
                                              organization_id=None, actor_id=user))
    return user, address


async def _in_stream(rt, org, payloads) -> list:
    events = [await emit_auth(rt, p, organization_id=org) for p in payloads]
    await relay_once(rt)
    return events


async def _consume(rt, smtp) -> None:
    """One stream read through the consumer, and the mail it sends right after its commit."""
    await notifications.consume_once(with_settings(rt, smtp_port=smtp.port))
    await notifications.SENDER.drain()


async def _drained(rt, smtp) -> None:
    await _consume(rt, smtp)  # what earlier tests left in the stream
    smtp.messages.clear()


def _stamped(user, n, *, first_folio=1):
    return [invoice_stamped(created_by=user, customer_email=None, folio=first_folio + i, total=f"{i + 1}000.00",
                            customer_name=f"Cliente {first_folio + i} SA") for i in range(n)]


def _text(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def _html(msg) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()


async def _rows(rt, event_ids) -> list[EmailMessage]:
    async with rt.sessionmaker() as s:
        return list((await s.execute(select(EmailMessage).where(EmailMessage.event_ids.overlap(list(event_ids)))
                                     .order_by(EmailMessage.created_at))).scalars())


async def _notices(rt, event_ids) -> int:
    async with rt.sessionmaker() as s:
        return (await s.execute(select(func.count()).select_from(Notification)
                                .where(Notification.event_id.in_(event_ids)))).scalar()


async def test_invoices_stamped_in_one_read_reach_their_creator_as_one_mail_listing_each(rt, smtp):
    await _drained(rt, smtp)
    org = uuid.uuid4()
    user, address = await _user(rt)
    payloads = _stamped(user, 5)
    events = await _in_stream(rt, org, payloads)
    await _consume(rt, smtp)

    (msg,) = smtp.messages
    assert (msg["To"], msg["Subject"]) == (address, "Se timbraron 5 facturas")
    text, html = _text(msg), _html(msg)
    assert text.startswith("Hola Ana López:\r\n\r\nSe timbraron 5 facturas:\r\n")
    for i, p in enumerate(payloads):
        line = f"- A-{i + 1} · Cliente {i + 1} SA · ${i + 1},000.00 MXN\r\n  UUID {p.uuid}\r\n"
        assert line in text
        assert f"Cliente {i + 1} SA" in html and p.uuid in html
    assert "más" not in text
    (row,) = await _rows(rt, [e.id for e in events])
    assert (row.template, row.status, row.event_id) == (DIGEST_TEMPLATE, SENT, events[0].id)
    assert row.event_ids == [e.id for e in events]
    assert await _notices(rt, [e.id for e in events]) == 5  # in-app: still one per invoice


async def test_a_lone_stamp_keeps_its_own_mail(rt, smtp):
    await _drained(rt, smtp)
    user, address = await _user(rt)
    (event,) = await _in_stream(rt, uuid.uuid4(), _stamped(user, 1, first_folio=42))
    await _consume(rt, smtp)

    (msg,) = smtp.messages
    assert (msg["To"], msg["Subject"]) == (address, "Factura A-42 timbrada")
    assert _text(msg) == ("Hola Ana López:\r\n\r\nLa factura A-42 para Cliente 42 SA por $1,000.00 MXN fue timbrada "
                          f"(UUID {event.payload['uuid']}).\r\n")
    (row,) = await _rows(rt, [event.id])
    assert (row.template, row.idempotency_key, row.event_ids) == (
        "invoice_status", f"{event.id}:{address}:invoice_status", [event.id])


async def test_two_users_get_one_digest_each_with_only_their_invoices(rt, smtp):
    await _drained(rt, smtp)
    org = uuid.uuid4()
    (ana, ana_address), (bea, bea_address) = await _user(rt), await _user(rt, name="Bea")
    ana_stamps, bea_stamps = _stamped(ana, 3), _stamped(bea, 2, first_folio=10)
    await _in_stream(rt, org, [ana_stamps[0], bea_stamps[0], ana_stamps[1], bea_stamps[1], ana_stamps[2]])
    await _consume(rt, smtp)

    by_address = {m["To"]: m for m in smtp.messages}
    assert len(smtp.messages) == 2 and set(by_address) == {ana_address, bea_address}
    assert by_address[ana_address]["Subject"] == "Se timbraron 3 facturas"
    assert by_address[bea_address]["Subject"] == "Se timbraron 2 facturas"
    ana_text, bea_text = _text(by_address[ana_address]), _text(by_address[bea_address])
    assert all(p.uuid in ana_text and p.uuid not in bea_text for p in ana_stamps)
    assert all(p.uuid in bea_text and p.uuid not in ana_text for p in bea_stamps)


async def test_an_english_speaker_gets_the_english_digest(rt, smtp):
    await _drained(rt, smtp)
    user, _ = await _user(rt, locale="en", name="Ann Lee")
    payloads = _stamped(user, 2)
    await _in_stream(rt, uuid.uuid4(), payloads)
    await _consume(rt, smtp)

    (msg,) = smtp.messages
    assert msg["Subject"] == "2 invoices were stamped"
    text = _text(msg)
    assert text.startswith("Hi Ann Lee,\r\n\r\n2 invoices were stamped:\r\n")
    assert f"- A-2 · Cliente 2 SA · $2,000.00 MXN\r\n  UUID {payloads[1].uuid}" in text
    assert 'lang="en"' in _html(msg) and "<th" in _html(msg)


async def test_email_off_for_invoicing_means_no_digest_and_the_in_app_notices_still(rt, smtp):
    await _drained(rt, smtp)
    org = uuid.uuid4()
    user, _ = await _user(rt)
    await service.update_preference(rt, principal(user_id=user, org_id=org), category="invoicing", channel="email",
                                    enabled=False)
    events = await _in_stream(rt, org, _stamped(user, 3))
    await _consume(rt, smtp)

    assert smtp.messages == []
    assert await _rows(rt, [e.id for e in events]) == []
    assert await _notices(rt, [e.id for e in events]) == 3


async def test_stamp_failures_get_their_own_digest_beside_the_stamps(rt, smtp):
    await _drained(rt, smtp)
    user, _ = await _user(rt)
    failures = [invoice_stamp_failed(created_by=user, folio=n, message=f"Motivo {n}") for n in (7, 8)]
    stamps = _stamped(user, 2)
    await _in_stream(rt, uuid.uuid4(), [failures[0], *stamps, failures[1]])
    await _consume(rt, smtp)

    by_subject = {m["Subject"]: _text(m) for m in smtp.messages}
    assert sorted(by_subject) == ["No se pudieron timbrar 2 facturas", "Se timbraron 2 facturas"]
    failed = by_subject["No se pudieron timbrar 2 facturas"]
    assert "El PAC rechazó 2 facturas:" in failed
    assert "- A-7 · Cliente Ejemplo SA de CV · $1,160.00 MXN\r\n  Motivo 7\r\n" in failed and "Motivo 8" in failed


async def test_a_long_digest_lists_the_cap_and_counts_the_rest(rt, smtp, monkeypatch):
    from subgraphs.notification import decisions

    monkeypatch.setattr(decisions, "DIGEST_MAX_LINES", 3)
    await _drained(rt, smtp)
    user, _ = await _user(rt)
    payloads = _stamped(user, 5)
    await _in_stream(rt, uuid.uuid4(), payloads)
    await _consume(rt, smtp)

    (msg,) = smtp.messages
    text = _text(msg)
    assert msg["Subject"] == "Se timbraron 5 facturas"
    assert [p.uuid in text for p in payloads] == [True, True, True, False, False]
    assert "… y 2 más. Están todas en Facturación" in text and "… y 2 más." in _html(msg)


async def test_a_redelivered_batch_never_mails_an_invoice_twice(rt, smtp):
    """The consumer dies after its commit, before XACK: the entries come again, alone or in another
    read with new ones. The dedupe rows keep them out; even without those (lost), the digest's
    key, from the events it covers, lets no second row in."""
    await _drained(rt, smtp)
    user, _ = await _user(rt)
    org = uuid.uuid4()
    first = await _in_stream(rt, org, _stamped(user, 3))
    entries = [(e.id.bytes, {b"event": e.model_dump_json().encode()}) for e in first]
    mail_rt = with_settings(rt, smtp_port=smtp.port)
    await notifications._process_batch(mail_rt, entries)
    await notifications.SENDER.drain()
    await notifications._process_batch(mail_rt, entries)  # the same read again
    later = _stamped(user, 2, first_folio=20)
    second = [make_event(p, organization_id=org, actor_id=None) for p in later]
    await notifications._process_batch(mail_rt, entries[1:] + [(e.id.bytes, {b"event": e.model_dump_json().encode()})
                                                               for e in second])
    await notifications.SENDER.drain()

    uuids = [p.payload["uuid"] for p in first] + [p.uuid for p in later]
    mailed = [u for m in smtp.messages for u in uuids if u in _text(m)]
    assert sorted(mailed) == sorted(uuids)  # each invoice in exactly one mail
    assert [m["Subject"] for m in smtp.messages] == ["Se timbraron 3 facturas", "Se timbraron 2 facturas"]

    async with rt.sessionmaker() as s, s.begin():  # the dedupe rows lost: only the keys are left
        await s.execute(delete(ProcessedEvent).where(ProcessedEvent.event_id.in_([e.id for e in first])))
    handled = await service.handle_events(rt, first)
    assert handled.email_ids == [] and handled.notifications == []
    assert len(await _rows(rt, [e.id for e in first])) == 1
