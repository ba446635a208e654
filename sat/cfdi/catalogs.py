"""SAT catalogs (c_*), loaded lazily from `resources/catalogs/` and cached per process.

Why lazily: c_ClaveProdServ and c_CodigoPostal hold ~50k/~95k rows; a process that only
validates amounts should not pay to load them. Files are JSON lists of {"code", "description",
...extra columns}; the big ones are gzipped (see resources/SOURCES.md).

Validity: rows of SAT's 4.0 tables carry `valid_from`/`valid_to` (ISO dates, vigencia); codes SAT
dropped from 4.0 (c_FormaPago 07, c_RegimenFiscal 609, c_UsoCFDI P01, c_TipoRelacion 08, ...) are
kept with `"retired": true`. `get`/`contains` answer for issuing: only a 4.0 row in force on the
given date (the invoice's, today by default). `lookup` answers for displaying old documents.
"""

from __future__ import annotations

import bisect
import gzip
import json
import re
import threading
import unicodedata
from datetime import date
from decimal import Decimal
from functools import cache, lru_cache
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

_lock = threading.RLock()


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


def _day(on: date | str | None) -> str:
    """ISO day of `on` (a date, an ISO string the caller computed once per invoice, or today)."""
    if isinstance(on, str):
        return on
    return (on or date.today()).isoformat()


def in_force(row: dict[str, Any], on: date | str | None = None) -> bool:
    """Whether a catalog row is a CFDI 4.0 value in force on `on` (today by default)."""
    if row.get("retired"):
        return False
    day = _day(on)
    start, end = row.get("valid_from"), row.get("valid_to")
    return (start is None or start <= day) and (end is None or day <= end)


def lookup(name: str, code: str) -> dict[str, Any] | None:
    """The row of `code` whatever its validity (to describe codes of old or received documents)."""
    return _index(name).get(code)


def get(name: str, code: str, on: date | str | None = None) -> dict[str, Any] | None:
    """The row of `code` in catalog `name` in force on `on` (today by default), else None."""
    if name == "c_TasaOCuota":
        raise UnknownCatalogError("c_TasaOCuota has no codes; use tasa_o_cuota_allowed()")
    row = _index(name).get(code)
    return row if row is not None and in_force(row, on) else None


def contains(name: str, code: str | None, on: date | str | None = None) -> bool:
    return code is not None and get(name, code, on) is not None


def currency_decimals(currency: str) -> int:
    """Decimals SAT allows for amounts in `currency` (c_Moneda). Unknown currencies: 2."""
    row = lookup("c_Moneda", currency)
    return int(row["decimals"]) if row else 2


@cache
def _tasa_o_cuota_rows() -> tuple[tuple[str, str, bool, bool, Decimal, Decimal, str, str], ...]:
    # Converted once: this runs for every tax line of every invoice validated.
    return tuple(
        (
            r["tax"],
            r["factor"],
            bool(r["transfer"]),
            bool(r["withholding"]),
            Decimal(r["min"]),
            Decimal(r["max"]),
            r.get("valid_from") or "0000-00-00",
            r.get("valid_to") or "9999-99-99",
        )
        for r in rows("c_TasaOCuota")
    )


def tasa_o_cuota_allowed(tax: str, factor_type: str, rate, transfer: bool, on: date | str | None = None) -> bool:
    """Whether (Impuesto, TipoFactor, TasaOCuota) is in c_TasaOCuota for a transfer/withholding,
    in the row in force on `on` (the invoice date; today by default). E.g. the IEPS Cuota ceiling
    is 59.1449 until 2025-12-31 and 72.1605 from 2026-01-01."""
    return _tasa_o_cuota_allowed(tax, factor_type, Decimal(rate), transfer, _day(on))


@lru_cache(maxsize=4096)  # an invoice repeats the same few (tax, factor, rate) on every concept
def _tasa_o_cuota_allowed(tax: str, factor_type: str, value: Decimal, transfer: bool, day: str) -> bool:
    for row_tax, factor, is_transfer, is_withholding, low, high, start, end in _tasa_o_cuota_rows():
        if row_tax != tax or factor != factor_type or not start <= day <= end:
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


# A search is bounded whatever the client sends: at most this many characters and terms, and
# each term is answered from a prebuilt index (a binary search in the catalog's sorted
# vocabulary), so its cost depends on the catalog, never on the input's size.
MAX_SEARCH_LENGTH = 100
MAX_SEARCH_TERMS = 8


class CatalogSearchError(ValueError):
    """The search text is longer or has more terms than a catalog search accepts."""

    code = "SEARCH_TOO_LONG"


class _SearchIndex:
    """Rows in force (catalog order), their folded codes, and token -> row ids, tokens sorted."""

    def __init__(self, name: str) -> None:
        self.rows = [r for r in rows(name) if in_force(r)]
        self.codes = [_fold(str(r["code"])) for r in self.rows]
        postings: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows):
            text = f"{row['code']} {row.get('description', '')}"
            for token in set(_TOKEN.findall(_fold(text))):
                postings.setdefault(token, []).append(i)
        self.vocabulary = sorted(postings)
        self.postings = [postings[t] for t in self.vocabulary]

    def matching(self, prefix: str) -> set[int]:
        """Ids of the rows with a token starting with `prefix`."""
        out: set[int] = set()
        i = bisect.bisect_left(self.vocabulary, prefix)
        while i < len(self.vocabulary) and self.vocabulary[i].startswith(prefix):
            out.update(self.postings[i])
            i += 1
        return out


_TOKEN = re.compile(r"\w+")


@cache
def _search_index(name: str) -> _SearchIndex:
    return _SearchIndex(name)


def search_terms(search: str) -> list[str]:
    """The folded terms of a search text; CatalogSearchError past the length or term bounds."""
    if len(search) > MAX_SEARCH_LENGTH:
        raise CatalogSearchError(f"La búsqueda admite hasta {MAX_SEARCH_LENGTH} caracteres.")
    terms = list(dict.fromkeys(_TOKEN.findall(_fold(search))))
    if len(terms) > MAX_SEARCH_TERMS:
        raise CatalogSearchError(f"La búsqueda admite hasta {MAX_SEARCH_TERMS} palabras.")
    return terms


def search_catalog(name: str, search: str = "", first: int = 20) -> list[dict[str, Any]]:
    """Rows in force of catalog `name` ("ClaveProdServ", "UsoCFDI", ...) matching `search`.

    Case/accent-insensitive; every word of `search` must start a word of the code or description.
    Exact code matches come first, then codes starting with the search, then the rest in
    catalog order. Empty search lists the first `first` rows. Retired codes (not CFDI 4.0) are
    never offered. Raises CatalogSearchError beyond MAX_SEARCH_LENGTH / MAX_SEARCH_TERMS.
    """
    file_name = SEARCHABLE.get(name, name)
    if file_name not in SEARCHABLE.values():
        raise UnknownCatalogError(name)
    first = max(0, min(first, 500))
    words = search_terms(search)
    with _lock:  # build each index once, even under concurrent first searches
        index = _search_index(file_name)
    if not words:
        return index.rows[:first]
    hits: set[int] | None = None
    for word in sorted(words, key=len, reverse=True):  # longest (most selective) first
        found = index.matching(word)
        hits = found if hits is None else hits & found
        if not hits:
            return []
    needle = " ".join(words)
    exact = [i for i in hits if index.codes[i] == needle]
    prefix = sorted(i for i in hits if index.codes[i] != needle and index.codes[i].startswith(needle))
    ranked = exact + prefix
    if len(ranked) < first:
        taken = set(ranked)
        ranked += sorted(i for i in hits if i not in taken)[: first - len(ranked)]
    return [index.rows[i] for i in ranked[:first]]
