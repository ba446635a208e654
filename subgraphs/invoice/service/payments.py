"""Payment complements (type P): which invoices can be paid, what is still owed, and the engine's
Pagos 2.0 complement for a draft (balances and installments from this organization's stamped
payments; each paid document's taxes prorated by the engine)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import InputError, UserError
from sat import cfdi
from subgraphs.invoice import models as m
from sat.cfdi.totals import round_money
from subgraphs.invoice.draft import Draft, client_path
from subgraphs.invoice.lifecycle import PAYABLE, VALID


def is_payable(row: m.Invoice | None, org: uuid.UUID) -> bool:
    """A stamped, still valid PPD income invoice of this organization."""
    return (row is not None and row.organization_id == org and row.status in PAYABLE and row.voucher_type == "I"
            and (row.document or {}).get("payment_method") == "PPD")


async def paid_so_far(session: AsyncSession, org: uuid.UUID, target_ids: list[str],
                      exclude: uuid.UUID | None) -> dict[str, tuple[int, Decimal]]:
    """{target id: (installments, amount)} already settled by this organization's valid P
    invoices, for all `target_ids` in one query."""
    probes = [m.Invoice.document.contains({"payments": [{"related_documents": [{"invoice_id": t}]}]}) for t in target_ids]
    q = select(m.Invoice.id, m.Invoice.document).where(
        m.Invoice.organization_id == org, m.Invoice.voucher_type == "P",
        m.Invoice.status.in_([s.value for s in VALID]), or_(*probes))
    out = {t: (0, Decimal(0)) for t in target_ids}
    for inv_id, doc in (await session.execute(q)).all():
        if inv_id == exclude:
            continue
        for p in Draft.model_validate(doc).payments:
            for d in p.related_documents:
                if d.invoice_id in out:
                    count, paid = out[d.invoice_id]
                    out[d.invoice_id] = (count + 1, paid + d.amount_paid)
    return out


async def check_payments(session: AsyncSession, org: uuid.UUID, draft: Draft) -> list[UserError]:
    """Each paid document exists, is payable, and is not paid beyond its balance. Canonicalises
    each document's id (balances are matched on that exact string)."""
    errors: list[UserError] = []
    paying: list[tuple[m.Invoice, Decimal, list[str]]] = []
    for i, p in enumerate(draft.payments):
        for j, d in enumerate(p.related_documents):
            try:
                target = await session.get(m.Invoice, uuid.UUID(d.invoice_id))
            except ValueError:
                target = None
            path = ("payments", i, "related_documents", j)
            if not is_payable(target, org):
                errors.append(UserError(field=client_path(*path, "invoice_id"), code="DOCUMENT_NOT_PAYABLE",
                                        message="La factura relacionada no existe, no está timbrada o no es PPD."))
                continue
            d.invoice_id = str(target.id)
            paying.append((target, d.amount_paid, client_path(*path, "amount_paid")))
    settled = await paid_so_far(session, org, [str(t.id) for t, _, _ in paying], None) if paying else {}
    for target, amount, path in paying:
        owed = target.total - settled[str(target.id)][1]
        if amount > owed:
            owed_text = round_money(owed, cfdi.currency_decimals(target.currency))
            errors.append(UserError(field=path, code="AMOUNT_EXCEEDS_BALANCE",
                                    message=f"El pago excede el saldo pendiente de la factura ({owed_text})."))
    return errors


async def payments_complement(session: AsyncSession, inv: m.Invoice, draft: Draft, issued_at: datetime, *,
                              lock_related: bool) -> cfdi.PaymentsComplement:
    """The Pagos 2.0 complement of a P draft. `lock_related` (when stamping) locks each paid
    invoice's row, in id order so two payments sharing documents cannot deadlock; they are
    checked again, as one may have been cancelled since the draft was saved."""
    target_ids = sorted({d.invoice_id for p in draft.payments for d in p.related_documents})
    q = select(m.Invoice).where(m.Invoice.id.in_([uuid.UUID(t) for t in target_ids])).order_by(m.Invoice.id)
    targets = {str(r.id): r for r in (await session.scalars(q.with_for_update() if lock_related else q)).all()}
    for t in target_ids:
        if not is_payable(targets.get(t), inv.organization_id):
            raise InputError.single("DOCUMENT_NOT_PAYABLE", "La factura relacionada ya no está vigente o no es PPD.",
                                    ["payments"])
    settled = await paid_so_far(session, inv.organization_id, target_ids, inv.id)
    plist = []
    for p in draft.payments:
        docs = []
        for d in p.related_documents:
            target = targets[d.invoice_id]
            n, paid = settled[d.invoice_id]
            places = cfdi.currency_decimals(target.currency)
            previous = round_money(target.total - paid, places)
            paid_doc = cfdi.parse_cfdi(target.xml.encode("utf-8")) if target.xml else None
            taxes = cfdi.prorate_document_taxes(paid_doc.transferred_totals if paid_doc else [], target.total, d.amount_paid, places)
            docs.append(cfdi.RelatedDocument(
                uuid=target.uuid, currency=target.currency, installment=n + 1, previous_balance=previous,
                amount_paid=d.amount_paid, remaining_balance=previous - d.amount_paid,
                tax_object="02" if taxes else "01", series=target.series, folio=str(target.folio),
                exchange_rate=Decimal("1") if target.currency == p.currency else None,
                transferred_taxes=taxes))
        plist.append(cfdi.Payment(
            paid_at=p.paid_at or issued_at, payment_form=p.payment_form, currency=p.currency, amount=None,
            exchange_rate=p.exchange_rate or Decimal("1"), operation_number=p.operation_number,
            related_documents=docs))
    return cfdi.compute_payments(cfdi.PaymentsComplement(totals=cfdi.PaymentTotals(Decimal(0)), payments=plist))
