"""Generated XML: SAT formatting, XSD-valid when signed, XSD issues reported with line/path."""

from __future__ import annotations

from decimal import Decimal

from lxml import etree

from sat.cfdi.build import build_tree, build_xml, to_bytes
from sat.cfdi.csd import sign_cfdi
from sat.cfdi.models import CFDI_NS, PAGO20_NS
from sat.cfdi.totals import compute_totals
from sat.cfdi.validate import validate_xsd
from sat.cfdi.xmlsafe import parse_xml

from .conftest import make_invoice, make_payment_invoice
from .test_satcfdi_parity import INVOICES


def test_formats_and_attribute_order(csd_eku) -> None:
    root = build_tree(compute_totals(make_invoice()))
    sign_cfdi(root, csd_eku)
    assert list(root.attrib)[:9] == [
        "{http://www.w3.org/2001/XMLSchema-instance}schemaLocation",
        "Version",
        "Serie",
        "Folio",
        "Fecha",
        "Sello",
        "FormaPago",
        "NoCertificado",
        "Certificado",
    ]
    assert root.get("Fecha") == "2025-06-01T10:30:00"
    assert (root.get("SubTotal"), root.get("Total")) == ("2469.12", "2864.18")
    traslado = root.find(
        f".//{{{CFDI_NS}}}Concepto/{{{CFDI_NS}}}Impuestos/{{{CFDI_NS}}}Traslados/{{{CFDI_NS}}}Traslado"
    )
    assert traslado.get("TasaOCuota") == "0.160000" and traslado.get("Importe") == "395.06"
    assert root.nsmap == {"cfdi": CFDI_NS, "xsi": "http://www.w3.org/2001/XMLSchema-instance"}


def test_every_generated_signed_invoice_validates(csd_eku) -> None:
    for factory in list(INVOICES.values()) + [make_payment_invoice]:
        root = build_tree(compute_totals(factory()))
        sign_cfdi(root, csd_eku)
        assert validate_xsd(root) == [], factory
        # And the bytes round-trip through the hardened parser and still validate.
        assert validate_xsd(to_bytes(root)) == []


def test_payment_cfdi_layout(csd_eku) -> None:
    root = build_tree(compute_totals(make_payment_invoice()))
    sign_cfdi(root, csd_eku)
    assert (root.get("SubTotal"), root.get("Total"), root.get("Moneda")) == ("0", "0", "XXX")
    assert root.get("FormaPago") is None and root.get("MetodoPago") is None
    assert PAGO20_NS in root.get("{http://www.w3.org/2001/XMLSchema-instance}schemaLocation")
    pagos = root.find(f"{{{CFDI_NS}}}Complemento/{{{PAGO20_NS}}}Pagos")
    assert pagos.find(f"{{{PAGO20_NS}}}Totales").get("MontoTotalPagos") == "1160.00"
    # pago20 is declared once, on the root, not again on the complement.
    assert b"xmlns:pago20" in etree.tostring(root).split(b">", 1)[0]
    assert etree.tostring(root).count(b"xmlns:pago20") == 1


def test_unsigned_invoice_fails_xsd_with_location() -> None:
    # From bytes (as stored/received) issues carry line numbers; in-memory trees carry the path.
    issues = validate_xsd(build_xml(compute_totals(make_invoice())))
    assert issues and all(i.line > 0 for i in issues)
    assert any("NoCertificado" in i.message for i in issues)
    in_memory = validate_xsd(build_tree(compute_totals(make_invoice())))
    assert in_memory and all(i.path == "/cfdi:Comprobante" for i in in_memory)


def test_schema_rejects_bad_catalog_value(csd_eku) -> None:
    inv = compute_totals(make_invoice(payment_form="77"))
    root = build_tree(inv)
    sign_cfdi(root, csd_eku)
    issues = validate_xsd(root)
    assert len(issues) == 1 and "FormaPago" in issues[0].message
    assert issues[0].path.endswith("Comprobante")


def test_stamped_corpus_validates_with_wrapper_schema() -> None:
    from .conftest import CORPUS_DIR

    for name in ("CfdiUtils__cfdi40-real.xml", "pycfdi-transform__pago_stamped.xml"):
        assert validate_xsd(parse_xml((CORPUS_DIR / name).read_bytes())) == [], name


def test_build_xml_bytes_is_parseable_and_amounts_required() -> None:
    data = build_xml(compute_totals(make_invoice()))
    assert parse_xml(data).get("Version") == "4.0"
    import pytest

    with pytest.raises(ValueError):
        build_tree(make_invoice())  # amounts not computed
    assert Decimal(parse_xml(data).get("Total")) == Decimal("2864.18")


def test_lean_mode_defers_huge_catalogs_to_rules(csd_eku) -> None:
    from datetime import datetime

    from sat.cfdi.rules import check_invoice

    from .conftest import make_invoice as mk

    # A well-formed but non-existent ClaveProdServ: the full schema refuses it, the lean one
    # leaves it to rules.catalog_codes, which refuses it with SAT's code.
    inv = compute_totals(mk())
    inv.concepts[0].product_code = "99999999"
    root = build_tree(inv)
    sign_cfdi(root, csd_eku)
    assert any("ClaveProdServ" in i.message for i in validate_xsd(root, mode="full"))
    assert validate_xsd(root, mode="lean") == []
    assert "CFDI40162" in {i.code for i in check_invoice(inv, datetime(2025, 6, 1, 11, 0))}
    # Lexically wrong values are still refused by the lean schema.
    root.find(f".//{{{CFDI_NS}}}Concepto").set("ClaveProdServ", "ABC")
    assert any("ClaveProdServ" in i.message for i in validate_xsd(root, mode="lean"))
    # Everything else is identical: the bad FormaPago is caught by both.
    root.set("FormaPago", "77")
    assert any("FormaPago" in i.message for i in validate_xsd(root, mode="lean"))


def test_lean_mode_accepts_what_full_accepts(csd_eku) -> None:
    for factory in list(INVOICES.values()) + [make_payment_invoice]:
        root = build_tree(compute_totals(factory()))
        sign_cfdi(root, csd_eku)
        assert validate_xsd(root, mode="lean") == []
