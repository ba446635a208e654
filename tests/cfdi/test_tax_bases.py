"""Tax bases in SAT's order (IEPS before IVA, IEPS Cuota on the quantity, withholdings on their
own bases), checked on the Guía's own examples and, by property, against an independent
recomputation written from the Guía de llenado (Anexo 20) with exact fractions.

Guía (nodo Impuestos): "IEPS trasladado 15000.00 X 8% = 1200.00 / IVA trasladado* 16200.00 X 16% =
2592.00 / * La base para calcular el IVA es el importe de la comisión más el IEPS trasladado." and
"Retención IVA * 16200.00 X 16% / 3 X 2 = 1728.00 / * La base para calcular la retención del IVA es
el importe de la comisión más el IEPS." Rounding: "Redondear al final del cálculo y no antes, el
resultado al número de decimales que soporta la moneda" (pregunta 39), half-up as in its examples.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from sat.cfdi.models import Concept, Tax
from sat.cfdi.rules import check_invoice
from sat.cfdi.totals import compute_totals

from .conftest import make_invoice

D = Decimal


def _invoice(concepts, currency="MXN", exchange_rate=None):
    return make_invoice(concepts=concepts, currency=currency, exchange_rate=exchange_rate)


def test_guia_example_iva_base_includes_transferred_ieps() -> None:
    c = Concept(
        "80141600", D("1"), "E48", "Comisión", D("15000.00"), "02",
        transferred_taxes=[Tax("003", "Tasa", D("0.080000")), Tax("002", "Tasa", D("0.160000"))],
    )
    inv = compute_totals(_invoice([c]))
    ieps, iva = inv.concepts[0].transferred_taxes
    assert (ieps.base, ieps.amount) == (D("15000.00"), D("1200.00"))
    assert (iva.base, iva.amount) == (D("16200.00"), D("2592.00"))
    assert inv.total_transferred == D("3792.00")


def test_guia_example_withheld_iva_base_includes_ieps() -> None:
    c = Concept(
        "80141600", D("1"), "E48", "Comisión", D("15000.00"), "02",
        withheld_taxes=[Tax("003", "Tasa", D("0.080000")), Tax("002", "Tasa", D("0.106666"))],
    )
    inv = compute_totals(_invoice([c]))
    ieps, iva = inv.concepts[0].withheld_taxes
    assert ieps.amount == D("1200.00")
    assert iva.base == D("16200.00") and iva.amount == D("1727.99")  # 16200 x 0.106666 (2/3 of 16%)


def test_ieps_cuota_base_is_the_quantity() -> None:
    c = Concept(
        "15101514", D("40"), "LTR", "Gasolina", D("24.00"), "02",
        transferred_taxes=[Tax("003", "Cuota", D("6.450000")), Tax("002", "Tasa", D("0.160000"))],
    )
    inv = compute_totals(_invoice([c]))
    ieps, iva = inv.concepts[0].transferred_taxes
    assert (ieps.base, ieps.amount) == (D("40"), D("258.00"))
    assert (iva.base, iva.amount) == (D("1218.00"), D("194.88"))  # 960 + 258
    assert check_invoice(inv, inv.issued_at) == []


def test_explicit_base_is_used_as_given() -> None:
    c = Concept(
        "80141600", D("1"), "E48", "x", D("1000.00"), "02",
        transferred_taxes=[Tax("002", "Tasa", D("0.160000"), base=D("500.00"))],
    )
    (iva,) = compute_totals(_invoice([c])).concepts[0].transferred_taxes
    assert (iva.base, iva.amount) == (D("500.00"), D("80.00"))


# --- independent recomputation --------------------------------------------------------------


def _half_up(value: Fraction, decimals: int) -> Fraction:
    scale = 10**decimals
    scaled = value * scale
    n = scaled.numerator // scaled.denominator
    if scaled - n >= Fraction(1, 2):
        n += 1
    return Fraction(n, scale)


def _reference(quantity, price, discount, transfers, withholdings, decimals):
    """Guía de llenado, line by line: Importe = Cantidad x ValorUnitario; IEPS first (Tasa on
    Importe - Descuento, Cuota per unit); IVA on Importe - Descuento + IEPS; ISR on Importe -
    Descuento; each Importe = Base x TasaOCuota rounded half-up to the currency's decimals."""
    importe = _half_up(Fraction(quantity) * Fraction(price), decimals)
    line = importe - _half_up(Fraction(discount), decimals)

    def ieps_amount(tax):
        _, factor, rate = tax
        base = Fraction(quantity) if factor == "Cuota" else line
        return _half_up(base * Fraction(rate), decimals)

    ieps_t = [ieps_amount(t) for t in transfers if t[0] == "003"]
    ieps_w = [ieps_amount(t) for t in withholdings if t[0] == "003"]
    ieps = sum(ieps_t or ieps_w, Fraction(0))

    def one(tax):
        code, factor, rate = tax
        if factor == "Cuota":
            base = Fraction(quantity)
        elif code == "002":
            base = line + ieps
        else:
            base = line
        amount = None if factor == "Exento" else _half_up(base * Fraction(rate), decimals)
        return base, amount

    return importe, [one(t) for t in transfers], [one(t) for t in withholdings]


IVA_CHOICES = [("002", "Tasa", "0.160000"), ("002", "Tasa", "0.080000"), ("002", "Tasa", "0.000000"),
               ("002", "Exento", None)]
IEPS_CHOICES = [None, ("003", "Tasa", "0.080000"), ("003", "Tasa", "0.265000"), ("003", "Tasa", "0.530000"),
                ("003", "Cuota", "6.450000"), ("003", "Cuota", "0.598400")]
CURRENCIES = [("MXN", 2), ("JPY", 0), ("BHD", 3), ("CLF", 4)]


@st.composite
def lines(draw):
    iva = draw(st.sampled_from(IVA_CHOICES))
    ieps = draw(st.sampled_from(IEPS_CHOICES))
    isr = draw(st.sampled_from([None, ("001", "Tasa", "0.100000"), ("001", "Tasa", "0.012500")]))
    iva_ret = draw(st.sampled_from([None, ("002", "Tasa", "0.106666"), ("002", "Tasa", "0.040000")]))
    ieps_withheld = ieps is not None and ieps[1] == "Tasa" and draw(st.booleans())
    currency, decimals = draw(st.sampled_from(CURRENCIES))
    quantity = draw(st.decimals(min_value=D("0.001"), max_value=D("5000"), places=3))
    price = draw(st.decimals(min_value=D("0.01"), max_value=D("99999"), places=draw(st.integers(0, 4))))
    discount_share = draw(st.sampled_from([0, 0, D("0.1"), D("0.5")]))
    transfers = [t for t in (None if ieps_withheld else ieps, iva) if t is not None]
    withholdings = [t for t in (ieps if ieps_withheld else None, isr, iva_ret) if t is not None]
    if iva[1] == "Exento":
        withholdings = [w for w in withholdings if w[0] != "002"]
    return quantity, price, discount_share, transfers, withholdings, currency, decimals


@settings(max_examples=300, deadline=None)
@given(lines())
def test_engine_matches_guia_recomputation(case) -> None:
    quantity, price, share, transfers, withholdings, currency, decimals = case
    gross = (quantity * price).quantize(Decimal(1).scaleb(-decimals))
    discount = (gross * share).quantize(Decimal(1).scaleb(-decimals)) if share else D(0)

    def tax(t):
        code, factor, rate = t
        return Tax(code, factor, None if rate is None else D(rate))

    concept = Concept(
        "01010101", quantity, "H87", "x", price, "02", discount=discount or None,
        transferred_taxes=[tax(t) for t in transfers], withheld_taxes=[tax(t) for t in withholdings],
    )
    inv = compute_totals(_invoice([concept], currency, None if currency == "MXN" else D("17.5")))
    importe, exp_t, exp_w = _reference(quantity, price, discount, transfers, withholdings, decimals)
    got = inv.concepts[0]
    assert Fraction(got.amount) == importe
    for computed, (base, amount) in zip(got.transferred_taxes + got.withheld_taxes, exp_t + exp_w, strict=True):
        assert Fraction(computed.base) == base
        assert (computed.amount is None and amount is None) or Fraction(computed.amount) == amount
    total = importe - Fraction(discount) + sum(a for _, a in exp_t if a is not None) - sum(a for _, a in exp_w)
    assert Fraction(inv.total) == total
