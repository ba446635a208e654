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


def payment_totals(payments: list[Payment]) -> PaymentTotals:
    """pago20:Totales of computed payments: each field = round(Σ amount × TipoCambioP, 2).

    Pagos matrix CRP20201..CRP20211, e.g. CRP20211 "El valor del campo MontoTotalPagos no es igual
    al redondeo de la suma del resultado de multiplicar cada uno de los atributos Monto por el valor
    registrado en el atributo TipoCambioP de cada nodo Pago."
    """
    sums: dict[str, Decimal] = {}

    def add(field_name: str, value: Decimal, rate: Decimal) -> None:
        sums[field_name] = sums.get(field_name, ZERO) + value * rate

    for p in payments:
        fx = p.exchange_rate or Decimal(1)
        add("total_amount", p.amount, fx)
        for t in p.withheld_taxes:
            if t.tax in _WITHHELD_TOTALS:  # an unknown Impuesto is refused by CRP20250, not here
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
    return PaymentTotals(**{k: round_money(v, 2) for k, v in sums.items()})


def compute_payments(complement: PaymentsComplement) -> PaymentsComplement:
    """A copy of `complement` with every payment computed and the MXN Totales summary filled."""
    payments = [compute_payment(p) for p in complement.payments]
    return replace(complement, payments=payments, totals=payment_totals(payments))


def prorate_document_taxes(
    transferred_totals: list[TaxTotal], document_total: Decimal, amount_paid: Decimal, decimals: int
) -> list[PaymentTax]:
    """TrasladosDR of a payment of `amount_paid` on a document whose summary transfers are
    `transferred_totals` (its cfdi:Impuestos/Traslados) and whose Total is `document_total`.

    Guía de llenado del complemento de pagos: each related document carries the taxes of the
    invoice in proportion to what this payment covers (ImpPagado / Total). BaseDR = round(Base ×
    ratio) and ImporteDR = round(BaseDR × TasaOCuotaDR), in the document currency's decimals, so each
    ImporteDR lies inside the BaseDR × TasaOCuotaDR tolerance SAT checks (CRP20261). Exempt lines
    carry BaseDR only (CRP20258). Pure: the service passes the stamped invoice's summary.
    """
    ratio = amount_paid / document_total if document_total else ZERO
    out = []
    for t in transferred_totals:
        base = round_money((t.base or ZERO) * ratio, decimals)
        if t.factor_type == "Exento":
            out.append(PaymentTax(t.tax, t.factor_type, None, base, None))
        else:
            out.append(PaymentTax(t.tax, t.factor_type, t.rate, base, round_money(base * (t.rate or ZERO), decimals)))
    return out
