"""Cancellation, like stamping: the request (`cancelInvoice`) records CANCELLING and its event and
answers at once; the worker asks the PAC (`run_cancellation`, queued from that event by the
relay) and the status moves on (CANCELLED, CANCELLATION_PENDING while the receiver decides,
CANCELLATION_REJECTED, or CANCELLATION_FAILED when the PAC refuses), seen on the subscription.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select

from shared.db import transaction
from shared.errors import InputError, UserError
from shared.runtime import Runtime
from sat import cfdi
from subgraphs.invoice import models as m
from subgraphs.invoice.lifecycle import CANCELLABLE, VALID, Status
from sat.pac import PacError, get_pac
from subgraphs.invoice.pac_accounts import chosen_pac
from subgraphs.invoice.service.common import ask_pac, locked, publish_status, record_transition, utcnow
from subgraphs.invoice.service.issuer import active_csd, get_issuer, open_csd
from subgraphs.invoice.service.queries import invoice_by_uuid

# Statuses where asking again with the same reason answers what is already under way.
_ASKED = (Status.CANCELLING, Status.CANCELLATION_PENDING, Status.CANCELLED)


def cancel_job_id(invoice_id) -> str:
    """One live cancellation job per invoice (see stamp_job_id)."""
    return f"cancel:{invoice_id}"


async def cancel_invoice(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, reason: str,
                         replacement_uuid: str | None) -> m.Invoice:
    """Record the request (CANCELLING + `invoice.cancellation_requested`); the PAC is not called here."""
    async with transaction(rt.sessionmaker) as session:
        inv = await locked(session, org, invoice_id)
        if inv.status in _ASKED and inv.cancellation_reason == reason:
            return inv  # asked again: same answer
        if inv.status not in CANCELLABLE:
            raise InputError.single("INVALID_STATUS", "Solo se pueden cancelar facturas timbradas.", ["id"])
        issues = cfdi.check_cancellation_request(reason, replacement_uuid, inv.uuid or "")
        if issues:
            field = {"replacement_uuid": "replacementUuid"}.get(issues[0].field_path, issues[0].field_path)
            raise InputError([UserError(field=[field], code=i.code, message=i.message_es) for i in issues])
        if replacement_uuid:
            replacement = await invoice_by_uuid(session, org, replacement_uuid)
            if replacement is None or replacement.status not in VALID:
                raise InputError.single("REPLACEMENT_NOT_FOUND",
                                        "El folio fiscal sustituto no es una factura timbrada de esta organización.",
                                        ["replacementUuid"])
        inv.cancellation_reason, inv.replacement_uuid = reason, replacement_uuid.upper() if replacement_uuid else None
        inv.cancellation_requested_at = utcnow()
        inv.pac_code = inv.pac_message = None
        await record_transition(session, inv, Status.CANCELLING, actor,
                                f"Motivo {reason}: {cfdi.CANCELLATION_REASONS[reason]}",
                                uuid=inv.uuid, reason=reason, replacement_uuid=inv.replacement_uuid)
    await publish_status(rt, inv)
    return inv


async def run_cancellation(rt: Runtime, invoice_id: uuid.UUID, *, attempt: int = 1, max_attempts: int = 5,
                           pac=None, default_pac=None) -> tuple[str, bool]:
    """The worker's part: ask the PAC to cancel an invoice in CANCELLING. Returns (status, retry);
    idempotent, and safe with several workers (row lock, skipped when busy)."""
    injected, pac = pac is not None, pac or default_pac or get_pac(rt.redis)
    async with transaction(rt.sessionmaker) as session:
        inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id)
                                   .with_for_update(skip_locked=True))
        if inv is None:
            return "BUSY_OR_MISSING", False
        if inv.status != Status.CANCELLING:
            return inv.status, False
        issuer = await get_issuer(session, inv.organization_id)
        csd_row = await active_csd(session, inv.organization_id)
        try:
            csd = await asyncio.to_thread(open_csd, csd_row, rt.settings) if csd_row else None  # off the loop
            async with chosen_pac(rt, session, inv.organization_id, pac, injected=injected, csd=csd) as (chosen, own):
                cfdi_ref = {"receiver_rfc": inv.customer_rfc, "total": inv.total} if own else {}
                answer = await ask_pac(chosen.cancel(inv.uuid, issuer.rfc, inv.cancellation_reason,
                                                     inv.replacement_uuid, **cfdi_ref), inv.id,
                                       operation="cancel", pac=chosen)
        except PacError as exc:
            if exc.transient and attempt < max_attempts:
                inv.pac_code, inv.pac_message = exc.code, exc.message
                return inv.status, True
            code = f"PAC_{exc.code}" if exc.code[:1].isdigit() else exc.code
            inv.pac_code, inv.pac_message = code, exc.message
            await record_transition(session, inv, Status.CANCELLATION_FAILED, None, f"{code}: {exc.message}",
                                    uuid=inv.uuid, code=code, message=exc.message)
        else:
            if answer.status == "CANCELLED":
                inv.cancelled_at = utcnow()
                await record_transition(session, inv, Status.CANCELLED, None, "Cancelada por el SAT",
                                        uuid=inv.uuid, reason=inv.cancellation_reason)
            elif answer.status == "REJECTED":
                await record_transition(session, inv, Status.CANCELLATION_REJECTED, None,
                                        "El receptor rechazó la cancelación", uuid=inv.uuid)
            else:
                await record_transition(session, inv, Status.CANCELLATION_PENDING, None,
                                        "En espera de aceptación del receptor")
    await publish_status(rt, inv)
    return inv.status, False


async def poll_cancellation(rt: Runtime, invoice_id: uuid.UUID, *, pac=None, default_pac=None) -> str:
    """Ask the PAC about a cancellation waiting for the receiver's answer."""
    injected, pac = pac is not None, pac or default_pac or get_pac(rt.redis)
    async with transaction(rt.sessionmaker) as session:
        inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id)
                                   .with_for_update(skip_locked=True))
        if inv is None or inv.status != Status.CANCELLATION_PENDING:
            return inv.status if inv else "BUSY_OR_MISSING"
        async with chosen_pac(rt, session, inv.organization_id, pac, injected=injected, csd=None) as (chosen, own):
            issuer = await get_issuer(session, inv.organization_id) if own else None
            status = await (chosen.status(inv.uuid, issuer_rfc=issuer.rfc, receiver_rfc=inv.customer_rfc,
                                          total=inv.total) if own else chosen.status(inv.uuid))
        if status == "CANCELLED":
            inv.cancelled_at = utcnow()
            await record_transition(session, inv, Status.CANCELLED, None, "El receptor aceptó la cancelación",
                                    uuid=inv.uuid, reason=inv.cancellation_reason)
        elif status == "REJECTED":
            await record_transition(session, inv, Status.CANCELLATION_REJECTED, None,
                                    "El receptor rechazó la cancelación", uuid=inv.uuid)
        else:
            return inv.status
    await publish_status(rt, inv)
    return inv.status


async def pending_cancellations(rt: Runtime) -> list[uuid.UUID]:
    async with rt.sessionmaker() as session:
        return list((await session.scalars(select(m.Invoice.id).where(
            m.Invoice.status == Status.CANCELLATION_PENDING.value))).all())
