"""SAT catalogs (c_*), loaded lazily from `resources/catalogs/` and cached per process.

Why lazily: c_ClaveProdServ and c_CodigoPostal hold ~50k/~95k rows; a process that only
validates amounts should not pay to load them. Files are JSON lists of {"code", "description",
...extra columns}; the big ones are gzipped (see resources/SOURCES.md).
"""

from __future__ import annotations

import gzip
import json
import threading
import unicodedata
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

CATALOG_DIR = Path(__file__).with_name("resources") / "catalogs"

# Public (UI search) names -> catalog file names.
SEARCHABLE = {
    "ClaveProdServ": "c_ClaveProdServ",
    "ClaveUnidad": "c_ClaveUnidad",
    "RegimenFiscal": "c_RegimenFiscal",
    "UsoCFDI": "c_UsoCFDI",
    "FormaPago": "c_FormaPago",
    "MetodoPago": "c_MetodoPago",
    "Moneda": "c_Moneda",
    "CodigoPostal": "c_CodigoPostal",
    "ObjetoImp": "c_ObjetoImp",
    "Exportacion": "c_Exportacion",
}

_lock = threading.Lock()


class UnknownCatalogError(KeyError):
    """The caller asked for a catalog we do not ship."""


@cache
def _load(name: str) -> tuple[dict[str, Any], ...]:
    plain = CATALOG_DIR / f"{name}.json"
    packed = CATALOG_DIR / f"{name}.json.gz"
    if plain.exists():
        data = plain.read_bytes()
    elif packed.exists():
        data = gzip.decompress(packed.read_bytes())
    else:
        raise UnknownCatalogError(name)
    return tuple(json.loads(data))


def rows(name: str) -> tuple[dict[str, Any], ...]:
    """All rows of catalog `name` (e.g. "c_UsoCFDI")."""
    with _lock:  # lru_cache is thread-safe but could load a big file twice concurrently
        return _load(name)


@cache
def _index(name: str) -> dict[str, dict[str, Any]]:
    return {str(r["code"]): r for r in rows(name)}


def get(name: str, code: str) -> dict[str, Any] | None:
    """The row of `code` in catalog `name`, or None when the code is not in the catalog."""
    if name == "c_TasaOCuota":
        raise UnknownCatalogError("c_TasaOCuota has no codes; use tasa_o_cuota_allowed()")
    return _index(name).get(code)


def contains(name: str, code: str | None) -> bool:
    return code is not None and get(name, code) is not None


def currency_decimals(currency: str) -> int:
    """Decimals SAT allows for amounts in `currency` (c_Moneda). Unknown currencies: 2."""
    row = get("c_Moneda", currency)
    return int(row["decimals"]) if row else 2


@cache
def _tasa_o_cuota_rows() -> tuple[tuple[str, str, bool, bool, Decimal, Decimal], ...]:
    # Converted once: this runs for every tax line of every invoice validated.
    return tuple(
        (r["tax"], r["factor"], bool(r["transfer"]), bool(r["withholding"]), Decimal(r["min"]), Decimal(r["max"]))
        for r in rows("c_TasaOCuota")
    )


def tasa_o_cuota_allowed(tax: str, factor_type: str, rate, transfer: bool) -> bool:
    """Whether (Impuesto, TipoFactor, TasaOCuota) is in c_TasaOCuota for a transfer/withholding."""
    value = Decimal(rate)
    for row_tax, factor, is_transfer, is_withholding, low, high in _tasa_o_cuota_rows():
        if row_tax != tax or factor != factor_type:
            continue
        if not (is_transfer if transfer else is_withholding):
            continue
        if low <= value <= high:
            return True
    return False


def _fold(text: str) -> str:
    """Lower-case and strip accents so "credito" finds "Crédito"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@cache
def _folded(name: str) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    return tuple((_fold(str(r["code"])), _fold(str(r.get("description", ""))), r) for r in rows(name))


def search_catalog(name: str, search: str = "", first: int = 20) -> list[dict[str, Any]]:
    """Rows of catalog `name` ("ClaveProdServ", "UsoCFDI", ...) matching `search`.

    Case/accent-insensitive; every word of `search` must appear in the code or description.
    Exact code matches come first, then codes starting with the search, then the rest in
    catalog order. Empty search lists the first `first` rows.
    """
    file_name = SEARCHABLE.get(name, name)
    if file_name not in SEARCHABLE.values():
        raise UnknownCatalogError(name)
    first = max(0, min(first, 500))
    words = _fold(search).split()
    needle = " ".join(words)
    exact: list[dict[str, Any]] = []
    prefix: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for code, description, row in _folded(file_name):
        haystack = f"{code} {description}"
        if not all(w in haystack for w in words):
            continue
        if code == needle:
            exact.append(row)
        elif needle and code.startswith(needle):
            prefix.append(row)
        else:
            other.append(row)
        if not needle and len(other) >= first:
            break
    return (exact + prefix + other)[:first]
