"""E-mail: rendered from templates in the recipient's language, delivered to a real SMTP listener,
retried on temporary failures, given up on 5xx, and never sent twice for one idempotency key."""

from __future__ import annotations

import asyncio
import re
import uuid
from types import SimpleNamespace

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
from tests.events.helpers import invoice_stamped, password_changed, verification_requested
from tests.notification.conftest import SmtpListener, port_is_closed, principal, serve_app, with_settings
from workers.notifications import SEND_EMAIL_MAX_TRIES, send_email


async def _message_for(rt, event_id, template=None) -> EmailMessage:
    async with rt.sessionmaker() as s:
        stmt = select(EmailMessage).where(EmailMessage.event_id == event_id)
        if template:
            stmt = stmt.where(EmailMessage.template == template)
        return (await s.execute(stmt)).scalar_one()


async def _queued_notice(rt):
    """A queued security notice: an e-mail with no link, for the SMTP mechanics."""
    payload = password_changed()
    handled = await service.handle_event(rt, make_event(payload, organization_id=uuid.uuid4(), actor_id=payload.user_id))
    (mid,) = handled.email_ids
    return payload, str(mid)


def _parts(msg):
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    return text, html


@pytest.fixture
async def auth_service(auth_settings):
    """The real auth service over HTTP (on the suite's auth database, whose signing keys every auth
    app of the run shares): it mints links when the mail worker sends."""
    from subgraphs.auth.app import create_app

    app = create_app(auth_settings)
    async with serve_app(app) as host:
        yield app, f"http://{host}"


async def _signed_up(rt, auth_service, *, locale="es-MX", full_name="Ana López"):
    """A sign-up made by the auth service, its event handled by the consumer into a queued message."""
    from sqlalchemy import text

    from shared.events import Event
    from subgraphs.auth import service as auth

    app, _ = auth_service
    auth_rt = app.state.runtime
    email = f"ana-{uuid.uuid4().hex[:10]}@example.mx"
    await auth.sign_up(auth_rt, email=email, password="correcto-caballo-bateria", full_name=full_name, organization_name="Tacos",
                       locale=locale, ip=f"t-{uuid.uuid4()}")
    async with auth_rt.sessionmaker() as s:
        row = (await s.execute(text("SELECT event_id, type, version, occurred_at, payload FROM auth.outbox "
                                    "WHERE payload->>'email' = :e"), {"e": email})).one()
    event = Event(id=row.event_id, type=row.type, version=row.version, organization_id=None, actor_id=None,
                  occurred_at=row.occurred_at, payload=row.payload)
    (mid,) = (await service.handle_event(rt, event)).email_ids
    async with rt.sessionmaker() as s:
        return email, await s.get(EmailMessage, mid)


async def test_sign_up_email_reaches_the_listener_with_a_freshly_minted_link_in_spanish(rt, smtp, auth_service):
    # Auth's event -> consumer -> queued message -> link minted by auth over HTTP -> SMTP. The
    # stored row never holds the link.
    email, row = await _signed_up(rt, auth_service)
    assert "token" not in str(row.context)
    status = await send_email({"runtime": with_settings(rt, smtp_port=smtp.port, auth_service_url=auth_service[1]), "job_try": 1}, str(row.id))

    assert status == SENT
    (msg,) = smtp.messages
    assert msg["To"] == email
    assert msg["Subject"] == "Bienvenido a Facturación: confirma tu correo"
    text, html = _parts(msg)
    link = re.search(r"https?://\S+completar-registro\?token=[\w-]+", text).group(0)
    assert f'href="{link}"' in html
    assert "Hola Ana López" in text and 'lang="es-MX"' in html
    async with rt.sessionmaker() as s:
        row = await s.get(EmailMessage, row.id)
    assert (row.status, row.attempts, row.sent_at is not None) == (SENT, 1, True)
    assert link not in str(row.context)


async def test_english_locale_gets_the_english_email(rt, smtp, auth_service):
    _, row = await _signed_up(rt, auth_service, locale="en")
    await send_email({"runtime": with_settings(rt, smtp_port=smtp.port, auth_service_url=auth_service[1])}, str(row.id))
    (msg,) = smtp.messages
    assert msg["Subject"] == "Welcome to Facturación: confirm your e-mail"
    text, html = _parts(msg)
    assert "completar-registro?token=" in text and "Hi Ana López" in text and 'lang="en"' in html


async def test_html_escapes_user_data(rt, smtp, auth_service):
    _, row = await _signed_up(rt, auth_service, full_name="<script>alert(1)</script>")
    await send_email({"runtime": with_settings(rt, smtp_port=smtp.port, auth_service_url=auth_service[1])}, str(row.id))
    text, html = _parts(smtp.messages[0])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" in text  # plain text is not HTML: nothing to escape


async def test_a_link_auth_will_not_mint_is_never_sent(rt, smtp, auth_service):
    payload = verification_requested()  # refers to no token auth knows
    handled = await service.handle_event(rt, make_event(payload, organization_id=None, actor_id=None))
    mid = str(handled.email_ids[0])
    status = await send_email({"runtime": with_settings(rt, smtp_port=smtp.port, auth_service_url=auth_service[1])}, mid)
    assert status == FAILED_PERMANENT and smtp.messages == []


async def test_unreachable_auth_service_is_a_temporary_failure(rt, smtp):
    payload = verification_requested()
    handled = await service.handle_event(rt, make_event(payload, organization_id=None, actor_id=None))
    with pytest.raises(Retry):
        await send_email({"runtime": with_settings(rt, smtp_port=smtp.port, auth_service_url=f"http://127.0.0.1:{free_port()}")},
                         str(handled.email_ids[0]))
    assert smtp.messages == []


async def test_smtp_down_retries_then_delivers_exactly_once(rt):
    port = free_port()
    assert port_is_closed(port)
    mail_rt = with_settings(rt, smtp_port=port)
    _, mid = await _queued_notice(rt)

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
        _, mid = await _queued_notice(rt)
        with pytest.raises(Retry):
            await send_email({"runtime": with_settings(rt, smtp_port=listener.port), "job_try": 1}, mid)
    finally:
        listener.stop()
    row = await _row(rt, mid)
    assert row.status == QUEUED and "451" in row.last_error


async def test_permanent_5xx_reply_fails_without_retry(rt):
    listener = SmtpListener(free_port(), reply="550 5.1.1 Buzón inexistente").start()
    try:
        _, mid = await _queued_notice(rt)
        mail_rt = with_settings(rt, smtp_port=listener.port)
        assert await send_email({"runtime": mail_rt, "job_try": 1}, mid) == FAILED_PERMANENT  # no Retry raised
        assert await send_email({"runtime": mail_rt, "job_try": 2}, mid) == FAILED_PERMANENT  # and never again
    finally:
        listener.stop()
    row = await _row(rt, mid)
    assert row.status == FAILED_PERMANENT and "550" in row.last_error and row.attempts == 1


async def test_last_try_gives_up(rt):
    port = free_port()
    _, mid = await _queued_notice(rt)
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


async def test_smtp_connections_are_reused_and_a_dropped_one_is_replaced(rt, monkeypatch):
    """One connection (one EHLO, the local name resolved once) for several messages; a connection
    the server dropped while idle is replaced without losing the message."""
    from subgraphs.notification import mailer

    ehlo_names: list[str] = []

    class CountingListener(SmtpListener):
        def __init__(self, port: int):
            super().__init__(port)

            async def handle_EHLO(server, session, envelope, hostname, responses):  # noqa: N802
                ehlo_names.append(hostname)
                session.host_name = hostname
                return responses

            self.inbox.handle_EHLO = handle_EHLO

    lookups: list[int] = []
    monkeypatch.setattr(mailer, "socket", SimpleNamespace(
        getfqdn=lambda: lookups.append(1) or "worker.facturacion.test"))  # the mailer's lookups only
    connections = mailer.SmtpConnections()
    listener = CountingListener(free_port()).start()
    settings = with_settings(rt, smtp_port=listener.port).settings
    rendered = mailer.Rendered(subject="Hola", text="Hola\n", html="<p>Hola</p>")

    def message(n: int):
        return mailer.build_message(settings, message_id=f"m{n}", to_address=f"a{n}@example.mx", rendered=rendered)

    try:
        for n in range(3):
            await connections.send(settings, message(n), 10)
        assert len(listener.messages) == 3
        assert ehlo_names == ["worker.facturacion.test"] and len(lookups) == 1
        listener.stop()  # the server goes away and comes back: the idle connection is dead
        listener = CountingListener(listener.port).start()
        await connections.send(settings, message(3), 10)
        assert [m["To"] for m in listener.messages] == ["a3@example.mx"]
        assert len(ehlo_names) == 2 and len(lookups) == 1
    finally:
        await connections.close()
        listener.stop()
