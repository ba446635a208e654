"""Stamping: the worker's part (seal, PAC, record the timbre); the request is stamp_requests.py.

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
from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import transaction
from shared.errors import InputError
from shared.runtime import Runtime
from sat import cfdi
from subgraphs.invoice import models as m
from subgraphs.invoice.lifecycle import Status
from sat.pac import PacError, StampResult, get_pac
from subgraphs.invoice.pac_accounts import chosen_pac
from subgraphs.invoice.service.common import ask_pac, publish_status, record_transition, utcnow
from subgraphs.invoice.service.documents import EVENT_LINK_TTL, document_path
from subgraphs.invoice.service.drafts import build_engine_invoice, build_engine_plain
from subgraphs.invoice.service.issuer import open_csd

log = logging.getLogger(__name__)

# Transient PAC errors are retried by arq (per job) and by the sweep (new jobs); this caps the
# total per stamping request so an unreachable PAC ends in STAMP_FAILED instead of looping.
MAX_TOTAL_ATTEMPTS = 20


def stamp_job_id(invoice_id) -> str:
    """One live stamping job per invoice: arq refuses a second while one is queued, deferred or
    running (the job keeps no result, so a later request can queue again)."""
    return f"stamp:{invoice_id}"


def _with_issuer_and_csd(*where, skip_locked: bool = False):
    """The invoice (row-locked), its issuer profile and active CSD (either may be None) in one
    query instead of three round trips."""
    return (select(m.Invoice, m.IssuerProfile, m.Certificate)
            .outerjoin(m.IssuerProfile, m.IssuerProfile.organization_id == m.Invoice.organization_id)
            .outerjoin(m.Certificate, and_(m.Certificate.organization_id == m.Invoice.organization_id,
                                           m.Certificate.active.is_(True)))
            .where(*where).limit(1).with_for_update(of=m.Invoice, skip_locked=skip_locked))


def warm_up() -> None:
    """Load, once per process and before the first job, what sealing and the sandbox PAC load
    lazily: SAT catalogs, the XSD and XSLT, the PAC's certificate (~0.3 s of CPU; paid inside the
    first stamps otherwise). Seals a sample CFDI with the sandbox's certificate and lets the
    sandbox check it; any refusal is fine, only the loading matters."""
    from datetime import timedelta

    from sat.pac import sandbox

    signer = sandbox.signer()
    sample = cfdi.Invoice(
        issued_at=(datetime.now(timezone.utc) - timedelta(hours=8)).replace(tzinfo=None, microsecond=0),
        place_of_issue="42501", voucher_type="I", exportation="01", currency="MXN", payment_form="03",
        payment_method="PUE", issuer=cfdi.Issuer(signer.rfc, signer.legal_name, "601"),
        receiver=cfdi.Receiver("EKU9003173C9", "ESCUELA KEMPER URGATE", "42501", "601", "G03"),
        concepts=[cfdi.Concept("84111506", Decimal(1), "E48", "Servicio", Decimal("100.00"), "02",
                               transferred_taxes=[cfdi.Tax("002", "Tasa", Decimal("0.160000"))])])
    try:
        xml = cfdi.prepare_for_stamping(cfdi.compute_totals(sample), signer, datetime.now(timezone.utc))
        sandbox.check_stampable(sandbox.parse_xml(xml), datetime.now(timezone.utc))
    except (cfdi.StampingRefused, PacError):
        pass


@dataclass
class StampOutcome:
    status: str
    retry: bool = False
    invoice: m.Invoice | None = None


@dataclass
class _Attempt:
    """What one stamping attempt learned: a timbre, a final failure, or a transient error to retry."""
    result: StampResult | None = None
    failure: tuple[str, str] | None = None
    retry: tuple[str, str] | None = None


async def stamp_invoice(rt: Runtime, invoice_id: uuid.UUID, *, attempt: int = 1, max_attempts: int = 5, pac=None,
                        default_pac=None) -> StampOutcome:
    """Stamp one invoice in STAMPING, exactly once, with no row lock held while the CFDI is sealed
    (CPU) or the PAC answers (network): a short claim (lock SKIP LOCKED, count the attempt, read
    what the CFDI needs), the seal and the PAC call outside any transaction, then a conditional
    finish (recorded only if still STAMPING for the same idempotency key). Two overlapping runs
    seal the same CFDI (Fecha fixed at the request, deterministic seal), the PAC answers both with
    the one timbre, and only the first finish records it. The claim, the sealing hop and the
    finish are shared with the stamps running concurrently in this process
    (service/stamp_batch.py); payment complements go to `stamp_alone`."""
    from subgraphs.invoice.service.stamp_batch import batcher_for  # it builds on this module

    return await batcher_for(rt).stamp(invoice_id, attempt=attempt, max_attempts=max_attempts, pac=pac,
                                       default_pac=default_pac)


async def stamp_alone(rt: Runtime, invoice_id: uuid.UUID, *, attempt: int = 1, max_attempts: int = 5, pac=None,
                      default_pac=None) -> StampOutcome:
    """Stamp one invoice in STAMPING in ONE transaction, its row (and, for a payment complement,
    the paid invoices) locked from building the CFDI until the timbre is recorded. The batcher
    sends payment complements (P) here: their balances depend on which other payments of the same
    invoices are stamped, so the locks must span the PAC call. Everything else is stamped in
    batches without a lock across sealing and the PAC (service/stamp_batch.py).

    `pac` replaces every PAC (tests inject one); `default_pac` (the worker's configured provider)
    is used only when the organization listed no PAC account of its own.
    """
    injected, pac = pac is not None, pac or default_pac or get_pac(rt.redis)
    async with transaction(rt.sessionmaker) as session:
        claimed = (await session.execute(_with_issuer_and_csd(m.Invoice.id == invoice_id, skip_locked=True))).first()
        if claimed is None:
            return StampOutcome("BUSY_OR_MISSING")
        inv, issuer, csd_row = claimed
        if inv.status != Status.STAMPING:
            return StampOutcome(inv.status, invoice=inv)
        inv.stamp_attempts = (inv.stamp_attempts or 0) + 1
        key, may_retry = inv.stamp_idempotency_key, attempt < max_attempts and inv.stamp_attempts < MAX_TOTAL_ATTEMPTS
        prepared = await _prepare(session, inv, issuer, csd_row, lock_related=inv.voucher_type == "P")
        retry = await _record(rt, session, inv, await _attempt(rt, inv, prepared, pac, injected, key,
                                                               may_retry=may_retry))
    if not retry:
        await publish_status(rt, inv)
    return StampOutcome(inv.status, retry=retry, invoice=inv)


_SEAL_ERROR = ("SEAL_ERROR", "No se pudo generar o sellar el comprobante con el CSD activo.")


@dataclass
class _Prepared:
    engine: cfdi.Invoice
    csd_row: m.Certificate


_NO_CSD = ("CSD_REQUIRED", "No hay un certificado de sello digital activo.")


async def _prepare(session: AsyncSession, inv: m.Invoice, issuer: m.IssuerProfile | None,
                   csd_row: m.Certificate | None, *, lock_related: bool) -> _Prepared | tuple[str, str]:
    """The engine's invoice and the CSD to seal it with, or the (code, message) that refuses it."""
    if csd_row is None or issuer is None:
        return _NO_CSD
    try:
        engine = await build_engine_invoice(session, inv, issuer, inv.issued_at, lock_related=lock_related)
    except Exception as exc:  # noqa: BLE001 - sorted by _refusal
        return _refusal(inv, exc)
    return _Prepared(engine, csd_row)


def _prepare_plain(inv: m.Invoice, issuer: m.IssuerProfile | None,
                   csd_row: m.Certificate | None) -> _Prepared | tuple[str, str]:
    """`_prepare` for an invoice that is not a payment complement: reads nothing, blocking CPU (the
    batch runs it in its sealing thread)."""
    if csd_row is None or issuer is None:
        return _NO_CSD
    try:
        engine = build_engine_plain(inv, issuer, inv.issued_at)
    except Exception as exc:  # noqa: BLE001 - sorted by _refusal
        return _refusal(inv, exc)
    return _Prepared(engine, csd_row)


def _refusal(inv: m.Invoice, exc: Exception) -> tuple[str, str]:
    """Why a CFDI could not be built: the draft's own error (e.g. a paid document cancelled after
    it was saved), or SEAL_ERROR for anything else (it will not fix itself)."""
    if isinstance(exc, InputError):
        return (exc.errors[0].code, exc.errors[0].message)
    log.error("could not build the CFDI", exc_info=exc, extra={"invoice_id": str(inv.id)})
    return _SEAL_ERROR


async def _attempt(rt: Runtime, inv: m.Invoice, prepared: _Prepared | tuple[str, str], pac, injected: bool,
                   key: str | None, *, may_retry: bool) -> _Attempt:
    """Seal the CFDI and ask the PAC; touches no row (the caller records the outcome)."""
    if isinstance(prepared, tuple):
        return _Attempt(failure=prepared)
    # Off the event loop, the stored key's first load (unseal, parse) included.
    sealed = await asyncio.to_thread(_seal, rt, inv, prepared, utcnow())
    if isinstance(sealed, _Attempt):
        return sealed
    # Own session: the organization's PAC accounts are read before the call, and no connection is
    # held while the PAC answers (none at all with an injected PAC).
    try:
        async with rt.sessionmaker() as session, chosen_pac(rt, session, inv.organization_id, pac,
                                                            injected=injected, csd=None) as (chosen, own):
            await session.close()
            return await _ask(inv, sealed, chosen, own, key, may_retry=may_retry)
    except PacError as exc:  # the organization's accounts could not be opened
        return _pac_failure(exc, may_retry=may_retry)


def _seal(rt: Runtime, inv: m.Invoice, prepared: _Prepared, now: datetime) -> bytes | _Attempt:
    """The sealed CFDI, or the failure that refuses it (blocking: CPU, run off the event loop).
    Everything SAT's matrices and schema would refuse is found here, never first by the PAC
    (rules, catalogs in force on the date, seal, lean XSD)."""
    try:
        return cfdi.prepare_for_stamping(prepared.engine, open_csd(prepared.csd_row, rt.settings), now)
    except cfdi.StampingRefused as exc:
        first = exc.issues[0]
        return _Attempt(failure=(first.code, "; ".join(f"{i.code}: {i.message_es}" for i in exc.issues[:5])))
    except Exception:  # noqa: BLE001 - a CFDI we cannot build or seal will not fix itself
        log.exception("could not build or seal the CFDI", extra={"invoice_id": str(inv.id)})
        return _Attempt(failure=_SEAL_ERROR)


async def _ask(inv: m.Invoice, xml: bytes, chosen, own: bool, key: str | None, *, may_retry: bool) -> _Attempt:
    """The PAC's answer to the sealed CFDI as an attempt's outcome (the organization's own
    accounts take the idempotency key; stamping needs no CSD)."""
    try:
        call = chosen.stamp(xml, idempotency_key=key) if own else chosen.stamp(xml)
        return _Attempt(result=await ask_pac(call, inv.id, operation="stamp", pac=chosen))
    except PacError as exc:
        return _pac_failure(exc, may_retry=may_retry)


def _pac_failure(exc: PacError, *, may_retry: bool) -> _Attempt:
    if exc.transient and may_retry:
        return _Attempt(retry=(exc.code, exc.message))
    return _Attempt(failure=(exc.code, exc.message))


_invoices, _history = m.Invoice.__table__, m.InvoiceEvent.__table__
# What the event's invoice reference needs (common.invoice_ref), returned by the batch's finishing UPDATE.
_REF_COLUMNS = ("id", "organization_id", "series", "folio", "voucher_type", "total", "currency", "customer_name",
                "customer_rfc", "customer_email", "created_by", "status")


def _changes(outcome: _Attempt) -> tuple[Status | None, str | None, dict]:
    """What an attempt changes on the invoice: the status it moves to (None: stays STAMPING for a
    retry), the history row's reason, and the columns to set."""
    if outcome.retry is not None:
        code, message = outcome.retry
        return None, None, {"pac_code": code, "pac_message": message}
    if (result := outcome.result) is not None:
        why = "Timbre recuperado (ya timbrado)" if result.previously_stamped else "Timbrado por el PAC"
        return Status.STAMPED, why, dict(uuid=result.uuid, stamped_at=result.stamped_at, xml=result.xml.decode("utf-8"),
                                         pac_certificate_number=result.sat_certificate_number,
                                         pac_code=None, pac_message=None)
    code, message = outcome.failure
    return Status.STAMP_FAILED, f"{code}: {message}", {"pac_code": code, "pac_message": message}


def _event_fields(rt: Runtime, inv: m.Invoice, to: Status) -> dict:
    """The move's event fields beyond the invoice reference (`inv` already carries the outcome)."""
    if to is Status.STAMP_FAILED:
        return {"code": inv.pac_code, "message": inv.pac_message}
    exp = utcnow() + EVENT_LINK_TTL
    return dict(uuid=inv.uuid, stamped_at=inv.stamped_at, xml_path=document_path(rt.settings, inv.id, "xml", exp),
                pdf_path=document_path(rt.settings, inv.id, "pdf", exp))


async def _record(rt: Runtime, session: AsyncSession, inv: m.Invoice, outcome: _Attempt) -> bool:
    """The attempt's outcome on the (locked, still STAMPING) invoice; True when it is to be retried."""
    to, why, values = _changes(outcome)
    for name, value in values.items():
        setattr(inv, name, value)
    if to is None:
        return True
    await record_transition(session, inv, to, None, why, **_event_fields(rt, inv, to))
    return False
