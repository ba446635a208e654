from __future__ import annotations

import threading

import pytest

from sat.cfdi import catalogs
from sat.cfdi.cadena import cadena_original, tfd_cadena_original
from sat.cfdi.catalogs import UnknownCatalogError, currency_decimals, search_catalog
from sat.cfdi.xmlsafe import parse_xml

from .conftest import CORPUS_DIR


def test_search_is_case_and_accent_insensitive() -> None:
    hits = search_catalog("FormaPago", "credito")
    assert [h["code"] for h in hits] == ["04"]  # "Tarjeta de crédito"
    assert search_catalog("UsoCFDI", "NOMINA")[0]["code"] == "CN01"
    assert search_catalog("Moneda", "mxn")[0]["code"] == "MXN"


def test_search_code_first_and_limit() -> None:
    hits = search_catalog("ClaveProdServ", "43211503", first=5)
    assert hits[0]["code"] == "43211503"
    hits = search_catalog("ClaveProdServ", "cargador PORTATIL", first=3)
    assert 0 < len(hits) <= 3
    assert all("portatil" in catalogs._fold(h["description"]) for h in hits)
    assert len(search_catalog("ClaveUnidad", "", first=7)) == 7
    assert search_catalog("CodigoPostal", "06600")[0]["state"] == "CMX"
    for name in ("RegimenFiscal", "MetodoPago", "ObjetoImp", "Exportacion"):
        assert search_catalog(name, "")


def test_unknown_catalog() -> None:
    with pytest.raises(UnknownCatalogError):
        search_catalog("c_Nope", "x")


def test_catalog_facts_used_by_rules() -> None:
    assert (currency_decimals("MXN"), currency_decimals("JPY"), currency_decimals("CLF")) == (2, 0, 4)
    assert catalogs.get("c_RegimenFiscal", "626")["fisica"] and catalogs.get("c_RegimenFiscal", "626")["moral"]
    assert "616" in catalogs.get("c_UsoCFDI", "S01")["regimes"]
    assert catalogs.tasa_o_cuota_allowed("002", "Tasa", "0.106667", transfer=False)
    assert not catalogs.tasa_o_cuota_allowed("002", "Tasa", "0.106667", transfer=True)


def test_cadena_of_production_cfdi_and_thread_safety() -> None:
    root = parse_xml((CORPUS_DIR / "CfdiUtils__cfdi40-real.xml").read_bytes())
    expected = cadena_original(root)
    assert expected.startswith("||4.0|O|52375239|2025-01-24T10:10:41|04|00001000000510877575|862.07|MXN|1|1000.00|")
    assert tfd_cadena_original(root).startswith("||1.1|C2832671-DA6D-11EF-A83D-00155D012007|")
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cadena_original(root))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 8


def _tfd(**attrs: str):
    from lxml import etree

    from sat.cfdi.models import TFD_NS

    el = etree.Element(f"{{{TFD_NS}}}TimbreFiscalDigital", nsmap={"tfd": TFD_NS})
    for name, value in attrs.items():  # attribute order is irrelevant: the XSLT fixes it
        el.set(name, value)
    return el


def test_tfd_cadena_format() -> None:
    # Moved from tests/pdf (the PDF used to build this string itself; it now prints the engine's).
    assert tfd_cadena_original(_tfd(
        Version="1.1", UUID="U", FechaTimbrado="2022-01-01T00:00:00", RfcProvCertif="SAT970701NN3",
        SelloCFD="S==", NoCertificadoSAT="300",
    )) == "||1.1|U|2022-01-01T00:00:00|SAT970701NN3|S==|300||"
    assert tfd_cadena_original(_tfd(
        Version="1.1", UUID="U", FechaTimbrado="F", RfcProvCertif="R", SelloCFD="S", NoCertificadoSAT="N",
        Leyenda="  Leyenda   con  espacios ",
    )) == "||1.1|U|F|R|Leyenda con espacios|S|N||"


def test_tfd_cadena_follows_sat_xslt_where_the_pdf_copy_diverged() -> None:
    base = {"Version": "1.1", "UUID": "U", "FechaTimbrado": "F", "RfcProvCertif": "R", "SelloCFD": "S",
            "NoCertificadoSAT": "N"}
    # A present-but-blank Leyenda is "true" for the XSLT's Opcional template: an empty field.
    assert tfd_cadena_original(_tfd(**base, Leyenda="  ")) == "||1.1|U|F|R||S|N||"
    # normalize-space only collapses XML whitespace (space, tab, CR, LF), not Unicode spaces.
    assert tfd_cadena_original(_tfd(**base, Leyenda="a\u00a0b\u2003 c")) == "||1.1|U|F|R|a\u00a0b\u2003 c|S|N||"
