"""E-mail: rendered from templates in the recipient's language, delivered to a real SMTP listener,
retried on temporary failures, given up on 5xx, and never sent twice for one idempotency key."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from arq import Retry
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from shared.embedded import free_port
from shared.events import make_event
from subgraphs.notification import service
from subgraphs.notification.models import FAILED_PERMANENT, QUEUED, SENT, EmailMessage
from tests.events.helpers import emit_auth, invoice_stamped, user_registered
from tests.notification.conftest import SmtpListener, port_is_closed, principal, serve_app, with_settings
from workers.notifications import SEND_EMAIL_MAX_TRIES, consume_once, send_email
from workers.relay import relay_once


async def _message_for(rt, event_id, template=None) -> EmailMessage:
    async with rt.sessionmaker() as s:
        stmt = select(EmailMessage).where(EmailMessage.event_id == event_id)
        if template:
            stmt = stmt.where(EmailMessage.template == template)
        return (await s.execute(stmt)).scalar_one()


async def _queued_verification(rt, locale="es-MX"):
    payload = user_registered(locale=locale)
    handled = await service.handle_event(rt, make_event(payload, organization_id=uuid.uuid4(), actor_id=payload.user_id))
    (mid,) = handled.email_ids
    return payload, str(mid)


def _parts(msg):
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    return text, html


async def test_verification_email_reaches_the_listener_with_the_link_in_spanish(rt, smtp):
    # The whole path: auth outbox -> relay -> stream -> consumer -> queued message -> SMTP.
    payload = user_registered()
    ev = await emit_auth(rt, payload, organization_id=uuid.uuid4())
    await relay_once(rt)
    await consume_once(rt)
    row = await _message_for(rt, ev.id)

    status = await send_email({"runtime": with_settings(rt, smtp_port=smtp.port), "job_try": 1}, str(row.id))

    assert status == SENT
    (msg,) = smtp.messages
    assert msg["To"] == payload.email
    assert msg["Subject"] == "Bienvenido a Facturación: confirma tu correo"
    text, html = _parts(msg)
    assert payload.verification_url in text
    assert f'href="{payload.verification_url}"' in html
    assert "Hola Ana López" in text and 'lang="es-MX"' in html
    row = await _message_for(rt, ev.id)
    assert (row.status, row.attempts, row.sent_at is not None) == (SENT, 1, True)


async def test_english_locale_gets_the_english_email(rt, smtp):
    payload, mid = await _queued_verification(rt, locale="en")
    await send_email({"runtime": with_settings(rt, smtp_port=smtp.port)}, mid)
    (msg,) = smtp.messages
    assert msg["Subject"] == "Welcome to Facturación: confirm your e-mail"
    text, html = _parts(msg)
    assert payload.verification_url in text and "Hi Ana López" in text and 'lang="en"' in html


async def test_html_escapes_user_data(rt, smtp):
    payload = user_registered()
    payload = payload.model_copy(update={"full_name": "<script>alert(1)</script>"})
    handled = await service.handle_event(rt, make_event(payload, organization_id=None, actor_id=None))
    await send_email({"runtime": with_settings(rt, smtp_port=smtp.port)}, str(handled.email_ids[0]))
    text, html = _parts(smtp.messages[0])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" in text  # plain text is not HTML: nothing to escape


async def test_smtp_down_retries_then_delivers_exactly_once(rt):
    port = free_port()
    assert port_is_closed(port)
    mail_rt = with_settings(rt, smtp_port=port)
    _, mid = await _queued_verification(rt)

    with pytest.raises(Retry) as retry:
        await send_email({"runtime": mail_rt, "job_try": 1}, mid)
    assert retry.value.defer_score and retry.value.defer_score > 0
    row = await _row(rt, mid)
    assert (row.status, row.attempts) == (QUEUED, 1)
    assert row.last_error

    listener = SmtpListener(port).start()
    try:
        # The retry and a duplicate job (e.g. a sweep re-enqueue) race: one e-mail only.
        results = await asyncio.gather(send_email({"runtime": mail_rt, "job_try": 2}, mid),
                                       send_email({"runtime": mail_rt, "job_try": 2}, mid))
        assert sorted(results) == [SENT, SENT]
        assert await send_email({"runtime": mail_rt, "job_try": 3}, mid) == SENT
        assert len(listener.messages) == 1
    finally:
        listener.stop()
    row = await _row(rt, mid)
    assert (row.status, row.attempts, row.last_error) == (SENT, 2, None)


async def _row(rt, mid) -> EmailMessage:
    async with rt.sessionmaker() as s:
        return await s.get(EmailMessage, uuid.UUID(mid))


async def test_temporary_4xx_reply_is_retried(rt):
    listener = SmtpListener(free_port(), reply="451 4.3.0 Intenta más tarde").start()
    try:
        _, mid = await _queued_verification(rt)
        with pytest.raises(Retry):
            await send_email({"runtime": with_settings(rt, smtp_port=listener.port), "job_try": 1}, mid)
    finally:
        listener.stop()
    row = await _row(rt, mid)
    assert row.status == QUEUED and "451" in row.last_error


async def test_permanent_5xx_reply_fails_without_retry(rt):
    listener = SmtpListener(free_port(), reply="550 5.1.1 Buzón inexistente").start()
    try:
        _, mid = await _queued_verification(rt)
        mail_rt = with_settings(rt, smtp_port=listener.port)
        assert await send_email({"runtime": mail_rt, "job_try": 1}, mid) == FAILED_PERMANENT  # no Retry raised
        assert await send_email({"runtime": mail_rt, "job_try": 2}, mid) == FAILED_PERMANENT  # and never again
    finally:
        listener.stop()
    row = await _row(rt, mid)
    assert row.status == FAILED_PERMANENT and "550" in row.last_error and row.attempts == 1


async def test_last_try_gives_up(rt):
    port = free_port()
    _, mid = await _queued_verification(rt)
    status = await send_email({"runtime": with_settings(rt, smtp_port=port), "job_try": SEND_EMAIL_MAX_TRIES}, mid)
    assert status == FAILED_PERMANENT
    assert (await _row(rt, mid)).last_error.startswith("reintentos agotados")


async def test_stamped_invoice_mails_the_customer_the_xml_and_pdf(rt, smtp):
    xml = b'<?xml version="1.0" encoding="UTF-8"?><cfdi:Comprobante Version="4.0"/>'
    pdf = b"%PDF-1.7 factura de prueba"
    fetched: list[str] = []

    async def document(request):
        fetched.append(request.url.path)
        if request.query_params.get("sig") != "ok":  # the invoice service checks its signature
            return Response(status_code=403)
        body, ctype = (xml, "application/xml") if request.url.path.endswith(".xml") else (pdf, "application/pdf")
        return Response(body, media_type=ctype)

    docs = Starlette(routes=[Route("/documents/{name}", document)])
    creator = uuid.uuid4()
    org = uuid.uuid4()
    async with serve_app(docs) as host:
        await service.update_organization_settings(rt, principal(org_id=org), send_cfdi_to_customer=True, defaults=None)
        payload = invoice_stamped(created_by=creator, customer_email="cliente@example.mx",
                                  xml_path="/documents/cfdi.xml?sig=ok", pdf_path="/documents/cfdi.pdf?sig=ok")
        ev = make_event(payload, organization_id=org, actor_id=creator)
        handled = await service.handle_event(rt, ev)
        assert len(handled.notifications) == 1  # the creator's in-app notice
        row = await _message_for(rt, ev.id, "cfdi_to_customer")
        status = await send_email({"runtime": with_settings(rt, smtp_port=smtp.port,
                                                            invoice_service_url=f"http://{host}")}, str(row.id))
    assert status == SENT
    (msg,) = smtp.messages
    assert msg["To"] == "cliente@example.mx"
    assert payload.uuid in msg["Subject"]
    attachments = {a.get_filename(): (a.get_content_type(), a.get_payload(decode=True)) for a in msg.iter_attachments()}
    assert attachments == {f"{payload.uuid}.xml": ("application/xml", xml), f"{payload.uuid}.pdf": ("application/pdf", pdf)}
    assert sorted(fetched) == ["/documents/cfdi.pdf", "/documents/cfdi.xml"]


async def test_unreachable_invoice_service_is_a_temporary_failure(rt, smtp):
    org = uuid.uuid4()
    await service.update_organization_settings(rt, principal(org_id=org), send_cfdi_to_customer=True, defaults=None)
    ev = make_event(invoice_stamped(created_by=None), organization_id=org, actor_id=None)
    await service.handle_event(rt, ev)
    row = await _message_for(rt, ev.id, "cfdi_to_customer")
    with pytest.raises(Retry):
        await send_email({"runtime": with_settings(rt, smtp_port=smtp.port,
                                                   invoice_service_url=f"http://127.0.0.1:{free_port()}")}, str(row.id))
    assert smtp.messages == []
    assert (await _row(rt, str(row.id))).status == QUEUED
