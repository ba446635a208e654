"""Amount in Spanish words, as printed on Mexican invoices ("importe con letra").

e.g. 1234.50 MXN -> "MIL DOSCIENTOS TREINTA Y CUATRO PESOS 50/100 M.N."
     1000000 MXN -> "UN MILLÓN DE PESOS 00/100 M.N."

The number always precedes a noun (pesos, dólares), so "uno" takes its apocopated form:
UN PESO, VEINTIÚN PESOS, CIENTO UN MIL. Cents are always written as two digits over 100.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

_UNITS = [
    "",
    "UN",
    "DOS",
    "TRES",
    "CUATRO",
    "CINCO",
    "SEIS",
    "SIETE",
    "OCHO",
    "NUEVE",
    "DIEZ",
    "ONCE",
    "DOCE",
    "TRECE",
    "CATORCE",
    "QUINCE",
    "DIECISÉIS",
    "DIECISIETE",
    "DIECIOCHO",
    "DIECINUEVE",
    "VEINTE",
    "VEINTIÚN",
    "VEINTIDÓS",
    "VEINTITRÉS",
    "VEINTICUATRO",
    "VEINTICINCO",
    "VEINTISÉIS",
    "VEINTISIETE",
    "VEINTIOCHO",
    "VEINTINUEVE",
]
_TENS = ["", "", "", "TREINTA", "CUARENTA", "CINCUENTA", "SESENTA", "SETENTA", "OCHENTA", "NOVENTA"]
_HUNDREDS = [
    "",
    "CIENTO",
    "DOSCIENTOS",
    "TRESCIENTOS",
    "CUATROCIENTOS",
    "QUINIENTOS",
    "SEISCIENTOS",
    "SETECIENTOS",
    "OCHOCIENTOS",
    "NOVECIENTOS",
]

# currency -> (singular, plural, suffix after the cents). Unknown currencies: no noun, the code as
# suffix ("TRES 00/100 JPY"); XXX (payment CFDIs, no currency): neither.
CURRENCY_NAMES = {
    "MXN": ("PESO", "PESOS", "M.N."),
    "USD": ("DÓLAR", "DÓLARES", "USD"),
    "EUR": ("EURO", "EUROS", "EUR"),
    "CAD": ("DÓLAR CANADIENSE", "DÓLARES CANADIENSES", "CAD"),
    "XXX": ("", "", ""),
}


def _below_thousand(n: int) -> str:
    if n == 100:
        return "CIEN"
    hundreds, rest = divmod(n, 100)
    parts = [_HUNDREDS[hundreds]] if hundreds else []
    if rest < 30:
        if rest:
            parts.append(_UNITS[rest])
    else:
        tens, units = divmod(rest, 10)
        parts.append(_TENS[tens] + (f" Y {_UNITS[units]}" if units else ""))
    return " ".join(parts)


def _below_million(n: int) -> str:
    thousands, rest = divmod(n, 1000)
    parts = []
    if thousands == 1:
        parts.append("MIL")
    elif thousands:
        parts.append(f"{_below_thousand(thousands)} MIL")
    if rest:
        parts.append(_below_thousand(rest))
    return " ".join(parts)


def integer_to_words(n: int) -> str:
    """Integer in Spanish words with apocope (1 -> "UN", 21 -> "VEINTIÚN"); 0 -> "CERO"."""
    if n < 0:
        raise ValueError("no se admiten cantidades negativas")
    if n == 0:
        return "CERO"
    if n >= 10**12:
        # Long scale: 10^12 is "billón"; invoices never get here, and guessing would be worse.
        raise ValueError("cantidad demasiado grande para expresarla con letra")
    millions, rest = divmod(n, 10**6)
    parts = []
    if millions == 1:
        parts.append("UN MILLÓN")
    elif millions:
        parts.append(f"{_below_million(millions)} MILLONES")
    if rest:
        parts.append(_below_million(rest))
    return " ".join(parts)


def amount_in_words(amount: Decimal, currency: str = "MXN") -> str:
    """The "importe con letra" line of an invoice for `amount` in `currency`."""
    if not isinstance(amount, Decimal):
        raise TypeError("el importe debe ser Decimal")
    cents_total = int(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) * 100)
    sign = "MENOS " if cents_total < 0 else ""
    integer, cents = divmod(abs(cents_total), 100)
    code = (currency or "").upper()
    singular, plural, suffix = CURRENCY_NAMES.get(code, ("", "", code))
    noun = singular if integer == 1 else plural
    # "UN MILLÓN DE PESOS", "DOS MILLONES DE PESOS", but "UN MILLÓN MIL PESOS".
    if noun and integer and integer % 10**6 == 0:
        noun = "DE " + noun
    return " ".join(p for p in (sign + integer_to_words(integer), noun, f"{cents:02d}/100", suffix) if p)
