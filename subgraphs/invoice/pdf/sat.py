"""SAT strings printed on the representación impresa: QR verification URL and TFD cadena.

QR (Anexo 20, "Especificación técnica del código de barras bidimensional", same for 3.3/4.0):
    https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx?id=<UUID>&re=<RFC emisor>
        &rr=<RFC receptor>&tt=<Total>&fe=<last 8 chars of Comprobante/@Sello>
`tt` is the total with up to 18 integer and 6 decimal digits and "non-significant zeros
omitted"; like phpcfdi/cfdi-expresiones (the de-facto reference; its test vector is in our
tests) we round to 6 decimals, drop trailing zeros but keep one decimal digit: "1000.00" ->
"1000.0", "0" -> "0.0", "123.45" -> "123.45". RFCs containing "&" are XML-escaped ("&amp;").

TFD 1.1 cadena original (SAT's cadenaoriginal_TFD_1_1.xslt):
    ||Version|UUID|FechaTimbrado|RfcProvCertif[|Leyenda]|SelloCFD|NoCertificadoSAT||
with each value whitespace-normalized (XPath normalize-space) and Leyenda only when present.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

VERIFICA_CFDI_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"


def format_qr_total(total: str | Decimal) -> str:
    try:
        value = Decimal(str(total).strip() or "0")
    except InvalidOperation:
        value = Decimal(0)
    text = f"{value.quantize(Decimal('0.000001'), rounding=ROUND_HALF_UP):f}".rstrip("0")
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


def _norm(value: str) -> str:
    return " ".join(value.split())


def tfd_cadena_original(
    *,
    uuid: str,
    fecha_timbrado: str,
    rfc_prov_certif: str,
    sello_cfd: str,
    no_certificado_sat: str,
    leyenda: str | None = None,
    version: str = "1.1",
) -> str:
    """Cadena original del complemento de certificación digital del SAT (TFD 1.1)."""
    fields = [version, uuid, fecha_timbrado, rfc_prov_certif]
    if leyenda is not None and _norm(leyenda):
        fields.append(leyenda)
    fields += [sello_cfd, no_certificado_sat]
    return "||" + "|".join(_norm(f) for f in fields) + "||"
