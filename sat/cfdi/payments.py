"""Amounts of the Pagos 2.0 complement derived from what the caller knows: for each payment its
related documents (balance before, amount paid, per-document taxes). Mirrors totals.py for type P.

Policy (Guía de llenado del complemento de pagos 2.0):
- ImpSaldoInsoluto = ImpSaldoAnt - ImpPagado (document currency).
- Monto, when not given, = Σ ImpPagado / EquivalenciaDR, rounded half-up to MonedaP decimals.
- ImpuestosP groups the documents' TrasladosDR by (Impuesto, TipoFactor, TasaOCuota) and
  RetencionesDR by Impuesto, converting each DR amount to the payment currency (÷ EquivalenciaDR)
  and rounding the group half-up to 6 decimals (the XSD's limit) only when it has more.
- Totales are in MXN: Σ (amount × TipoCambioP) rounded half-up to 2 decimals.
- In a Pago mixing currencies, an EquivalenciaDR of 1 is written 1.0000000000 (CRP20277; see
  `ten_decimal_equivalence`), and `paid_amount_bounds` gives each document's variation margin.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal

from . import catalogs
from .models import Payment, PaymentsComplement, PaymentTax, PaymentTotals, RelatedDocument, TaxTotal
from .totals import ZERO, _written_decimals, quotient_bounds, round_money

_SIX = Decimal("0.000001")
ONE_TEN_DECIMALS = Decimal("1.0000000000")


def _to_payment_currency(value: Decimal, equivalence: Decimal | None) -> Decimal:
    # Dividing by 1 (however many zeros it is written with) must not change how a value is
    # written: Decimal("50.00") / Decimal("1.0000000000") is Decimal("50").
    return value if equivalence is None or equivalence == 1 else value / equivalence


def margins_apply(payment: Payment) -> bool:
    """SAT computes variation margins only when a document's MonedaDR differs from MonedaP.

    Pagos matrix CRP20217: "Al ser mismas monedas, no se calculan los márgenes de variación
    (límites inferior y superior) por efecto de redondeo."; CRP20275: "Cuando la moneda registrada
    en el Documento Relacionado sea diferente a la del Pago, primero se debe calcular el margen de
    variación..."
    """
    return any(d.currency != payment.currency for d in payment.related_documents)


def ten_decimal_equivalence(payment: Payment) -> bool:
    """CRP20277's situation: "Cuando existan operaciones con más de un Documento relacionado en
    donde al menos uno de ellos contenga la misma moneda que la del Pago, para la fórmula en el
    cálculo del margen de variación se deben considerar 10 decimales en la EquivalenciaDR cuando el
    valor sea 1." Read together with CRP20217 (no margins when every document shares MonedaP),
    that is a Pago whose documents are partly in MonedaP and partly not (hence more than one).
    """
    return margins_apply(payment) and any(d.currency == payment.currency for d in payment.related_documents)


def paid_amount_bounds(doc: RelatedDocument, payment: Payment) -> tuple[Decimal, Decimal] | None:
    """[lower, upper] of one document's ImpPagado converted to MonedaP (ImpPagado / EquivalenciaDR),
    in MonedaP decimals; None without a usable EquivalenciaDR (CRP20237 reports a missing one).

    The formula is DERIVED, not transcribed: SAT's Guía de llenado del complemento de pagos 2.0
    (which gives the Pagos formulas) is not in shared/data/sat-docs, so it combines the Pagos matrix
    rows CRP20275 ("el cálculo de los limites inferior y superior de cada importe pagado. El límite
    inferior se debe truncar y el límite superior se debe redondear, al número de decimales que
    soporte la moneda. Los límites inferior y superior se calculan de manera individual para cada
    importe pagado"), CRP20276 (the limits are summed in the payment currency and compared with
    Monto) and CRP20277 (EquivalenciaDR 1 counts with 10 decimals) with the Anexo 20 Guía's margin
    method as `totals.concept_amount_bounds` applies it (each input ± half a unit of its last
    written decimal; pregunta 41: lower truncated, upper rounded up):

        lower = trunc((ImpPagado - 10^-nI/2) / (EquivalenciaDR + 10^-nE/2), MonedaP decimals)
        upper = ceil((ImpPagado + 10^-nI/2) / (EquivalenciaDR - 10^-nE/2), MonedaP decimals)

    nI = MonedaDR decimals (build.py always writes ImpPagado with them); nE = the decimals
    EquivalenciaDR is written with, or 10 when it is 1 in CRP20277's situation. A document in MonedaP
    without EquivalenciaDR counts as 1.0000000000 (CRP20238: its value is 1).
    """
    eq = doc.exchange_rate
    if eq is None and doc.currency == payment.currency:
        eq = ONE_TEN_DECIMALS
    if eq is None or eq <= 0:
        return None
    eq_decimals = 10 if eq == 1 and ten_decimal_equivalence(payment) else _written_decimals(eq)
    return quotient_bounds(
        doc.amount_paid,
        catalogs.currency_decimals(doc.currency),
        eq,
        eq_decimals,
        catalogs.currency_decimals(payment.currency),
    )


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
    """A copy of `payment` with remaining balances, Monto (if missing) and ImpuestosP filled, and
    an EquivalenciaDR of 1 written 1.0000000000 where CRP20277 asks for it."""
    decimals = catalogs.currency_decimals(payment.currency)
    ten = ten_decimal_equivalence(payment)
    docs = [
        replace(
            d,
            remaining_balance=d.previous_balance - d.amount_paid,
            exchange_rate=ONE_TEN_DECIMALS if ten and d.exchange_rate == 1 else d.exchange_rate,
        )
        for d in payment.related_documents
    ]
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
