"""Drafts: create and edit an invoice before stamping. The client's input becomes a typed Draft
(subgraphs/invoice/draft.py) once; its references (customer, paid documents, series) are checked
here; totals and SAT issues come from the engine."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import transaction
from shared.errors import InputError, UserError
from shared.runtime import Runtime
from shared.validation import fits_money
from sat import cfdi
from subgraphs.invoice import models as m
from sat.cfdi.rules import PUBLICO_EN_GENERAL
from subgraphs.invoice.draft import Draft, ReceiverSnapshot, client_path, engine_invoice, parse
from subgraphs.invoice.lifecycle import EDITABLE, Status
from subgraphs.invoice.service.common import local_now, locked
from subgraphs.invoice.service.issuer import get_issuer, series_problem, take_folio
from subgraphs.invoice.service.payments import check_payments, payments_complement


async def _customer(session: AsyncSession, org: uuid.UUID, customer_id) -> m.Customer | None:
    try:
        row = await session.get(m.Customer, uuid.UUID(str(customer_id)))
    except ValueError:
        return None
    return row if row is not None and row.organization_id == org and row.deleted_at is None else None


_CUSTOMER_NOT_FOUND = UserError(field=client_path("customer_id"), code="CUSTOMER_NOT_FOUND", message="El cliente no existe.")


def _receiver(draft: Draft, issuer: m.IssuerProfile, customer: m.Customer | None) -> ReceiverSnapshot:
    """The receiver snapshot: the customer as it is now, or "público en general" for a global invoice."""
    payment = draft.type == "P"
    if customer is not None:
        return ReceiverSnapshot(rfc=customer.rfc, name=customer.legal_name, postal_code=customer.postal_code,
                                tax_regime=customer.tax_regime, email=customer.email,
                                cfdi_use=draft.cfdi_use or ("CP01" if payment else customer.cfdi_use))
    return ReceiverSnapshot(rfc=cfdi.models.GENERIC_RFC_NATIONAL, name=PUBLICO_EN_GENERAL,
                            postal_code=issuer.postal_code, tax_regime="616", email=None,
                            cfdi_use="CP01" if payment else "S01")


async def accept_draft(session: AsyncSession, org: uuid.UUID, issuer: m.IssuerProfile | None, data: dict,
                       *, current: Draft | None = None) -> Draft:
    """The client's input as a Draft whose references hold, or InputError naming every problem
    (nothing written)."""
    if issuer is None:
        raise InputError.single("ISSUER_REQUIRED", "Primero configura los datos fiscales del emisor.", None)
    draft, errors = parse(data, current=current)
    # Looked up even when the rest is malformed, so the client hears every problem at once.
    customer_id = draft.customer_id if draft else data.get("customer_id") or (current and current.customer_id)
    malformed = any(e.field == _CUSTOMER_NOT_FOUND.field for e in errors)
    customer = await _customer(session, org, customer_id) if customer_id and not malformed else None
    if customer_id and customer is None and not malformed:
        errors.append(_CUSTOMER_NOT_FOUND)
    if draft is None:
        raise InputError(errors)
    draft.series = (draft.series or issuer.default_series).strip().upper()
    if problem := series_problem(draft.series):
        errors.append(UserError(field=client_path("series"), code="INVALID_SERIES", message=problem))
    draft.receiver = _receiver(draft, issuer, customer)
    if draft.type == "P":
        errors += await check_payments(session, org, draft)
    if errors:
        raise InputError(errors)
    return draft


async def build_engine_invoice(session: AsyncSession, inv: m.Invoice, issuer: m.IssuerProfile,
                               issued_at: datetime, *, lock_related: bool = False) -> cfdi.Invoice:
    """The engine's Invoice for a stored draft, totals computed."""
    draft = Draft.model_validate(inv.document)
    payments = (await payments_complement(session, inv, draft, issued_at, lock_related=lock_related)
                if draft.type == "P" else None)
    return _engine(draft, inv, issuer, issued_at, payments)


def build_engine_plain(inv: m.Invoice, issuer: m.IssuerProfile, issued_at: datetime) -> cfdi.Invoice:
    """`build_engine_invoice` for an invoice that is not a payment complement: it reads nothing,
    so it can run in a thread (blocking CPU: the draft's validation and totals)."""
    return _engine(Draft.model_validate(inv.document), inv, issuer, issued_at)


def _engine(draft: Draft, inv: m.Invoice, issuer: m.IssuerProfile, issued_at: datetime, payments=None) -> cfdi.Invoice:
    return cfdi.compute_totals(engine_invoice(draft, issuer=issuer, series=inv.series, folio=inv.folio,
                                              issued_at=issued_at, payments=payments))


def _apply_totals(inv: m.Invoice, engine: cfdi.Invoice) -> None:
    inv.currency = engine.currency if engine.voucher_type != "P" else "MXN"
    inv.exchange_rate = engine.exchange_rate
    inv.subtotal = engine.subtotal or Decimal(0)
    inv.discount = engine.discount
    inv.total_transferred = engine.total_transferred
    inv.total_withheld = engine.total_withheld
    inv.total = engine.total or Decimal(0)
    if engine.voucher_type == "P" and engine.payments is not None:
        inv.total = engine.payments.totals.total_amount
    # Each amount is within its column, but their products and sums may not be.
    if not all(map(fits_money, (inv.subtotal, inv.discount, inv.total_transferred, inv.total_withheld, inv.total))):
        raise InputError.single("AMOUNT_TOO_LARGE", "Los importes de la factura exceden el máximo admitido "
                                "(999,999,999,999.999999).", ["input", "concepts"])


async def evaluate(session: AsyncSession, inv: m.Invoice, issuer: m.IssuerProfile) -> cfdi.Invoice:
    """Totals and SAT issues of the stored draft as of now."""
    now = local_now(issuer.postal_code)
    engine = await build_engine_invoice(session, inv, issuer, now)
    _judge(inv, engine, now)
    return engine


def evaluate_plain(inv: m.Invoice, issuer: m.IssuerProfile) -> cfdi.Invoice:
    """`evaluate` for an invoice that is not a payment complement: it reads nothing, so it can run
    in a thread (blocking CPU: the totals and SAT's rules)."""
    now = local_now(issuer.postal_code)
    engine = build_engine_plain(inv, issuer, now)
    _judge(inv, engine, now)
    return engine


def _judge(inv: m.Invoice, engine: cfdi.Invoice, now: datetime) -> None:
    """The draft's SAT issues and totals as of `now`, set on `inv`."""
    inv.issues = [{"code": i.code, "field": i.field_path, "message": i.message_es}
                  for i in cfdi.check_invoice(engine, now)]
    _apply_totals(inv, engine)


def _store(inv: m.Invoice, draft: Draft) -> None:
    """The draft and the receiver columns that lists and search read."""
    inv.document = draft.row()
    inv.customer_id = draft.customer_id
    inv.customer_rfc, inv.customer_name = draft.receiver.rfc, draft.receiver.name
    inv.customer_email = draft.receiver.email


async def create_invoice(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, data: dict) -> m.Invoice:
    async with transaction(rt.sessionmaker) as session:
        issuer = await get_issuer(session, org)
        draft = await accept_draft(session, org, issuer, data)
        inv = m.Invoice(id=uuid.uuid4(), organization_id=org, created_by=actor, voucher_type=draft.type,
                        status=Status.DRAFT.value, series=draft.series)
        _store(inv, draft)
        await evaluate(session, inv, issuer)  # totals and issues need no folio
        # The folio last, just before the insert and the commit: taking it locks the series row
        # until commit, so everything slow (validation, totals) has to be done by now, or every
        # creation in the series waits behind it (subgraphs/invoice/README.md, "Folios").
        inv.folio = await take_folio(session, org, draft.series)
        session.add(inv)
        await session.flush()
        session.add(m.InvoiceEvent(invoice_id=inv.id, organization_id=org, actor_id=actor, from_status=None,
                                   to_status=Status.DRAFT.value, reason="Creación"))
        return inv


async def update_invoice(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, data: dict) -> m.Invoice:
    async with transaction(rt.sessionmaker) as session:
        inv = await locked(session, org, invoice_id)
        if inv.status not in EDITABLE:
            raise InputError.single("INVALID_STATUS", "Solo se pueden editar borradores o facturas con error de timbrado.",
                                    ["id"])
        issuer = await get_issuer(session, org)
        draft = await accept_draft(session, org, issuer, data, current=Draft.model_validate(inv.document))
        _store(inv, draft)
        await evaluate(session, inv, issuer)
        if draft.series != inv.series:  # a new folio, taken last for the same reason as in create_invoice
            inv.series, inv.folio = draft.series, await take_folio(session, org, draft.series)
        return inv
