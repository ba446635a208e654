"""SAT's QR verification URL printed on the representación impresa.

QR (Anexo 20, "Especificación técnica del código de barras bidimensional", same for 3.3/4.0):
    https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?id=<UUID>&re=<RFC emisor>
        &rr=<RFC receptor>&tt=<Total>&fe=<last 8 chars of Comprobante/@Sello>
`tt` is the total with up to 18 integer and 6 decimal digits and "non-significant zeros
omitted"; like phpcfdi/cfdi-expresiones (the de-facto reference; its test vector is in our
tests) we round to 6 decimals, drop trailing zeros but keep one decimal digit: "1000.00" ->
"1000.0", "0" -> "0.0", "123.45" -> "123.45". RFCs containing "&" are XML-escaped ("&amp;").

The TFD cadena original is not built here: the view takes it from the engine
(`sat.cfdi.cadena.tfd_cadena_original`, SAT's own XSLT), the one definition the
PAC's SelloSAT is computed over.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

VERIFICA_CFDI_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"


def format_qr_total(total: str | Decimal) -> str:
    # A Total that is not a usable amount (text, NaN/Infinity, or too many digits to quantize)
    # prints as 0 rather than failing the whole PDF: the XSD already rejects such an XML.
    try:
        value = Decimal(str(total).strip() or "0").quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        value = Decimal("0.000000")
    if not value.is_finite():
        value = Decimal("0.000000")
    text = f"{value:f}".rstrip("0")
    if text.endswith("."):
        text += "0"
    return text


def _xml_escape_rfc(rfc: str) -> str:
    return rfc.replace("&", "&amp;")


def verification_url(uuid: str, rfc_emisor: str, rfc_receptor: str, total: str | Decimal, sello: str) -> str:
    """SAT's verification URL, the QR payload of the representación impresa."""
    return (
        f"{VERIFICA_CFDI_URL}?id={uuid}"
        f"&re={_xml_escape_rfc(rfc_emisor)}"
        f"&rr={_xml_escape_rfc(rfc_receptor)}"
        f"&tt={format_qr_total(total)}"
        f"&fe={sello[-8:]}"
    )
