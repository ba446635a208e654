"""Helpers shared by event-backbone and notification tests: writing events the way services do."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from shared.bus import EVENTS_STREAM
from shared.db import transaction
from shared.events import (
    EmailVerificationRequested, Event, EventPayload, InvoiceStamped, InvoiceStampFailed, PasswordChanged, utcnow,
)
from shared.outbox import emit
from shared.runtime import Runtime


async def emit_auth(rt: Runtime, payload: EventPayload, *, organization_id=None, aggregate_id: str | None = None) -> Event:
    """Append an event to the auth outbox in its own transaction, as the auth service does."""
    from subgraphs.auth.models import outbox

    async with transaction(rt.sessionmaker) as session:
        return await emit(session, outbox, payload, organization_id=organization_id, aggregate_id=aggregate_id)


def verification_requested(*, locale: str = "es-MX", email: str | None = None) -> EmailVerificationRequested:
    """An auth event that mails the user (a verification link, minted by auth when sent) and tells
    the notification service who the user is."""
    uid = uuid.uuid4()
    return EmailVerificationRequested(user_id=uid, email=email or f"u-{uid.hex[:10]}@example.mx", full_name="Ana López",
                                      locale=locale, verification_ref=uuid.uuid4())


def password_changed(*, email: str | None = None) -> PasswordChanged:
    """An auth event whose e-mail (a security notice) carries no link: SMTP mechanics alone."""
    uid = uuid.uuid4()
    return PasswordChanged(user_id=uid, email=email or f"u-{uid.hex[:10]}@example.mx")


def _invoice_ref(created_by, customer_email, folio, total, customer_name) -> dict:
    return dict(invoice_id=uuid.uuid4(), series="A", folio=folio, invoice_type="I", total=Decimal(total), currency="MXN",
                customer_name=customer_name, customer_rfc="XAXX010101000", customer_email=customer_email,
                created_by=created_by)


def invoice_stamped(*, created_by: uuid.UUID | None, customer_email: str | None = "cliente@example.mx",
                    xml_path: str = "/documents/x.xml", pdf_path: str = "/documents/x.pdf", folio: int = 123,
                    total: str = "1160.00", customer_name: str = "Cliente Ejemplo SA de CV") -> InvoiceStamped:
    return InvoiceStamped(**_invoice_ref(created_by, customer_email, folio, total, customer_name),
                          uuid=str(uuid.uuid4()).upper(), stamped_at=utcnow(), xml_path=xml_path, pdf_path=pdf_path)


def invoice_stamp_failed(*, created_by: uuid.UUID | None, folio: int = 123, total: str = "1160.00",
                         customer_name: str = "Cliente Ejemplo SA de CV", message: str = "RFC del receptor inválido"
                         ) -> InvoiceStampFailed:
    return InvoiceStampFailed(**_invoice_ref(created_by, None, folio, total, customer_name), code="CFDI40145",
                              message=message)


async def stream_event_ids(redis, *, last: int = 5000) -> list[str]:
    """Event ids in the stream, oldest first (the tail is enough: tests look for their own)."""
    entries = await redis.xrevrange(EVENTS_STREAM, count=last)
    return [f[b"id"].decode() for _, f in reversed(entries)]


async def until(predicate, what: str = "the condition") -> None:
    """Wait (polling, up to ~10 s) until `predicate()` holds: e.g. a live subscription is listening."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")
