"""Concept amounts, taxes and invoice totals, in Decimal with one rounding policy.

Policy (documented once, applied everywhere):
- Amounts are rounded to the currency's decimals from c_Moneda (MXN 2, JPY 0, CLF 4; XXX 0),
  ROUND_HALF_UP — the rounding Mexican accountants and SAT's examples use.
- Per concept: Importe = round(Cantidad * ValorUnitario). Each tax: Importe = round(Base *
  TasaOCuota) (Exento has none), with Base derived in SAT's order (see `tax_bases`):
  IEPS first, then IVA on a base that includes the line's IEPS, withholdings on their own bases.
  A Base the line states explicitly (`Tax.base`) is used as given.
- Invoice-level transfers are grouped by (Impuesto, TipoFactor, TasaOCuota) and withholdings by
  Impuesto, each summed from the *rounded* concept amounts — SAT requires the summary to equal
  the sum of the concepts (CFDI40215/CFDI40221/CFDI40211), so we never re-round a grouped base.
- SubTotal = Σ Importe; Descuento = Σ Descuento (only if any concept has one);
  Total = SubTotal - Descuento + TotalImpuestosTrasladados - TotalImpuestosRetenidos.
- Traslado (T) and Pago (P) vouchers carry no economic value: SubTotal = Total = 0 and no
  invoice-level Impuestos (SAT CFDI40109/CFDI40201), whatever the concepts say.

SAT's Anexo 20 tolerances (checked by `concept_amount_bounds` / `tax_amount_bounds`) admit any
value between the product computed with each factor lowered/raised by half a unit of its last
written decimal; exact rounding of the true product always lands inside them.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

from . import catalogs
from .models import Concept, Invoice, Tax, TaxTotal

ZERO = Decimal(0)


def quantum(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


def round_money(value: Decimal, decimals: int) -> Decimal:
    """Round half-up to `decimals` places; refuses floats so one can never slip into a total."""
    if not isinstance(value, Decimal):
        raise TypeError(f"se esperaba Decimal, no {type(value).__name__}")
    return value.quantize(quantum(decimals), rounding=ROUND_HALF_UP)


def _written_decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def concept_amount_bounds(quantity: Decimal, unit_price: Decimal, decimals: int) -> tuple[Decimal, Decimal]:
    """SAT's admissible [min, max] for a concept's Importe (Anexo 20, Concepto/@Importe).

    lower = (Cantidad - 10^-nc/2) * (ValorUnitario - 10^-nv/2), truncated to the currency decimals;
    upper = (Cantidad + 10^-nc/2) * (ValorUnitario + 10^-nv/2), rounded up; nc/nv are the decimals
    each factor is written with.
    """
    half_q = quantum(_written_decimals(quantity)) / 2
    half_v = quantum(_written_decimals(unit_price)) / 2
    q = quantum(decimals)
    lower = ((quantity - half_q) * (unit_price - half_v)).quantize(q, rounding=ROUND_FLOOR)
    upper = ((quantity + half_q) * (unit_price + half_v)).quantize(q, rounding=ROUND_CEILING)
    return max(lower, ZERO), upper


def tax_amount_bounds(base: Decimal, rate: Decimal, decimals: int) -> tuple[Decimal, Decimal]:
    """SAT's admissible [min, max] for a tax Importe: (Base ∓ 10^-nb/2) * TasaOCuota."""
    half_b = quantum(_written_decimals(base)) / 2
    q = quantum(decimals)
    lower = ((base - half_b) * rate).quantize(q, rounding=ROUND_FLOOR)
    upper = ((base + half_b) * rate).quantize(q, rounding=ROUND_CEILING)
    return max(lower, ZERO), upper


def quotient_bounds(
    dividend: Decimal, dividend_decimals: int, divisor: Decimal, divisor_decimals: int, decimals: int
) -> tuple[Decimal, Decimal]:
    """The same margin as `concept_amount_bounds`, for a quotient (ImpPagado / EquivalenciaDR).

    Each input ± half a unit of the decimal it is written with; the smallest quotient those inputs
    can stand for is (dividend - h) / (divisor + h'), the largest (dividend + h) / (divisor - h');
    lower truncated, upper rounded up, to `decimals` (Anexo 20 Guía, pregunta 41). The caller says
    how many decimals each input is written with, because that is not always how the Decimal
    was built (the builder pads ImpPagado to its currency; CRP20277 fixes EquivalenciaDR 1 at 10).
    The division itself is rounded in the direction of its bound, so 28-digit precision can never
    move a limit inward. `divisor` must be > 0 (then divisor - h' > 0 too: a positive value written
    with n decimals is at least 10^-n).
    """
    half_d = quantum(dividend_decimals) / 2
    half_v = quantum(divisor_decimals) / 2
    q = quantum(decimals)
    with localcontext() as ctx:
        ctx.rounding = ROUND_FLOOR
        lower = ((dividend - half_d) / (divisor + half_v)).quantize(q)
        ctx.rounding = ROUND_CEILING
        upper = ((dividend + half_d) / (divisor - half_v)).quantize(q)
    return max(lower, ZERO), upper


IEPS = "003"
IVA = "002"


def tax_bases(concept: Concept, decimals: int) -> tuple[Decimal, Decimal]:
    """(Importe - Descuento, IEPS amount) of a concept: the inputs of every derived tax Base.

    Anexo 20, Guía de llenado, Traslado/@Base: "Se debe registrar el valor para el cálculo del
    impuesto que se traslada, puede contener de cero hasta seis decimales. El valor de este campo
    debe ser mayor que cero."; Retencion/@Base: "Se debe registrar el valor para el cálculo de la
    retención." The Guía's examples (nodo Impuestos) fix the order:

        IEPS trasladado 15000.00 X 8% = 1200.00
        IVA trasladado*   16200.00 X 16% = 2592.00
        * La base para calcular el IVA es el importe de la comisión más el IEPS trasladado.

        Retención IEPS 15000.00 X 8% = 1200.00
        Retención IVA * 16200.00 X 16% / 3 X 2 = 1728.00
        * La base para calcular la retención del IVA es el importe de la comisión más el IEPS.

    So IEPS is computed first; IVA (transferred and withheld) is based on the line's Importe -
    Descuento plus its IEPS (the transferred IEPS; the withheld IEPS when only that exists, as in
    the Guía's commission example); ISR and IEPS withholdings on Importe - Descuento.
    """
    amount = round_money(concept.quantity * concept.unit_price, decimals)
    discount = round_money(concept.discount, decimals) if concept.discount is not None else ZERO
    line = amount - discount
    ieps_transferred = [_ieps(t, concept, line, decimals) for t in concept.transferred_taxes if t.tax == IEPS]
    ieps_withheld = [_ieps(t, concept, line, decimals) for t in concept.withheld_taxes if t.tax == IEPS]
    ieps = sum(ieps_transferred or ieps_withheld, ZERO)
    return line, ieps


def _ieps(tax: Tax, concept: Concept, line: Decimal, decimals: int) -> Decimal:
    computed = _compute_tax(tax, _default_base(tax, concept, line, ZERO), decimals)
    return computed.amount or ZERO


def _default_base(tax: Tax, concept: Concept, line: Decimal, ieps: Decimal) -> Decimal:
    """The Base SAT derives when the line does not state one.

    IEPS `Cuota` is an amount per unit (pesos per litre, per cigarette): its base is the
    quantity (Cantidad), not money — 40 L x cuota 6.45 = IEPS 258.00. IVA includes the IEPS.
    """
    if tax.factor_type == "Cuota":
        return concept.quantity
    if tax.tax == IVA:
        return line + ieps
    return line


def _compute_tax(tax: Tax, default_base: Decimal, decimals: int) -> Tax:
    if tax.base is not None:
        # A stated Base is kept; a money base is rounded to the currency, a Cuota base (units) not.
        base = tax.base if tax.factor_type == "Cuota" else round_money(tax.base, decimals)
    else:
        base = default_base
    if tax.factor_type == "Exento":
        return replace(tax, base=base, rate=None, amount=None)
    if tax.rate is None:
        raise ValueError("TasaOCuota requerida salvo en impuestos exentos")
    return replace(tax, base=base, amount=round_money(base * tax.rate, decimals))


def compute_concept(concept: Concept, decimals: int) -> Concept:
    """A copy of `concept` with Importe and each tax's Base/Importe computed (see `tax_bases`)."""
    amount = round_money(concept.quantity * concept.unit_price, decimals)
    discount = round_money(concept.discount, decimals) if concept.discount is not None else None
    line, ieps = tax_bases(concept, decimals)

    def compute(t: Tax) -> Tax:
        return _compute_tax(t, _default_base(t, concept, line, ieps), decimals)

    return replace(
        concept,
        amount=amount,
        discount=discount,
        transferred_taxes=[compute(t) for t in concept.transferred_taxes],
        withheld_taxes=[compute(t) for t in concept.withheld_taxes],
    )


def group_transferred(concepts: list[Concept]) -> list[TaxTotal]:
    """Invoice-level Traslados: one line per (Impuesto, TipoFactor, TasaOCuota), first-seen order."""
    groups: dict[tuple[str, str, Decimal | None], TaxTotal] = {}
    for concept in concepts:
        for t in concept.transferred_taxes:
            key = (t.tax, t.factor_type, t.rate)
            line = groups.get(key)
            if line is None:
                line = groups[key] = TaxTotal(t.tax, None if t.amount is None else ZERO, t.factor_type, t.rate, ZERO)
            line.base += t.base
            if t.amount is not None:
                line.amount = (line.amount or ZERO) + t.amount
    return list(groups.values())


def group_withheld(concepts: list[Concept]) -> list[TaxTotal]:
    """Invoice-level Retenciones: one line per Impuesto."""
    groups: dict[str, TaxTotal] = {}
    for concept in concepts:
        for t in concept.withheld_taxes:
            line = groups.setdefault(t.tax, TaxTotal(t.tax, ZERO))
            line.amount += t.amount or ZERO
    return list(groups.values())


def compute_totals(invoice: Invoice) -> Invoice:
    """A copy of `invoice` with every computed amount filled per the module's rounding policy."""
    decimals = catalogs.currency_decimals(invoice.currency)
    concepts = [compute_concept(c, decimals) for c in invoice.concepts]
    if invoice.voucher_type in ("T", "P"):
        zero = round_money(ZERO, decimals)
        return replace(
            invoice,
            concepts=concepts,
            subtotal=zero,
            discount=None,
            total=zero,
            total_transferred=None,
            total_withheld=None,
            transferred_totals=[],
            withheld_totals=[],
        )
    subtotal = sum((c.amount for c in concepts), ZERO)
    has_discount = any(c.discount is not None for c in concepts)
    discount = sum((c.discount or ZERO for c in concepts), ZERO) if has_discount else None
    transferred = group_transferred(concepts)
    withheld = group_withheld(concepts)
    taxed = [t.amount for t in transferred if t.amount is not None]
    # Only-exempt transfers carry no TotalImpuestosTrasladados (SAT: omit when no Importe).
    total_transferred = sum(taxed, ZERO) if taxed else None
    total_withheld = sum((t.amount for t in withheld), ZERO) if withheld else None
    total = subtotal - (discount or ZERO) + (total_transferred or ZERO) - (total_withheld or ZERO)
    return replace(
        invoice,
        concepts=concepts,
        subtotal=subtotal,
        discount=discount,
        total=total,
        total_transferred=total_transferred,
        total_withheld=total_withheld,
        transferred_totals=transferred,
        withheld_totals=withheld,
    )
