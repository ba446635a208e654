"""Amounts in Spanish words, as printed on Mexican invoices ("importe con letra").

    >>> amount_in_words(Decimal("1234.50"), "MXN")
    'MIL DOSCIENTOS TREINTA Y CUATRO PESOS 50/100 M.N.'
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

_UNITS = (
    "", "UN", "DOS", "TRES", "CUATRO", "CINCO", "SEIS", "SIETE", "OCHO", "NUEVE",
    "DIEZ", "ONCE", "DOCE", "TRECE", "CATORCE", "QUINCE", "DIECISÉIS", "DIECISIETE",
    "DIECIOCHO", "DIECINUEVE", "VEINTE", "VEINTIÚN", "VEINTIDÓS", "VEINTITRÉS",
    "VEINTICUATRO", "VEINTICINCO", "VEINTISÉIS", "VEINTISIETE", "VEINTIOCHO", "VEINTINUEVE",
)
_TENS = ("", "", "", "TREINTA", "CUARENTA", "CINCUENTA", "SESENTA", "SETENTA", "OCHENTA", "NOVENTA")
_HUNDREDS = (
    "", "CIENTO", "DOSCIENTOS", "TRESCIENTOS", "CUATROCIENTOS", "QUINIENTOS", "SEISCIENTOS",
    "SETECIENTOS", "OCHOCIENTOS", "NOVECIENTOS",
)

# code -> (singular, plural, suffix after the cents). Unknown currencies: no noun, code as suffix.
_CURRENCIES: dict[str, tuple[str, str, str]] = {
    "MXN": ("PESO", "PESOS", "M.N."),
    "USD": ("DÓLAR", "DÓLARES", "USD"),
    "EUR": ("EURO", "EUROS", "EUR"),
    "CAD": ("DÓLAR CANADIENSE", "DÓLARES CANADIENSES", "CAD"),
    "XXX": ("", "", ""),
}


def _below_thousand(n: int) -> str:
    """0 < n < 1000, with the apocopated "UN" (the numeral always precedes a noun here)."""
    if n == 100:
        return "CIEN"
    hundreds, rest = divmod(n, 100)
    parts = [_HUNDREDS[hundreds]] if hundreds else []
    if rest:
        if rest < 30:
            parts.append(_UNITS[rest])
        else:
            tens, units = divmod(rest, 10)
            parts.append(_TENS[tens] + (f" Y {_UNITS[units]}" if units else ""))
    return " ".join(parts)


def integer_in_words(n: int) -> str:
    """Cardinal in upper-case Spanish, apocopated ("UN", "VEINTIÚN") as used before a noun."""
    if n < 0:
        return "MENOS " + integer_in_words(-n)
    if n == 0:
        return "CERO"
    if n >= 10**12:
        # A billón-sized invoice is not a real case; keep the digits rather than guess.
        return f"{n:,}"
    parts: list[str] = []
    millions, rest = divmod(n, 10**6)
    if millions:
        parts.append("UN MILLÓN" if millions == 1 else f"{integer_in_words(millions)} MILLONES")
    thousands, units = divmod(rest, 1000)
    if thousands:
        parts.append("MIL" if thousands == 1 else f"{_below_thousand(thousands)} MIL")
    if units:
        parts.append(_below_thousand(units))
    return " ".join(parts)


def amount_in_words(amount: Decimal | int | str, currency: str = "MXN") -> str:
    """`1234.50, "MXN"` -> `"MIL DOSCIENTOS TREINTA Y CUATRO PESOS 50/100 M.N."`.

    Cents are rounded half-up to two digits. Exact millions take "DE" before the currency
    noun ("UN MILLÓN DE PESOS"), as Spanish grammar requires.
    """
    value = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    negative = value < 0
    value = abs(value)
    integer = int(value)
    cents = int((value - integer) * 100)
    code = (currency or "").upper()
    singular, plural, suffix = _CURRENCIES.get(code, ("", "", code))
    words = integer_in_words(integer)
    if negative:
        words = "MENOS " + words
    noun = singular if integer == 1 else plural
    if noun and integer >= 10**6 and integer % 10**6 == 0:
        noun = "DE " + noun
    text = " ".join(p for p in (words, noun, f"{cents:02d}/100", suffix) if p)
    return text
