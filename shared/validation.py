"""Input checks more than one service applies the same way.

`Limits` is what a GraphQL argument or input field may hold. Each field declares its own once, in
its metadata (`strawberry.field(metadata=limits(max_length=300))`, or
`Annotated[int, strawberry.argument(metadata=limits(min=1))]`); the shared boundary
(`shared.graphql`) checks every argument against them before any resolver runs. A field that
declares nothing still gets the defaults: single-line text of at most DEFAULT_MAX_LENGTH
characters, lists of at most DEFAULT_MAX_ITEMS items, decimals that fit `Numeric(18, 6)`, and
dates between DEFAULT_MIN_YEAR and DEFAULT_MAX_YEAR. So a field whose column is shorter than the
default must say so, and the hostile-input sweep (tests/security) fails until it does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")

DEFAULT_MAX_LENGTH = 1000  # CFDI's longest free-text attribute (Concepto/@Descripcion) is 1000
DEFAULT_MAX_ITEMS = 1000  # far below Postgres' 32,767 bind parameters per statement
MONEY_INTEGER_DIGITS = 12  # Numeric(18, 6)
MONEY_DECIMALS = 6
DEFAULT_MIN_YEAR, DEFAULT_MAX_YEAR = 1900, 2999
INT32_MAX = 2**31 - 1

LIMITS_KEY = "limits"

# NUL and lone UTF-16 surrogates can never be stored (Postgres refuses the first, UTF-8 cannot
# encode the second); other C0/C1 controls and Unicode line breaks have no place in single-line text
# (a CR/LF in a name becomes a forged e-mail header).
_NEVER = re.compile(r"[\x00\ud800-\udfff]")
_NOT_MULTILINE = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NOT_SINGLE_LINE = re.compile(r"[\x01-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Limits:
    max_length: int = DEFAULT_MAX_LENGTH
    multiline: bool = False
    min: int | Decimal | None = None
    max: int | Decimal | None = None
    max_items: int = DEFAULT_MAX_ITEMS
    decimals: int = MONEY_DECIMALS


DEFAULT_LIMITS = Limits()


def limits(**kw: Any) -> dict:
    """Field/argument metadata declaring its limits, e.g. `metadata=limits(max_length=25)`."""
    return {LIMITS_KEY: replace(DEFAULT_LIMITS, **kw)}


def limits_of(metadata: Mapping | None) -> Limits:
    return (metadata or {}).get(LIMITS_KEY, DEFAULT_LIMITS)


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


def text_problem(value: str, lim: Limits = DEFAULT_LIMITS) -> Problem | None:
    if _NEVER.search(value) or (_NOT_MULTILINE if lim.multiline else _NOT_SINGLE_LINE).search(value):
        what = "caracteres de control" if lim.multiline else "saltos de línea ni caracteres de control"
        return Problem("INVALID_CHARACTERS", f"El texto no puede contener {what}.")
    if len(value) > lim.max_length:
        return Problem("TOO_LONG", f"El texto no puede exceder {lim.max_length} caracteres.")
    return None


def _range_problem(value, lim: Limits) -> Problem | None:
    if (lim.min is not None and value < lim.min) or (lim.max is not None and value > lim.max):
        low = "" if lim.min is None else f" desde {lim.min}"
        high = "" if lim.max is None else f" hasta {lim.max}"
        return Problem("OUT_OF_RANGE", f"El valor debe ir{low}{high}.")
    return None


def decimal_problem(value: Decimal, lim: Limits = DEFAULT_LIMITS) -> Problem | None:
    if not value.is_finite():
        return Problem("INVALID_NUMBER", "El número no es válido.")
    if value and value.adjusted() >= MONEY_INTEGER_DIGITS:
        return Problem("OUT_OF_RANGE", f"El número no puede tener más de {MONEY_INTEGER_DIGITS} dígitos enteros.")
    if value != value.quantize(Decimal(1).scaleb(-lim.decimals)):  # trailing zeros past the scale are fine
        return Problem("TOO_MANY_DECIMALS", f"El número admite como máximo {lim.decimals} decimales.")
    return _range_problem(value, lim)


def fits_money(value: Decimal | None) -> bool:
    """Whether an amount fits a `Numeric(18, 6)` column (None fits a nullable one)."""
    return value is None or not value or value.adjusted() < MONEY_INTEGER_DIGITS


def int_problem(value: int, lim: Limits = DEFAULT_LIMITS) -> Problem | None:
    return _range_problem(value, lim)


def date_problem(value: date, lim: Limits = DEFAULT_LIMITS) -> Problem | None:
    if not DEFAULT_MIN_YEAR <= value.year <= DEFAULT_MAX_YEAR:
        return Problem("OUT_OF_RANGE", f"La fecha debe estar entre los años {DEFAULT_MIN_YEAR} y {DEFAULT_MAX_YEAR}.")
    return None


def value_problems(value: Any, lim: Limits, path: list[str],
                   fields_of=lambda value: None) -> list[tuple[list[str], Problem]]:
    """Every (path, problem) in `value`, an argument as the resolver would receive it. `fields_of`
    answers an input object's `(graphql name, value, Limits)` triples (None for anything else), so
    this module stays free of any GraphQL library."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str):
        p = text_problem(value, lim)
    elif isinstance(value, int):
        p = int_problem(value, lim)
    elif isinstance(value, Decimal):
        p = decimal_problem(value, lim)
    elif isinstance(value, float):
        p = None if value == value and abs(value) != float("inf") else Problem("INVALID_NUMBER", "El número no es válido.")
    elif isinstance(value, (datetime, date)):
        p = date_problem(value, lim)
    elif isinstance(value, (list, tuple)):
        if len(value) > lim.max_items:
            return [(path, Problem("TOO_MANY_ITEMS", f"La lista admite como máximo {lim.max_items} elementos."))]
        out = []
        for i, item in enumerate(value):
            out += value_problems(item, replace(lim, max_items=DEFAULT_MAX_ITEMS), [*path, str(i)], fields_of)
        return out
    elif isinstance(value, dict):  # JSON and federation `_Any` values: plain text rules apply inside
        if len(value) > DEFAULT_MAX_ITEMS:
            return [(path, Problem("TOO_MANY_ITEMS", f"El objeto admite como máximo {DEFAULT_MAX_ITEMS} campos."))]
        out = []
        for key, item in value.items():
            out += value_problems(str(key), DEFAULT_LIMITS, path, fields_of)
            out += value_problems(item, DEFAULT_LIMITS, [*path, str(key)], fields_of)
        return out
    else:
        fields = fields_of(value)
        if fields is None:
            return []  # enums, uploads: already constrained by their type
        out = []
        for name, item, item_limits in fields:
            out += value_problems(item, item_limits, [*path, name], fields_of)
        return out
    return [(path, p)] if p else []


def email_problem(email: str) -> str | None:
    """Why `email` is not a usable address (es-MX), or None."""
    if not EMAIL_RE.match(email) or len(email) > 320:
        return "El correo electrónico no es válido."
    return None


def column_limits(column: Any, **kw: Any) -> dict:
    """`limits()` that keep a value storable in `column` (a mapped attribute such as
    `User.full_name`): its String length, or the 32-bit range of an Integer."""
    from sqlalchemy import Integer, String

    type_ = column.type
    if isinstance(type_, String) and type_.length:
        kw.setdefault("max_length", type_.length)
    elif isinstance(type_, Integer):
        kw.setdefault("max", INT32_MAX)
    return limits(**kw)
