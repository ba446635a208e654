from __future__ import annotations

from decimal import Decimal

import pytest

from sat.cfdi.words import amount_in_words, integer_to_words


@pytest.mark.parametrize(
    "amount,expected",
    [
        ("1", "UN PESO 00/100 M.N."),
        ("21", "VEINTIÚN PESOS 00/100 M.N."),
        ("100", "CIEN PESOS 00/100 M.N."),
        ("101", "CIENTO UN PESOS 00/100 M.N."),
        ("1000", "MIL PESOS 00/100 M.N."),
        ("1000000", "UN MILLÓN DE PESOS 00/100 M.N."),
        ("2000000", "DOS MILLONES DE PESOS 00/100 M.N."),
        ("0.99", "CERO PESOS 99/100 M.N."),
        ("1234.50", "MIL DOSCIENTOS TREINTA Y CUATRO PESOS 50/100 M.N."),
        ("21000", "VEINTIÚN MIL PESOS 00/100 M.N."),
        ("1001000", "UN MILLÓN MIL PESOS 00/100 M.N."),
        ("2500001.10", "DOS MILLONES QUINIENTOS MIL UN PESOS 10/100 M.N."),
        ("516", "QUINIENTOS DIECISÉIS PESOS 00/100 M.N."),
        ("777", "SETECIENTOS SETENTA Y SIETE PESOS 00/100 M.N."),
        ("1000000000", "MIL MILLONES DE PESOS 00/100 M.N."),
        ("0.005", "CERO PESOS 01/100 M.N."),  # half-up to cents
    ],
)
def test_mxn(amount: str, expected: str) -> None:
    assert amount_in_words(Decimal(amount), "MXN") == expected


def test_usd_and_singular() -> None:
    assert amount_in_words(Decimal("1234.50"), "USD") == "MIL DOSCIENTOS TREINTA Y CUATRO DÓLARES 50/100 USD"
    assert amount_in_words(Decimal("1"), "USD") == "UN DÓLAR 00/100 USD"


def test_refuses_float_and_negative() -> None:
    with pytest.raises(TypeError):
        amount_in_words(12.5, "MXN")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        integer_to_words(-1)
