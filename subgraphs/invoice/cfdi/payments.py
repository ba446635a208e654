"""Amounts of the Pagos 2.0 complement derived from what the caller knows: for each payment its
related documents (balance before, amount paid, per-document taxes). Mirrors totals.py for type P.

Policy (Guía de llenado del complemento de pagos 2.0):
- ImpSaldoInsoluto = ImpSaldoAnt - ImpPagado (document currency).
- Monto, when not given, = Σ ImpPagado / EquivalenciaDR, rounded half-up to MonedaP decimals.
- ImpuestosP groups the documents' TrasladosDR by (Impuesto, TipoFactor, TasaOCuota) and
  RetencionesDR by Impuesto, converting each DR amount to the payment currency (÷ EquivalenciaDR)
  and rounding the group half-up to 6 decimals (the XSD's limit) only when it has more.
- Totales are in MXN: Σ (amount × TipoCambioP) rounded half-up to 2 decimals.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

from . import catalogs
from .models import Payment, PaymentsComplement, PaymentTax, PaymentTotals, TaxTotal
from .totals import ZERO, round_money

_SIX = Decimal("0.000001")


def _to_payment_currency(value: Decimal, equivalence: Decimal | None) -> Decimal:
    return value / (equivalence or Decimal(1))


def _group_payment_taxes(payment: Payment) -> tuple[list[PaymentTax], list[PaymentTax]]:
    transferred: dict[tuple[str, str | None, Decimal | None], list[Decimal]] = {}
    withheld: dict[str, Decimal] = {}
    for doc in payment.related_documents:
        eq = doc.exchange_rate
        for t in doc.transferred_taxes:
            base_amount = transferred.setdefault((t.tax, t.factor_type, t.rate), [ZERO, ZERO])
            base_amount[0] += _to_payment_currency(t.base or ZERO, eq)
            base_amount[1] += _to_payment_currency(t.amount or ZERO, eq)
        for t in doc.withheld_taxes:
            withheld[t.tax] = withheld.get(t.tax, ZERO) + _to_payment_currency(t.amount or ZERO, eq)

    def q(value: Decimal) -> Decimal:  # at most 6 decimals, without padding exact values
        exponent = value.as_tuple().exponent
        return value if isinstance(exponent, int) and exponent >= -6 else value.quantize(_SIX, ROUND_HALF_UP)

    return (
        [
            PaymentTax(tax, factor, rate, q(base), None if factor == "Exento" else q(amount))
            for (tax, factor, rate), (base, amount) in transferred.items()
        ],
        [PaymentTax(tax, None, None, None, q(amount)) for tax, amount in withheld.items()],
    )


def compute_payment(payment: Payment) -> Payment:
    """A copy of `payment` with remaining balances, Monto (if missing) and ImpuestosP filled."""
    decimals = catalogs.currency_decimals(payment.currency)
    docs = [replace(d, remaining_balance=d.previous_balance - d.amount_paid) for d in payment.related_documents]
    amount = payment.amount
    if amount is None:
        amount = round_money(sum((_to_payment_currency(d.amount_paid, d.exchange_rate) for d in docs), ZERO), decimals)
    computed = replace(payment, related_documents=docs, amount=amount)
    transferred, withheld = _group_payment_taxes(computed)
    return replace(computed, transferred_taxes=transferred, withheld_taxes=withheld)


_IVA_TOTALS = {
    Decimal("0.16"): ("transferred_base_iva16", "transferred_iva16"),
    Decimal("0.08"): ("transferred_base_iva8", "transferred_iva8"),
    Decimal("0"): ("transferred_base_iva0", "transferred_iva0"),
}
_WITHHELD_TOTALS = {"001": "withheld_isr", "002": "withheld_iva", "003": "withheld_ieps"}


def compute_payments(complement: PaymentsComplement) -> PaymentsComplement:
    """A copy of `complement` with every payment computed and the MXN Totales summary filled."""
    payments = [compute_payment(p) for p in complement.payments]
    sums: dict[str, Decimal] = {}

    def add(field_name: str, value: Decimal, rate: Decimal) -> None:
        sums[field_name] = sums.get(field_name, ZERO) + value * rate

    for p in payments:
        fx = p.exchange_rate or Decimal(1)
        add("total_amount", p.amount, fx)
        for t in p.withheld_taxes:
            add(_WITHHELD_TOTALS[t.tax], t.amount or ZERO, fx)
        for t in p.transferred_taxes:
            if t.tax != "002":
                continue  # Totales only summarise IVA
            if t.factor_type == "Exento":
                add("exempt_base_iva", t.base or ZERO, fx)
            elif t.factor_type == "Tasa" and t.rate is not None and t.rate in _IVA_TOTALS:
                base_field, amount_field = _IVA_TOTALS[t.rate]
                add(base_field, t.base or ZERO, fx)
                add(amount_field, t.amount or ZERO, fx)
    totals = PaymentTotals(**{k: round_money(v, 2) for k, v in sums.items()})
    return replace(complement, payments=payments, totals=totals)


def taxes_paid(document_taxes: list[TaxTotal], amount_paid: Decimal, document_total: Decimal,
               decimals: int) -> list[PaymentTax]:
    """TrasladosDR of one paid document: each of its transferred taxes in the proportion this
    payment bears to the document's total (Guía de llenado Pagos 2.0, DoctoRelacionado →
    ImpuestosDR: "la parte proporcional del impuesto que corresponde al pago"), rounded half-up
    to the document currency's `decimals`. An Exento tax carries its base and no amount."""
    ratio = amount_paid / document_total if document_total else ZERO
    out = []
    for t in document_taxes:
        base = round_money((t.base or ZERO) * ratio, decimals)
        amount = None if t.factor_type == "Exento" else round_money(base * (t.rate or ZERO), decimals)
        out.append(PaymentTax(t.tax, t.factor_type, t.rate, base, amount))
    return out
