"""What every invoice use case shares: clocks, the locked read, the lifecycle move (history row +
outbox event in the caller's transaction), money in its one client shape, live status pushes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from datetime import datetime, timezone
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import org_channel, publish_live_many
from shared.errors import NotFoundError
from shared.outbox import emit
from shared.runtime import Runtime
from shared.telemetry import span
from sat import cfdi
from subgraphs.invoice import models as m
from sat.cfdi.rules import place_timezone
from sat.cfdi.totals import round_money
from subgraphs.invoice.lifecycle import Status, event_for
from sat.pac import PacError
from subgraphs.invoice.settings import get_invoice_settings

T = TypeVar("T")

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def local_now(postal_code: str) -> datetime:
    """Fecha: local time at LugarExpedicion, no timezone, whole seconds."""
    return datetime.now(place_timezone(postal_code)).replace(tzinfo=None, microsecond=0)


def money(value: Decimal | None, currency: str) -> Decimal | None:
    """An amount as clients see it everywhere (API, events): the currency's decimals, e.g. 3480.00."""
    if value is None:
        return None
    return round_money(Decimal(value), cfdi.currency_decimals(currency))


async def locked(session: AsyncSession, org: uuid.UUID, invoice_id: uuid.UUID) -> m.Invoice:
    inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id, m.Invoice.organization_id == org)
                               .with_for_update())
    if inv is None:
        raise NotFoundError("Factura no encontrada.")
    return inv


def invoice_ref(inv: m.Invoice) -> dict:
    """The invoice reference every invoice event carries."""
    return dict(invoice_id=inv.id, series=inv.series, folio=inv.folio, invoice_type=inv.voucher_type,
                total=money(inv.total, inv.currency), currency=inv.currency, customer_name=inv.customer_name,
                customer_rfc=inv.customer_rfc, customer_email=inv.customer_email, created_by=inv.created_by)


async def record_transition(session: AsyncSession, inv: m.Invoice, to: Status, actor: uuid.UUID | None,
                            why: str | None = None, /, **event_fields) -> None:
    """Move `inv` to `to` if the lifecycle allows it (IllegalTransition otherwise): the history
    row (with `why`) and the move's event (with `event_fields`) join the caller's transaction."""
    payload_cls = event_for(inv.status, to)
    session.add(m.InvoiceEvent(invoice_id=inv.id, organization_id=inv.organization_id, actor_id=actor,
                               from_status=inv.status, to_status=to.value, reason=why))
    inv.status = to.value
    if payload_cls is not None:
        await emit(session, m.outbox, payload_cls(**invoice_ref(inv), **event_fields),
                   organization_id=inv.organization_id, actor_id=actor, aggregate_id=f"invoice:{inv.id}")


async def publish_status(rt: Runtime, inv: m.Invoice) -> None:
    """After commit: the live status push subscriptions show (a view; the database is the record)."""
    await publish_statuses(rt, [inv])


async def publish_statuses(rt: Runtime, invoices) -> None:
    """`publish_status` for several invoices, in one round trip to Redis."""
    if not invoices:
        return
    at = utcnow().isoformat()
    try:
        await publish_live_many(rt.redis, [(org_channel(inv.organization_id), {
            "kind": "invoice_status", "invoiceId": str(inv.id), "status": inv.status, "uuid": inv.uuid,
            "code": inv.pac_code, "message": inv.pac_message, "at": at,
        }) for inv in invoices])
    except Exception:  # noqa: BLE001 - live updates are a view; the database is the record
        log.warning("could not publish invoice status", exc_info=True)


async def ask_pac(call: Awaitable[T], invoice_id, *, operation: str, pac: object) -> T:
    """The PAC's answer within PAC_TIMEOUT_SECONDS. Trouble reaching it (timeout, network, I/O)
    becomes a transient PacError: it may work next time. Traced as one span ("PAC stamp") whatever
    the provider: the sandbox answers in-process, real PACs' HTTP calls become its children."""
    with span(f"PAC {operation}", {"pac.operation": operation, "pac.provider": type(pac).__name__,
                                   "invoice.id": str(invoice_id)}, client=True):
        return await _ask_pac(call, invoice_id)


async def _ask_pac(call: Awaitable[T], invoice_id) -> T:
    try:
        return await asyncio.wait_for(call, get_invoice_settings().pac_timeout_seconds)
    except PacError:
        raise
    except TimeoutError as exc:
        raise PacError("PAC_TIMEOUT", "El PAC no respondió a tiempo.", transient=True) from exc
    except Exception as exc:  # noqa: BLE001 - whatever broke on the way
        log.warning("PAC call failed", exc_info=True, extra={"invoice_id": str(invoice_id)})
        raise PacError("PAC_ERROR", f"Error de comunicación con el PAC ({type(exc).__name__}).", transient=True) from exc
