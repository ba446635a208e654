"""Totals: the documented rounding policy, SAT's tolerances, and invariants (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sat.cfdi.models import Concept, Tax
from sat.cfdi.totals import (
    ZERO,
    compute_totals,
    concept_amount_bounds,
    round_money,
    tax_amount_bounds,
)

from .conftest import iva16, make_invoice


def test_half_up_per_concept_and_grouped_sums() -> None:
    inv = compute_totals(
        make_invoice(
            concepts=[
                # 3.5 * 99.99 = 349.965 -> 349.97 (half-up; banker's rounding would give 349.96)
                Concept("01010101", Decimal("3.5"), "H87", "a", Decimal("99.99"), "02", transferred_taxes=[iva16()]),
                Concept("01010101", Decimal("1"), "H87", "b", Decimal("0.03"), "02", transferred_taxes=[iva16()]),
            ]
        )
    )
    a, b = inv.concepts
    assert a.amount == Decimal("349.97")
    assert a.transferred_taxes[0].amount == Decimal("56.00")  # 55.9952
    assert b.transferred_taxes[0].amount == Decimal("0.00")  # 0.0048
    # The group is the sum of the rounded concept amounts, not round(sum of exact products).
    (group,) = inv.transferred_totals
    assert group.base == Decimal("350.00") and group.amount == Decimal("56.00")
    assert inv.total == Decimal("406.00")


def test_discount_reduces_base_and_withholdings_subtract() -> None:
    inv = compute_totals(
        make_invoice(
            concepts=[
                Concept(
                    "80101500",
                    Decimal("1"),
                    "E48",
                    "x",
                    Decimal("10000"),
                    "02",
                    discount=Decimal("1000"),
                    transferred_taxes=[iva16()],
                    withheld_taxes=[Tax("001", "Tasa", Decimal("0.10")), Tax("002", "Tasa", Decimal("0.106667"))],
                ),
            ]
        )
    )
    c = inv.concepts[0]
    assert c.transferred_taxes[0].base == Decimal("9000.00")
    assert [t.amount for t in c.withheld_taxes] == [Decimal("900.00"), Decimal("960.00")]
    assert inv.subtotal == Decimal("10000.00") and inv.discount == Decimal("1000.00")
    assert inv.total_transferred == Decimal("1440.00") and inv.total_withheld == Decimal("1860.00")
    assert inv.total == Decimal("8580.00")  # 10000 - 1000 + 1440 - 1860


def test_exempt_only_has_no_transferred_total() -> None:
    inv = compute_totals(
        make_invoice(
            concepts=[
                Concept(
                    "85121800", Decimal("1"), "E48", "x", Decimal("700"), "02", transferred_taxes=[Tax("002", "Exento")]
                ),
            ]
        )
    )
    assert inv.total_transferred is None
    assert inv.transferred_totals[0].amount is None and inv.transferred_totals[0].base == Decimal("700.00")
    assert inv.total == Decimal("700.00")


def test_currency_decimals_from_catalog() -> None:
    inv = compute_totals(
        make_invoice(
            currency="JPY",
            exchange_rate=Decimal("0.12"),
            concepts=[
                Concept("01010101", Decimal("3"), "H87", "x", Decimal("333.5"), "02", transferred_taxes=[iva16()]),
            ],
        )
    )
    assert inv.subtotal == Decimal("1001") and inv.total == Decimal("1161")  # 160.16 -> 160


def test_float_is_refused() -> None:
    with pytest.raises(TypeError):
        round_money(1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compute_totals(make_invoice(concepts=[Concept("01010101", 1.1, "H87", "x", Decimal("1"), "01")]))  # type: ignore[arg-type]


def test_sat_tolerance_bounds() -> None:
    # Anexo 20: (2 - 0.5)*(10.5 - 0.05) .. (2 + 0.5)*(10.5 + 0.05) for Cantidad "2", ValorUnitario "10.5"
    assert concept_amount_bounds(Decimal("2"), Decimal("10.5"), 2) == (Decimal("15.67"), Decimal("26.38"))
    low, high = tax_amount_bounds(Decimal("100.00"), Decimal("0.160000"), 2)
    assert (low, high) == (Decimal("15.99"), Decimal("16.01"))


money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.999999"), places=6, allow_nan=False)
quantity = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("9999"), places=6, allow_nan=False)
rates = st.sampled_from([Decimal("0.160000"), Decimal("0.080000"), Decimal("0.000000"), Decimal("0.265000")])


@st.composite
def concepts(draw, decimals: int):
    qty, price = draw(quantity), draw(money)
    amount = round_money(qty * price, decimals)
    # Valid inputs only: a discount above the amount is refused by rules.py (CFDI40169).
    discount = draw(st.one_of(st.none(), st.decimals(min_value=0, max_value=amount, places=decimals)))
    transferred = [Tax("002", "Tasa", draw(rates))] if draw(st.booleans()) else []
    if draw(st.booleans()):
        transferred.append(Tax("003", "Tasa", Decimal("0.080000")))
    withheld = [Tax("001", "Tasa", Decimal("0.100000"))] if draw(st.booleans()) else []
    return Concept(
        "01010101",
        qty,
        "H87",
        "x",
        price,
        "02" if transferred or withheld else "01",
        discount=discount,
        transferred_taxes=transferred,
        withheld_taxes=withheld,
    )


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(["MXN", "USD", "JPY", "CLF"]))
def test_invariants(data, currency) -> None:
    from sat.cfdi.catalogs import currency_decimals

    decimals = currency_decimals(currency)
    items = data.draw(st.lists(concepts(decimals), min_size=1, max_size=6))
    inv = compute_totals(make_invoice(currency=currency, concepts=items))
    # Never float, always at the currency's precision.
    for value in (inv.subtotal, inv.total, inv.discount, inv.total_transferred, inv.total_withheld):
        assert value is None or (isinstance(value, Decimal) and -value.as_tuple().exponent <= decimals)
    # Total identity.
    assert inv.total == (
        inv.subtotal - (inv.discount or ZERO) + (inv.total_transferred or ZERO) - (inv.total_withheld or ZERO)
    )
    assert inv.subtotal == sum(c.amount for c in inv.concepts)
    # Each concept within SAT's tolerance, each tax within its tolerance.
    for c in inv.concepts:
        low, high = concept_amount_bounds(c.quantity, c.unit_price, decimals)
        assert low <= c.amount <= high
        ieps = sum((t.amount for t in c.transferred_taxes if t.tax == "003"), ZERO)
        for t in c.transferred_taxes + c.withheld_taxes:
            # SAT's order: IVA's base includes the line's IEPS (Guía de llenado, nodo Impuestos).
            assert t.base == c.amount - (c.discount or ZERO) + (ieps if t.tax == "002" else ZERO)
            low, high = tax_amount_bounds(t.base, t.rate, decimals)
            assert low <= t.amount <= high
    # Group totals equal the sums of the concept lines.
    for g in inv.transferred_totals:
        lines = [
            t
            for c in inv.concepts
            for t in c.transferred_taxes
            if (t.tax, t.factor_type, t.rate) == (g.tax, g.factor_type, g.rate)
        ]
        assert g.base == sum(t.base for t in lines) and g.amount == sum(t.amount for t in lines)
    for g in inv.withheld_totals:
        assert g.amount == sum(t.amount for c in inv.concepts for t in c.withheld_taxes if t.tax == g.tax)
    assert (inv.total_transferred or ZERO) == sum((g.amount or ZERO) for g in inv.transferred_totals)
