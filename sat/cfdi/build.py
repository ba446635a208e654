"""Model -> cfdi:Comprobante 4.0 XML (lxml tree or bytes). The one place model fields become
SAT attribute names when writing.

Decisions:
- Every element is in a *prefixed* namespace (cfdi:, pago20:, tfd:) and no default namespace is
  ever declared, so lxml's c14n of any sub-element cannot add a spurious xmlns="".
- All namespaces are declared on the root (cfdi, xsi, pago20 when present); the timbre declares
  its own tfd namespace and schemaLocation, as PACs emit it.
- Attributes follow the XSD order; Sello/NoCertificado/Certificado are written as placeholders in
  their place so `csd.sign_cfdi` fills them without reordering.
- Money is formatted with the currency's c_Moneda decimals; TasaOCuota with 6 decimals;
  Cantidad/ValorUnitario as given (ValorUnitario padded to the currency decimals).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from lxml import etree

from . import catalogs
from .models import (
    CFDI_NS,
    PAGO20_NS,
    TFD_NS,
    XSI_NS,
    Concept,
    Invoice,
    Payment,
    PaymentsComplement,
    PaymentTax,
    RelatedDocument,
    Tax,
    TimbreFiscalDigital,
)
from .totals import round_money

CFDI_SCHEMA_LOCATION = "http://www.sat.gob.mx/cfd/4 http://www.sat.gob.mx/sitio_internet/cfd/4/cfdv40.xsd"
PAGO20_SCHEMA_LOCATION = "http://www.sat.gob.mx/Pagos20 http://www.sat.gob.mx/sitio_internet/cfd/Pagos/Pagos20.xsd"
TFD_SCHEMA_LOCATION = (
    "http://www.sat.gob.mx/TimbreFiscalDigital "
    "http://www.sat.gob.mx/sitio_internet/cfd/TimbreFiscalDigital/TimbreFiscalDigitalv11.xsd"
)
_XSI_LOC = f"{{{XSI_NS}}}schemaLocation"


def fmt_datetime(value: datetime) -> str:
    """SAT's t_FechaH: local time 'YYYY-MM-DDTHH:MM:SS', no fraction, no offset."""
    return value.replace(tzinfo=None, microsecond=0).isoformat(timespec="seconds")


def fmt_money(value: Decimal, decimals: int) -> str:
    # Same rounding as totals/payments (round_money, half-up): an amount the caller did not
    # round must print the way it was summed, or e.g. Monto (half-up) != Σ ImpPagado.
    return format(round_money(value, decimals), "f")


def fmt_rate(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")), "f")


def fmt_decimal(value: Decimal) -> str:
    """As written by the caller (no exponent notation)."""
    if not isinstance(value, Decimal):
        raise TypeError(f"valor debe ser Decimal, no {type(value).__name__}")
    return format(value, "f")


def _fmt_at_least(value: Decimal, decimals: int) -> str:
    exponent = value.as_tuple().exponent
    written = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return fmt_money(value, max(decimals, written))


def _set(el: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        el.set(name, value)


def _sub(parent: etree._Element, ns: str, tag: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{ns}}}{tag}")


def _c(parent: etree._Element, tag: str) -> etree._Element:
    return _sub(parent, CFDI_NS, tag)


def _tax_attrs(el: etree._Element, tax: Tax, decimals: int, withholding: bool) -> None:
    el.set("Base", fmt_money(tax.base, decimals))
    el.set("Impuesto", tax.tax)
    el.set("TipoFactor", tax.factor_type)
    if tax.factor_type != "Exento" or withholding:
        el.set("TasaOCuota", fmt_rate(tax.rate))
        el.set("Importe", fmt_money(tax.amount, decimals))


def _concept(parent: etree._Element, c: Concept, decimals: int) -> None:
    el = _c(parent, "Concepto")
    el.set("ClaveProdServ", c.product_code)
    _set(el, "NoIdentificacion", c.identification)
    el.set("Cantidad", fmt_decimal(c.quantity))
    el.set("ClaveUnidad", c.unit_code)
    _set(el, "Unidad", c.unit)
    el.set("Descripcion", c.description)
    el.set("ValorUnitario", _fmt_at_least(c.unit_price, decimals))
    el.set("Importe", fmt_money(c.amount, decimals))
    if c.discount is not None:
        el.set("Descuento", fmt_money(c.discount, decimals))
    el.set("ObjetoImp", c.tax_object)
    if c.transferred_taxes or c.withheld_taxes:
        taxes = _c(el, "Impuestos")
        if c.transferred_taxes:
            group = _c(taxes, "Traslados")
            for t in c.transferred_taxes:
                _tax_attrs(_c(group, "Traslado"), t, decimals, withholding=False)
        if c.withheld_taxes:
            group = _c(taxes, "Retenciones")
            for t in c.withheld_taxes:
                _tax_attrs(_c(group, "Retencion"), t, decimals, withholding=True)
    if c.third_party is not None:
        tp = _c(el, "ACuentaTerceros")
        tp.set("RfcACuentaTerceros", c.third_party.rfc)
        tp.set("NombreACuentaTerceros", c.third_party.name)
        tp.set("RegimenFiscalACuentaTerceros", c.third_party.tax_regime)
        tp.set("DomicilioFiscalACuentaTerceros", c.third_party.tax_zip_code)
    for number in c.customs_numbers:
        _c(el, "InformacionAduanera").set("NumeroPedimento", number)
    for number in c.property_accounts:
        _c(el, "CuentaPredial").set("Numero", number)


def _invoice_taxes(root: etree._Element, inv: Invoice, decimals: int) -> None:
    if not inv.transferred_totals and not inv.withheld_totals:
        return
    el = _c(root, "Impuestos")
    if inv.total_withheld is not None:
        el.set("TotalImpuestosRetenidos", fmt_money(inv.total_withheld, decimals))
    if inv.total_transferred is not None:
        el.set("TotalImpuestosTrasladados", fmt_money(inv.total_transferred, decimals))
    if inv.withheld_totals:
        group = _c(el, "Retenciones")
        for t in inv.withheld_totals:
            line = _c(group, "Retencion")
            line.set("Impuesto", t.tax)
            line.set("Importe", fmt_money(t.amount, decimals))
    if inv.transferred_totals:
        group = _c(el, "Traslados")
        for t in inv.transferred_totals:
            line = _c(group, "Traslado")
            line.set("Base", fmt_money(t.base, decimals))
            line.set("Impuesto", t.tax)
            line.set("TipoFactor", t.factor_type)
            if t.factor_type != "Exento":
                line.set("TasaOCuota", fmt_rate(t.rate))
                line.set("Importe", fmt_money(t.amount, decimals))


def _payment_tax(parent: etree._Element, tag: str, t: PaymentTax, suffix: str) -> None:
    el = _sub(parent, PAGO20_NS, tag)
    if t.base is not None:
        el.set(f"Base{suffix}", fmt_decimal(t.base))
    el.set(f"Impuesto{suffix}", t.tax)
    if t.factor_type is not None:
        el.set(f"TipoFactor{suffix}", t.factor_type)
    if t.rate is not None:
        el.set(f"TasaOCuota{suffix}", fmt_rate(t.rate))
    if t.amount is not None:
        el.set(f"Importe{suffix}", fmt_decimal(t.amount))


def _payment_taxes(
    parent: etree._Element, tag: str, suffix: str, withheld: list[PaymentTax], transferred: list[PaymentTax]
) -> None:
    if not withheld and not transferred:
        return
    el = _sub(parent, PAGO20_NS, tag)
    if withheld:
        group = _sub(el, PAGO20_NS, f"Retenciones{suffix}")
        for t in withheld:
            _payment_tax(group, f"Retencion{suffix}", t, suffix)
    if transferred:
        group = _sub(el, PAGO20_NS, f"Traslados{suffix}")
        for t in transferred:
            _payment_tax(group, f"Traslado{suffix}", t, suffix)


def _related_document(parent: etree._Element, d: RelatedDocument) -> None:
    el = _sub(parent, PAGO20_NS, "DoctoRelacionado")
    decimals = catalogs.currency_decimals(d.currency)
    el.set("IdDocumento", d.uuid)
    _set(el, "Serie", d.series)
    _set(el, "Folio", d.folio)
    el.set("MonedaDR", d.currency)
    if d.exchange_rate is not None:
        el.set("EquivalenciaDR", fmt_decimal(d.exchange_rate))
    el.set("NumParcialidad", str(d.installment))
    el.set("ImpSaldoAnt", fmt_money(d.previous_balance, decimals))
    el.set("ImpPagado", fmt_money(d.amount_paid, decimals))
    el.set("ImpSaldoInsoluto", fmt_money(d.remaining_balance, decimals))
    el.set("ObjetoImpDR", d.tax_object)
    _payment_taxes(el, "ImpuestosDR", "DR", d.withheld_taxes, d.transferred_taxes)


def _payment(parent: etree._Element, p: Payment) -> None:
    el = _sub(parent, PAGO20_NS, "Pago")
    el.set("FechaPago", fmt_datetime(p.paid_at))
    el.set("FormaDePagoP", p.payment_form)
    el.set("MonedaP", p.currency)
    if p.exchange_rate is not None:
        el.set("TipoCambioP", fmt_decimal(p.exchange_rate))
    el.set("Monto", fmt_money(p.amount, catalogs.currency_decimals(p.currency)))
    _set(el, "NumOperacion", p.operation_number)
    for d in p.related_documents:
        _related_document(el, d)
    _payment_taxes(el, "ImpuestosP", "P", p.withheld_taxes, p.transferred_taxes)


_TOTALS_ATTRS = (
    ("TotalRetencionesIVA", "withheld_iva"),
    ("TotalRetencionesISR", "withheld_isr"),
    ("TotalRetencionesIEPS", "withheld_ieps"),
    ("TotalTrasladosBaseIVA16", "transferred_base_iva16"),
    ("TotalTrasladosImpuestoIVA16", "transferred_iva16"),
    ("TotalTrasladosBaseIVA8", "transferred_base_iva8"),
    ("TotalTrasladosImpuestoIVA8", "transferred_iva8"),
    ("TotalTrasladosBaseIVA0", "transferred_base_iva0"),
    ("TotalTrasladosImpuestoIVA0", "transferred_iva0"),
    ("TotalTrasladosBaseIVAExento", "exempt_base_iva"),
    ("MontoTotalPagos", "total_amount"),
)


def payments_element(pagos: PaymentsComplement) -> etree._Element:
    """pago20:Pagos (namespace declared by the root Comprobante when embedded)."""
    el = etree.Element(f"{{{PAGO20_NS}}}Pagos", nsmap={"pago20": PAGO20_NS})
    el.set("Version", pagos.version)
    totals = _sub(el, PAGO20_NS, "Totales")
    for attr, field_name in _TOTALS_ATTRS:
        value = getattr(pagos.totals, field_name)
        if value is not None:
            totals.set(attr, fmt_money(value, 2))  # Totales are always MXN
    for p in pagos.payments:
        _payment(el, p)
    return el


def tfd_element(stamp: TimbreFiscalDigital) -> etree._Element:
    """tfd:TimbreFiscalDigital 1.1 with its own namespace declarations, as PACs emit it."""
    el = etree.Element(f"{{{TFD_NS}}}TimbreFiscalDigital", nsmap={"tfd": TFD_NS, "xsi": XSI_NS})
    el.set(_XSI_LOC, TFD_SCHEMA_LOCATION)
    el.set("Version", stamp.version)
    el.set("UUID", stamp.uuid)
    el.set("FechaTimbrado", fmt_datetime(stamp.stamped_at))
    el.set("RfcProvCertif", stamp.pac_rfc)
    _set(el, "Leyenda", stamp.legend)
    el.set("SelloCFD", stamp.cfd_seal)
    el.set("NoCertificadoSAT", stamp.sat_certificate_number)
    el.set("SelloSAT", stamp.sat_seal)
    return el


def build_tree(inv: Invoice) -> etree._Element:
    """The cfdi:Comprobante element for `inv` (amounts must be computed: see totals.compute_totals)."""
    if inv.subtotal is None or inv.total is None or any(c.amount is None for c in inv.concepts):
        raise ValueError("faltan importes calculados: aplica totals.compute_totals primero")
    decimals = catalogs.currency_decimals(inv.currency)
    nsmap = {"cfdi": CFDI_NS, "xsi": XSI_NS}
    locations = [CFDI_SCHEMA_LOCATION]
    if inv.payments is not None:
        nsmap["pago20"] = PAGO20_NS
        locations.append(PAGO20_SCHEMA_LOCATION)
    root = etree.Element(f"{{{CFDI_NS}}}Comprobante", nsmap=nsmap)
    root.set(_XSI_LOC, " ".join(locations))
    root.set("Version", "4.0")
    _set(root, "Serie", inv.series)
    _set(root, "Folio", inv.folio)
    root.set("Fecha", fmt_datetime(inv.issued_at))
    root.set("Sello", inv.seal or "")
    _set(root, "FormaPago", inv.payment_form)
    root.set("NoCertificado", inv.certificate_number or "")
    root.set("Certificado", inv.certificate or "")
    _set(root, "CondicionesDePago", inv.payment_conditions)
    root.set("SubTotal", fmt_money(inv.subtotal, decimals))
    if inv.discount is not None:
        root.set("Descuento", fmt_money(inv.discount, decimals))
    root.set("Moneda", inv.currency)
    if inv.exchange_rate is not None:
        root.set("TipoCambio", fmt_decimal(inv.exchange_rate))
    root.set("Total", fmt_money(inv.total, decimals))
    root.set("TipoDeComprobante", inv.voucher_type)
    root.set("Exportacion", inv.exportation)
    _set(root, "MetodoPago", inv.payment_method)
    root.set("LugarExpedicion", inv.place_of_issue)
    _set(root, "Confirmacion", inv.confirmation)

    if inv.global_information is not None:
        g = _c(root, "InformacionGlobal")
        g.set("Periodicidad", inv.global_information.periodicity)
        g.set("Meses", inv.global_information.months)
        g.set("Año", str(inv.global_information.year))
    for rel in inv.related:
        r = _c(root, "CfdiRelacionados")
        r.set("TipoRelacion", rel.relation_type)
        for uuid in rel.uuids:
            _c(r, "CfdiRelacionado").set("UUID", uuid)
    issuer = _c(root, "Emisor")
    issuer.set("Rfc", inv.issuer.rfc)
    issuer.set("Nombre", inv.issuer.name)
    issuer.set("RegimenFiscal", inv.issuer.tax_regime)
    _set(issuer, "FacAtrAdquirente", inv.issuer.acquirer_operation_number)
    rec = _c(root, "Receptor")
    rec.set("Rfc", inv.receiver.rfc)
    rec.set("Nombre", inv.receiver.name)
    rec.set("DomicilioFiscalReceptor", inv.receiver.tax_zip_code)
    _set(rec, "ResidenciaFiscal", inv.receiver.tax_residence)
    _set(rec, "NumRegIdTrib", inv.receiver.foreign_tax_id)
    rec.set("RegimenFiscalReceptor", inv.receiver.tax_regime)
    rec.set("UsoCFDI", inv.receiver.cfdi_use)
    concepts = _c(root, "Conceptos")
    for c in inv.concepts:
        _concept(concepts, c, decimals)
    _invoice_taxes(root, inv, decimals)
    if inv.payments is not None or inv.stamp is not None:
        comp = _c(root, "Complemento")
        if inv.payments is not None:
            comp.append(payments_element(inv.payments))
        if inv.stamp is not None:
            comp.append(tfd_element(inv.stamp))
    return root


def to_bytes(root: etree._Element) -> bytes:
    """UTF-8 bytes with XML declaration, no pretty-printing (whitespace is not significant for the
    cadena, but keeping the output compact avoids surprises with mixed-content tools)."""
    body = etree.tostring(root, xml_declaration=False, encoding="UTF-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def build_xml(inv: Invoice) -> bytes:
    return to_bytes(build_tree(inv))
