"""Catalog descriptions for the representación impresa, from the engine's SAT catalogs.

Why not a table of our own: the engine ships SAT's complete catCFDI (every régimen, forma de
pago, moneda...) with SAT's exact wording; a second, hand-kept subset drifted from it. The
engine caches each catalog's index per process, so a lookup here is a dict access.
"""

from __future__ import annotations

from sat.cfdi import catalogs


def description(catalog: str, code: str | None) -> str:
    """SAT's description of `code` in `catalog` (e.g. "c_RegimenFiscal"); `""` when unknown."""
    if not code:
        return ""
    row = catalogs.lookup(catalog, code)  # old documents may use codes retired since
    return str(row.get("description") or "") if row else ""


def describe(catalog: str, code: str | None) -> str:
    """`"601 - General de Ley Personas Morales"`; an unknown code alone; `""` for no code."""
    if not code:
        return ""
    desc = description(catalog, code)
    return f"{code} - {desc}" if desc else code
