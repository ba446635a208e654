"""Representación impresa (PDF) of stamped CFDI 4.0: subgraphs/invoice/pdf.

Corpus: /work/shared/data/cfdi-corpus (public CFDIs; see its manifest.tsv for each file's origin).
No PDF text extractor is a dependency, so PDFs are rendered with `compress=False` and the raw
content streams are searched (core fonts write latin-1 strings in `( ... ) Tj`).
"""

from __future__ import annotations

import base64
import copy
import csv
import io
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import segno
from lxml import etree

from sat.cfdi.xmlsafe import UnsafeXmlError
from subgraphs.invoice.pdf import (
    LEGEND,
    NotACfdi40Error,
    amount_in_words,
    format_qr_total,
    parse_invoice,
    render_invoice_pdf,
    verification_url,
)
from subgraphs.invoice.pdf.render import latin1, money

DATA = Path("/work/shared/data")
CORPUS = DATA / "cfdi-corpus"
SAT_CERTS = DATA / "sat-certs"

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="reference corpus not available")


def _manifest() -> list[dict[str, str]]:
    if not CORPUS.is_dir():
        return []
    with open(CORPUS / "manifest.tsv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


MANIFEST = _manifest()
# Everything that parses renders (display does not depend on seals); only the malformed XML fails.
RENDERABLE = [r["filename"] for r in MANIFEST if r["sello_verifies"] != "parse-error"]
MALFORMED = [r["filename"] for r in MANIFEST if r["sello_verifies"] == "parse-error"]
TFD_OK = [r["filename"] for r in MANIFEST if r["tfd_sellosat_verifies"] == "ok"]


def _pdf_str(text: str) -> bytes:
    """How fpdf2 writes `text` with a core font inside a content stream."""
    raw = latin1(text).encode("latin-1")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _contains(pdf: bytes, text: str) -> bool:
    # fpdf2 splits a cell's text around the "{nb}" alias into adjacent strings: join them.
    return _pdf_str(text) in pdf.replace(b") Tj (", b"")


def _page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b", pdf))


def _read(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


# ---------------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("name", RENDERABLE)
def test_renders_corpus_file(name: str) -> None:
    xml = _read(name)
    view = parse_invoice(xml)
    pdf = render_invoice_pdf(xml, compress=False)
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert _page_count(pdf) == 1
    assert _contains(pdf, "Página 1 de 1")
    assert view.timbre is not None
    for needed in (view.timbre.uuid, view.emisor_rfc, view.receptor_rfc, money(view.total), LEGEND):
        assert _contains(pdf, needed), needed
    if view.tipo_comprobante != "P":
        assert _contains(pdf, amount_in_words(Decimal(view.total), view.moneda))
    # Timbre data and the TFD cadena (split across lines: check its head).
    for needed in (view.timbre.no_certificado_sat, view.no_certificado, view.timbre.rfc_prov_certif):
        assert _contains(pdf, needed), needed
    assert _contains(pdf, f"||1.1|{view.timbre.uuid}|")
    # Compressed output (the default) is smaller and still a PDF.
    packed = render_invoice_pdf(xml)
    assert packed.startswith(b"%PDF-") and len(packed) < len(pdf)


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_xml_is_rejected(name: str) -> None:
    with pytest.raises(UnsafeXmlError):
        render_invoice_pdf(_read(name))


def test_not_a_cfdi40() -> None:
    with pytest.raises(NotACfdi40Error):
        render_invoice_pdf(b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/3" Version="3.3"/>')
    with pytest.raises(UnsafeXmlError):
        render_invoice_pdf(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')


def test_types_covered() -> None:
    types = {parse_invoice(_read(n)).tipo_comprobante for n in RENDERABLE}
    assert {"I", "P", "N"} <= types


def test_ingreso_content_and_catalog_descriptions() -> None:
    pdf = render_invoice_pdf(_read("CfdiUtils__cfdi40-real.xml"), compress=False)
    for needed in (
        "FACTURA",
        "O-52375239",
        "601 - General de Ley Personas Morales",
        "612 - Personas Físicas con Actividades Empresariales y Profesionales",
        "G03 - Gastos en general",
        "04 - Tarjeta de crédito",
        "PUE - Pago en una sola exhibición",
        "01 - No aplica",
        "C.P. 11529",  # LugarExpedicion
        "C.P. 52176",  # DomicilioFiscalReceptor
        "80141628",
        "COMISION RECARGA IDMX",
        "NO APLICA",
        "$853.448276",
        "$862.07",
        "$137.93",
        "$1,000.00",
        "MIL PESOS 00/100 M.N.",
        "Traslado IVA 16.00%",
    ):
        assert _contains(pdf, needed), needed


def test_retenciones_grouped() -> None:
    # gobl sample: IVA traslado + ISR/IVA retenciones.
    xml = _read("node-cfdi__gobl.cfdi-invoice-timbre.xml")
    view = parse_invoice(xml)
    assert view.retenciones
    pdf = render_invoice_pdf(xml, compress=False)
    assert _contains(pdf, "retenido")
    for r in view.retenciones:
        assert _contains(pdf, money(r.importe))


def test_impuestos_locales_in_totals() -> None:
    pdf = render_invoice_pdf(_read("pycfdi-transform__cfdi40_01_implocal.xml"), compress=False)
    # (this doctored fixture names the local tax "77.40"; real ones say e.g. "ISH")
    assert _contains(pdf, "77.40 6% (local) retenido")
    assert _contains(pdf, "-$77.40")


def test_pago_detail() -> None:
    xml = _read("python-satcfdi__pago_h_e951128469_ingreso_iva16.xml")
    pdf = render_invoice_pdf(xml, compress=False)
    for needed in (
        "RECIBO ELECTRÓNICO DE PAGO",
        "COMPLEMENTO PARA RECEPCIÓN DE PAGOS 2.0",
        "6d7434a6-e3f2-47ad-9e4c-08849946afa0",  # IdDocumento
        "03 - Transferencia electrónica de fondos",
        "$17,852.75",
        "CP01 - Pagos",
        "H&E951128469",
        "HERRERIA & ELECTRICOS S DE CV",
        "DIECISIETE MIL OCHOCIENTOS CINCUENTA Y DOS PESOS 75/100 M.N.",
    ):
        assert _contains(pdf, needed), needed


def test_informacion_global_and_relacionados() -> None:
    xml = _read("python-satcfdi__cfdv40-ejemplo-signed-tfd.xml")
    pdf = render_invoice_pdf(xml, compress=False)
    for needed in (
        "Información global:",
        "05 - Bimestral",
        "ED1752FE-E865-4FF2-BFE1-0F552E770DC9",
        "09 - Factura generada por pagos diferidos",
        "A cuenta de terceros",
        "Cuenta predial: 51888",
        "Pedimento: 15 48 4567 6001234",
        "Esta es una demostración",
    ):
        assert _contains(pdf, needed), needed


def test_nomina_does_not_crash() -> None:
    pdf = render_invoice_pdf(_read("pycfdi-transform__nomina12_40.xml"), compress=False)
    for needed in (
        "RECIBO DE NÓMINA",
        "COMPLEMENTO DE NÓMINA 1.2",
        "XEXX010101HNEXXXA4",  # CURP
        "Ingeniero de Software",
        "Sueldos, Salarios Rayas y Jornales",
        "$2,808.80",
        "CUATRO MIL SETECIENTOS PESOS 00/100 M.N.",
        "CN01 - Nómina",
    ):
        assert _contains(pdf, needed), needed


def test_logo() -> None:
    buf = io.BytesIO()
    segno.make("logo", micro=False).save(buf, kind="png", scale=8)
    xml = _read("CfdiUtils__cfdi40-valid.xml")
    with_logo = render_invoice_pdf(xml, logo_png=buf.getvalue(), compress=False)
    assert b"/Subtype /Image" in with_logo
    assert _page_count(with_logo) == 1
    # A broken logo never blocks the invoice.
    assert render_invoice_pdf(xml, logo_png=b"not a png").startswith(b"%PDF-")


def test_usd_invoice_words_and_total() -> None:
    root = etree.fromstring(_read("CfdiUtils__cfdi40-real.xml"))
    root.set("Moneda", "USD")
    root.set("TipoCambio", "17.2345")
    pdf = render_invoice_pdf(etree.tostring(root), compress=False)
    assert _contains(pdf, "MIL DÓLARES 00/100 USD")
    assert _contains(pdf, "Total USD")
    assert _contains(pdf, "17.2345")


def test_unstamped_cfdi_renders_without_qr() -> None:
    root = etree.fromstring(_read("CfdiUtils__cfdi40-real.xml"))
    complemento = root.find("{http://www.sat.gob.mx/cfd/4}Complemento")
    root.remove(complemento)
    pdf = render_invoice_pdf(etree.tostring(root), compress=False)
    assert _contains(pdf, "SIN TIMBRAR")
    assert not _contains(pdf, "||1.1|")


@pytest.mark.parametrize("total", ["NaN", "sNaN", "Infinity", "-Infinity", "1E+13", "1E+30"])
def test_non_finite_or_huge_total_still_renders(total: str) -> None:
    # Regression: dec() accepted NaN/Infinity, and words refuses >= 10^12, so these raised (500).
    root = etree.fromstring(_read("CfdiUtils__cfdi40-real.xml"))
    root.set("Total", total)
    root.set("SubTotal", total)
    tax = root.find(".//{http://www.sat.gob.mx/cfd/4}Concepto//{http://www.sat.gob.mx/cfd/4}Traslado")
    tax.set("TasaOCuota", total)
    pdf = render_invoice_pdf(etree.tostring(root), compress=False)
    assert pdf.startswith(b"%PDF-")
    assert not _contains(pdf, "IMPORTE CON LETRA")  # nothing sensible to say in words
    if total == "1E+13":
        assert _contains(pdf, "$10,000,000,000,000.00")
    # The QR's tt= (drawn, not text): a usable amount as usual, anything else as 0.
    assert format_qr_total(total) == ("10000000000000.0" if total == "1E+13" else "0.0")


def test_catalog_descriptions_come_from_sat_catalog() -> None:
    # Codes the PDF's old hand-kept subset did not have now print SAT's description.
    root = etree.fromstring(_read("CfdiUtils__cfdi40-real.xml"))
    root.find("{http://www.sat.gob.mx/cfd/4}Emisor").set("RegimenFiscal", "609")
    root.set("Moneda", "CHF")
    root.set("TipoCambio", "21.5")
    root.set("FormaPago", "98")
    pdf = render_invoice_pdf(etree.tostring(root), compress=False)
    for needed in ("609 - Consolidación", "CHF - Franco Suizo", "98 - NA"):
        assert _contains(pdf, needed), needed
    # XXX keeps printing the bare code (SAT's description is a sentence about "no currency").
    root.set("Moneda", "XXX")
    pdf = render_invoice_pdf(etree.tostring(root), compress=False)
    assert not _contains(pdf, "XXX - ")


def test_printed_tfd_cadena_is_the_engines() -> None:
    from sat.cfdi.cadena import tfd_cadena_original

    xml = _read("CfdiUtils__cfdi40-real.xml")
    expected = tfd_cadena_original(etree.fromstring(xml))
    assert parse_invoice(xml).timbre.cadena == expected
    assert expected.startswith("||1.1|C2832671-DA6D-11EF-A83D-00155D012007|")


# ---------------------------------------------------------------------------------- many concepts


def _with_concepts(xml: bytes, n: int, description: str | None = None) -> bytes:
    root = etree.fromstring(xml)
    ns = {"cfdi": "http://www.sat.gob.mx/cfd/4"}
    conceptos = root.find("cfdi:Conceptos", ns)
    template = conceptos.find("cfdi:Concepto", ns)
    for c in list(conceptos):
        conceptos.remove(c)
    for i in range(n):
        c = copy.deepcopy(template)
        c.set("NoIdentificacion", f"SKU-{i + 1:04d}")
        c.set("Descripcion", description or f"Producto número {i + 1} con una descripción larga que debe ajustarse")
        conceptos.append(c)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_200_concepts_flow_onto_pages() -> None:
    xml = _with_concepts(_read("CfdiUtils__cfdi40-real.xml"), 200)
    pdf = render_invoice_pdf(xml, compress=False)
    pages = _page_count(pdf)
    assert pages >= 5
    for p in range(1, pages + 1):
        assert _contains(pdf, f"Página {p} de {pages}")
    assert _contains(pdf, "SKU-0001") and _contains(pdf, "SKU-0200")
    assert not _contains(pdf, "{nb}")
    # The table header repeats on every page that has concept rows (the last page may hold
    # only the totals and the timbre).
    assert pdf.count(_pdf_str("Valor unitario")) in (pages - 1, pages)


def test_long_and_non_latin1_text() -> None:
    desc = ("Servicio “premium” — mantenimiento ¿anual? ¡sí! ñandú ü € 漢字 Łódź " * 12).strip()
    desc += " " + "X" * 400  # one unbreakable word wider than the column
    xml = _with_concepts(_read("CfdiUtils__cfdi40-real.xml"), 3, description=desc)
    pdf = render_invoice_pdf(xml, compress=False)
    assert pdf.startswith(b"%PDF-")
    assert _contains(pdf, "¿anual? ¡sí! ñandú ü")
    assert latin1("€ “x” — Łódź ő 漢") == 'EUR "x" - Lódz o ?'


# ---------------------------------------------------------------------------------- QR / SAT strings


def test_verification_url_reference_vector() -> None:
    # phpcfdi/cfdi-expresiones tests (Comprobante40Test): same URL for its cfdi40-real.xml.
    assert verification_url(
        "66933DFF-5507-5460-9EF0-9D0BB068A54A", "EKU9003173C9", "AABF800614HI0", "2320.00", "...yl2MKg=="
    ) == (
        "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?"
        "id=66933DFF-5507-5460-9EF0-9D0BB068A54A&re=EKU9003173C9&rr=AABF800614HI0&tt=2320.0&fe=yl2MKg=="
    )
    # RFC with "&" is XML-escaped; Ñ kept.
    assert verification_url(
        "CEE4BE01-ADFA-4DEB-8421-ADD60F0BEDAC", "Ñ&A010101AAA", "Ñ&A991231AA0", "1234.5678", "0123456789"
    ) == (
        "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"
        "?id=CEE4BE01-ADFA-4DEB-8421-ADD60F0BEDAC&re=Ñ&amp;A010101AAA&rr=Ñ&amp;A991231AA0"
        "&tt=1234.5678&fe=23456789"
    )


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        ("123.45", "123.45"),
        ("0.123456", "0.123456"),
        ("0.1234561", "0.123456"),
        ("0.1234565", "0.123457"),
        ("1000.00000", "1000.0"),
        ("0", "0.0"),
        ("0.00", "0.0"),
        ("", "0.0"),
        ("0001500", "1500.0"),
        ("999999999999999999.999999", "999999999999999999.999999"),
    ],
)
def test_qr_total_format(total: str, expected: str) -> None:
    assert format_qr_total(total) == expected


def test_verification_url_from_corpus_file() -> None:
    v = parse_invoice(_read("CfdiUtils__cfdi40-real.xml"))
    url = verification_url(v.timbre.uuid, v.emisor_rfc, v.receptor_rfc, v.total, v.sello)
    assert url == (
        "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?"
        "id=C2832671-DA6D-11EF-A83D-00155D012007&re=ISD950921HE5&rr=COSC8001137NA&tt=1000.0"
        f"&fe={v.sello[-8:]}"
    )
    assert v.sello[-8:] == "hNjeNw=="


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_qr_in_pdf_matches_url(tmp_path: Path) -> None:
    """Rasterize the PDF and read the QR modules back: they must equal segno's symbol for the
    verification URL (no QR decoder is a dependency, so compare module grids)."""
    from PIL import Image  # pillow is present via fpdf2

    xml = _read("CfdiUtils__cfdi40-real.xml")
    v = parse_invoice(xml)
    url = verification_url(v.timbre.uuid, v.emisor_rfc, v.receptor_rfc, v.total, v.sello)
    expected = segno.make(url, error="m", boost_error=False, micro=False).matrix
    pdf_path = tmp_path / "invoice.pdf"
    pdf_path.write_bytes(render_invoice_pdf(xml))
    subprocess.run(
        ["pdftoppm", "-png", "-r", "300", "-singlefile", str(pdf_path), str(tmp_path / "page")],
        capture_output=True, check=True,
    )
    img = Image.open(tmp_path / "page.png").convert("RGB")
    w, h = img.size
    px = img.load()

    def black(x: int, y: int) -> bool:  # only the QR is pure black; text is (20, 20, 20)
        return max(px[x, y]) < 10

    xs, ys = [], []
    for y in range(0, h, 2):
        for x in range(0, w // 3, 2):
            if black(x, y):
                xs.append(x)
                ys.append(y)
    x0, x1, y0 = min(xs), max(xs), min(ys)
    n = len(expected)
    module = (x1 - x0 + 2) / n
    got = tuple(
        bytearray(1 if black(int(x0 + (c + 0.5) * module), int(y0 + (r + 0.5) * module)) else 0 for c in range(n))
        for r in range(n)
    )
    assert got == tuple(bytearray(row) for row in expected)


# The TFD cadena format cases moved to tests/cfdi/test_catalogs_cadena.py: the PDF now prints the
# engine's cadena (SAT's XSLT) instead of building its own.


@pytest.mark.parametrize("name", TFD_OK)
def test_tfd_cadena_verifies_sello_sat(name: str) -> None:
    """The cadena we print is what the PAC signed: SelloSAT verifies over it with SAT's cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    t = parse_invoice(_read(name)).timbre
    cert_path = SAT_CERTS / f"{t.no_certificado_sat}.cer"
    if not cert_path.exists():
        pytest.skip("SAT certificate not available")
    cadena = t.cadena
    cert = x509.load_der_x509_certificate(cert_path.read_bytes())
    cert.public_key().verify(
        base64.b64decode(t.sello_sat), cadena.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
    )


# ---------------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0", "MXN", "CERO PESOS 00/100 M.N."),
        ("1", "MXN", "UN PESO 00/100 M.N."),
        ("21", "MXN", "VEINTIÚN PESOS 00/100 M.N."),
        ("100", "MXN", "CIEN PESOS 00/100 M.N."),
        ("101", "MXN", "CIENTO UN PESOS 00/100 M.N."),
        ("1000", "MXN", "MIL PESOS 00/100 M.N."),
        ("1001", "MXN", "MIL UN PESOS 00/100 M.N."),
        ("1000000", "MXN", "UN MILLÓN DE PESOS 00/100 M.N."),
        ("2500000.99", "MXN", "DOS MILLONES QUINIENTOS MIL PESOS 99/100 M.N."),
        ("1234.50", "MXN", "MIL DOSCIENTOS TREINTA Y CUATRO PESOS 50/100 M.N."),
        ("1234.50", "USD", "MIL DOSCIENTOS TREINTA Y CUATRO DÓLARES 50/100 USD"),
        ("1", "USD", "UN DÓLAR 00/100 USD"),
        ("16.005", "MXN", "DIECISÉIS PESOS 01/100 M.N."),
        ("21000", "MXN", "VEINTIÚN MIL PESOS 00/100 M.N."),
        ("777777", "MXN", "SETECIENTOS SETENTA Y SIETE MIL SETECIENTOS SETENTA Y SIETE PESOS 00/100 M.N."),
        ("1001001", "MXN", "UN MILLÓN MIL UN PESOS 00/100 M.N."),
        ("1000000000", "MXN", "MIL MILLONES DE PESOS 00/100 M.N."),
        ("515.10", "EUR", "QUINIENTOS QUINCE EUROS 10/100 EUR"),
        ("22.5", "JPY", "VEINTIDÓS 50/100 JPY"),
    ],
)
def test_amount_in_words(amount: str, currency: str, expected: str) -> None:
    assert amount_in_words(Decimal(amount), currency) == expected
