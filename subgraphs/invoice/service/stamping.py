"""Stamping: the request (`stampInvoice`) and the worker's part (seal, PAC, record the timbre).

The request only moves the invoice to STAMPING: its `invoice.stamping_requested` event, written
in the same transaction, is what queues the work (the relay turns it into the arq job
`stamp_job_id(invoice)`, workers/stamping.py). So an accepted request is never left without a
job, whatever Redis was doing at that moment; the sweep (`stuck_stamping`) is the safety net.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from shared.db import transaction
from shared.errors import InputError, UserError
from shared.runtime import Runtime
from subgraphs.invoice import cfdi
from subgraphs.invoice import models as m
from subgraphs.invoice.lifecycle import EDITABLE, Status
from subgraphs.invoice.pac import PacError, get_pac
from subgraphs.invoice.pac_accounts import chosen_pac
from subgraphs.invoice.service.common import ask_pac, locked, publish_status, record_transition, utcnow
from subgraphs.invoice.service.documents import EVENT_LINK_TTL, document_path
from subgraphs.invoice.service.drafts import build_engine_invoice, evaluate
from subgraphs.invoice.service.issuer import active_csd, get_issuer, open_csd

log = logging.getLogger(__name__)

# Transient PAC errors are retried by arq (per job) and by the sweep (new jobs); this caps the
# total per stamping request so an unreachable PAC ends in STAMP_FAILED instead of looping.
MAX_TOTAL_ATTEMPTS = 20


def stamp_job_id(invoice_id) -> str:
    """One live stamping job per invoice: arq refuses a second while one is queued, deferred or
    running (the job keeps no result, so a later request can queue again)."""
    return f"stamp:{invoice_id}"


async def request_stamp(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, key: str) -> m.Invoice:
    key = (key or "").strip()
    if not key or len(key) > 200:
        raise InputError.single("INVALID_IDEMPOTENCY_KEY", "La clave de idempotencia es obligatoria (máx. 200).",
                                ["idempotencyKey"])
    async with transaction(rt.sessionmaker) as session:
        inv = await locked(session, org, invoice_id)
        if inv.stamp_idempotency_key == key:
            return inv  # the same request again: the same answer, nothing new
        if inv.status not in EDITABLE:
            raise InputError.single("INVALID_STATUS", "La factura no se puede timbrar en su estado actual.", ["id"])
        issuer = await get_issuer(session, org)
        csd_row = await active_csd(session, org)
        if csd_row is None:
            raise InputError.single("CSD_REQUIRED", "Carga y activa un certificado de sello digital (CSD).", ["id"])
        if csd_row.valid_to < utcnow():
            raise InputError.single("CERTIFICATE_EXPIRED", "El certificado activo está vencido.", ["id"])
        engine = await evaluate(session, inv, issuer)
        if inv.issues:
            raise InputError([UserError(field=["id"], code="INVOICE_HAS_ISSUES",
                                        message="La factura tiene errores de validación: " +
                                        "; ".join(i["message"] for i in inv.issues))])
        inv.issued_at = engine.issued_at
        inv.stamp_idempotency_key = key
        inv.stamp_attempts = 0
        inv.pac_code = inv.pac_message = None
        await record_transition(session, inv, Status.STAMPING, actor, "Timbrado solicitado", idempotency_key=key)
    await publish_status(rt, inv)
    return inv


@dataclass
class StampOutcome:
    status: str
    retry: bool = False
    invoice: m.Invoice | None = None


async def stamp_invoice(rt: Runtime, invoice_id: uuid.UUID, *, attempt: int = 1, max_attempts: int = 5, pac=None) -> StampOutcome:
    """Stamp one invoice in STAMPING. Idempotent, and safe with several workers (row lock)."""
    injected, pac = pac is not None, pac or get_pac(rt.redis)
    retry = False
    async with transaction(rt.sessionmaker) as session:
        inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id)
                                   .with_for_update(skip_locked=True))
        if inv is None:
            return StampOutcome("BUSY_OR_MISSING")
        if inv.status != Status.STAMPING:
            return StampOutcome(inv.status, invoice=inv)
        inv.stamp_attempts = (inv.stamp_attempts or 0) + 1
        issuer = await get_issuer(session, inv.organization_id)
        csd_row = await active_csd(session, inv.organization_id)
        failure: tuple[str, str] | None = None
        result = None
        if csd_row is None or issuer is None:
            failure = ("CSD_REQUIRED", "No hay un certificado de sello digital activo.")
        else:
            xml = None
            try:
                engine = await build_engine_invoice(session, inv, issuer, inv.issued_at, lock_related=True)
                # Everything SAT's matrices and schema would refuse is found here, never first by
                # the PAC (rules, catalogs in force on the date, seal, lean XSD); off the event loop,
                # the stored key's first load (unseal, parse) included.
                now = utcnow()
                xml = await asyncio.to_thread(
                    lambda: cfdi.prepare_for_stamping(engine, open_csd(csd_row, rt.settings), now))
            except cfdi.StampingRefused as exc:
                first = exc.issues[0]
                failure = (first.code, "; ".join(f"{i.code}: {i.message_es}" for i in exc.issues[:5]))
            except InputError as exc:  # e.g. a paid document cancelled after the draft was saved
                failure = (exc.errors[0].code, exc.errors[0].message)
            except Exception:  # noqa: BLE001 - a CFDI we cannot build or seal will not fix itself
                log.exception("could not build or seal the CFDI", extra={"invoice_id": str(inv.id)})
                failure = ("SEAL_ERROR", "No se pudo generar o sellar el comprobante con el CSD activo.")
            if xml is not None:
                try:
                    async with chosen_pac(rt, session, inv.organization_id, pac, injected=injected,
                                          csd=None) as (chosen, own):  # stamping needs no CSD
                        call = chosen.stamp(xml, idempotency_key=inv.stamp_idempotency_key) if own else chosen.stamp(xml)
                        result = await ask_pac(call, inv.id, operation="stamp", pac=chosen)
                except PacError as exc:
                    if exc.transient and attempt < max_attempts and inv.stamp_attempts < MAX_TOTAL_ATTEMPTS:
                        inv.pac_code, inv.pac_message = exc.code, exc.message
                        retry = True
                    else:
                        failure = (exc.code, exc.message)
        if result is not None:
            inv.uuid, inv.stamped_at, inv.xml = result.uuid, result.stamped_at, result.xml.decode("utf-8")
            inv.pac_certificate_number = result.sat_certificate_number
            inv.pac_code = inv.pac_message = None
            exp = utcnow() + EVENT_LINK_TTL
            await record_transition(
                session, inv, Status.STAMPED, None,
                "Timbre recuperado (ya timbrado)" if result.previously_stamped else "Timbrado por el PAC",
                uuid=inv.uuid, stamped_at=inv.stamped_at, xml_path=document_path(rt.settings, inv.id, "xml", exp),
                pdf_path=document_path(rt.settings, inv.id, "pdf", exp))
        elif failure is not None:
            inv.pac_code, inv.pac_message = failure
            await record_transition(session, inv, Status.STAMP_FAILED, None, f"{failure[0]}: {failure[1]}",
                                    code=failure[0], message=failure[1])
    if not retry:
        await publish_status(rt, inv)
    return StampOutcome(inv.status, retry=retry, invoice=inv)

