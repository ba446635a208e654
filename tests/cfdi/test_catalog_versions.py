"""The shipped catalogs are SAT's CFDI 4.0 tables, with validity dates the rules honour."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sat.cfdi import catalogs
from sat.cfdi.catalogs import CatalogSearchError, search_catalog
from sat.cfdi.models import Concept, Receiver, RelatedCfdis, Tax
from sat.cfdi.refresh_resources import PHPCFDI_TABLES, read_phpcfdi
from sat.cfdi.rules import check_invoice

from .conftest import make_invoice

PHPCFDI = Path("/work/shared/data/sat-catalogs-phpcfdi")


@pytest.fixture(scope="module")
def sat_tables() -> sqlite3.Connection:
    if not PHPCFDI.exists():
        pytest.skip("SAT catalog tables not available")
    return read_phpcfdi(PHPCFDI)


@pytest.mark.parametrize("table,name", sorted(PHPCFDI_TABLES.items()))
def test_shipped_catalog_equals_sat_table(sat_tables, table: str, name: str) -> None:
    sat = {str(r["id"]): r for r in sat_tables.execute(f"SELECT * FROM {table}")}
    shipped = {str(r["code"]): r for r in catalogs.rows(name) if not r.get("retired")}
    assert set(shipped) == set(sat)
    for code, row in sat.items():
        assert shipped[code]["description"] == row["texto"]
        if "vigencia_desde" in row.keys():
            assert shipped[code]["valid_from"] == (row["vigencia_desde"] or None)
            assert shipped[code]["valid_to"] == (row["vigencia_hasta"] or None)


def test_tasa_o_cuota_equals_sat_table(sat_tables) -> None:
    sat = {(r["tipo"], r["valor"], r["factor"], r["vigencia_desde"]) for r in
           sat_tables.execute("SELECT * FROM cfdi_40_reglas_tasa_cuota")}
    shipped = {(r["kind"], r["max"], r["factor"], r["valid_from"]) for r in catalogs.rows("c_TasaOCuota")
               if r.get("valid_to") is None}
    assert shipped == sat


@pytest.mark.parametrize(
    "name,codes",
    [
        ("c_FormaPago", ["07", "09", "10", "11", "16", "98"]),
        ("c_RegimenFiscal", ["609", "628", "629", "630"]),
        ("c_UsoCFDI", ["P01"]),
        ("c_TipoRelacion", ["08", "09"]),
    ],
)
def test_codes_not_in_4_0_are_refused_but_readable(name: str, codes: list[str]) -> None:
    for code in codes:
        assert not catalogs.contains(name, code)
        assert catalogs.lookup(name, code)["description"]  # old documents still display
    searchable = {v: k for k, v in catalogs.SEARCHABLE.items()}.get(name)
    if searchable:
        offered = {r["code"] for r in search_catalog(searchable, "", first=500)}
        assert offered and not offered & set(codes)


def test_rules_refuse_retired_codes() -> None:
    issues = lambda inv: {i.code for i in check_invoice(inv, datetime(2025, 6, 1, 12))}  # noqa: E731
    assert "CFDI40104" in issues(make_invoice(payment_form="98"))
    assert "CFDI40137" in issues(make_invoice(related=[RelatedCfdis("09", ["5FB2822E-396D-4725-8521-CDC4BDD20CCF"])]))
    rec = Receiver("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "76343", "601", "P01")
    assert "CFDI40160" in issues(make_invoice(receiver=rec))


def test_ieps_cuota_ceiling_follows_the_invoice_date() -> None:
    assert not catalogs.tasa_o_cuota_allowed("003", "Cuota", "65", transfer=True, on=date(2025, 12, 31))
    assert catalogs.tasa_o_cuota_allowed("003", "Cuota", "65", transfer=True, on=date(2026, 1, 1))
    assert catalogs.tasa_o_cuota_allowed("003", "Cuota", "59.1449", transfer=True, on=date(2025, 12, 31))
    assert not catalogs.tasa_o_cuota_allowed("003", "Cuota", "72.1606", transfer=True, on=date(2026, 6, 1))
    cuota = Concept("50202201", Decimal("10"), "H87", "Cigarros", Decimal("5"), "02",
                    transferred_taxes=[Tax("003", "Cuota", Decimal("65.000000"))])
    issued = datetime(2026, 1, 2, 10, 0)
    assert check_invoice(make_invoice(issued_at=issued, concepts=[cuota]), datetime(2026, 1, 2, 11)) == []
    old = make_invoice(issued_at=datetime(2025, 12, 30, 10), concepts=[cuota])
    assert "CFDI40179" in {i.code for i in check_invoice(old, datetime(2025, 12, 30, 11))}


def test_sources_name_each_catalog_and_its_date() -> None:
    text = (Path(catalogs.CATALOG_DIR).parent / "SOURCES.md").read_text("utf-8")
    for name in PHPCFDI_TABLES.values():
        assert f"| {name} | phpcfdi " in text
    assert "vigencia_desde ≤ 2026-01-01" in text  # c_TasaOCuota


def test_search_refuses_oversized_text_fast() -> None:
    with pytest.raises(CatalogSearchError):
        search_catalog("ClaveProdServ", "a" * 10_000)
    with pytest.raises(CatalogSearchError):
        search_catalog("ClaveProdServ", "uno dos tres cuatro cinco seis siete ocho nueve")


def test_search_never_scans_the_catalog(monkeypatch) -> None:
    """Each term is one binary search in a prebuilt vocabulary: after the index exists, a search
    folds only its own text (never a row) and looks up at most MAX_SEARCH_TERMS prefixes."""
    search_catalog("ClaveProdServ", "x")  # builds the index once
    folds, lookups = [], []
    real_fold, real_matching = catalogs._fold, catalogs._SearchIndex.matching
    monkeypatch.setattr(catalogs, "_fold", lambda text: folds.append(text) or real_fold(text))
    monkeypatch.setattr(catalogs._SearchIndex, "matching",
                        lambda self, prefix: lookups.append(prefix) or real_matching(self, prefix))
    text = "computadora portatil uno dos tres cuatro cinco " + "z" * 40
    assert len(text) <= catalogs.MAX_SEARCH_LENGTH
    search_catalog("ClaveProdServ", text)
    assert folds == [text]
    assert len(lookups) <= catalogs.MAX_SEARCH_TERMS


def test_search_finds_by_word_prefix_and_code() -> None:
    assert search_catalog("FormaPago", "tarj cred")[0]["code"] == "04"
    assert search_catalog("ClaveProdServ", "43211503")[0]["code"] == "43211503"
    assert search_catalog("RegimenFiscal", "601")[0]["code"] == "601"
    assert json.dumps(search_catalog("CodigoPostal", "06600")[0], ensure_ascii=False)
