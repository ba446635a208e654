"""CFDI 4.0 XML -> models (for stored or PAC-stamped CFDIs). The one place SAT attribute names
become model fields when reading.

Amounts are taken exactly as written (Decimal(text)), never recomputed, so a stored CFDI is
represented faithfully even if its issuer rounded differently from us. Complements other than
pago20:Pagos and tfd:TimbreFiscalDigital (nómina, comercio exterior, ...) are not modelled; the
raw XML stays the source of truth for those.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from lxml import etree

from .models import (
    CFDI_NS,
    PAGO20_NS,
    TFD_NS,
    Concept,
    GlobalInformation,
    Invoice,
    Issuer,
    Payment,
    PaymentsComplement,
    PaymentTax,
    PaymentTotals,
    Receiver,
    RelatedCfdis,
    RelatedDocument,
    Tax,
    TaxTotal,
    ThirdParty,
    TimbreFiscalDigital,
)
from .xmlsafe import parse_xml


class CfdiParseError(ValueError):
    """The XML is well-formed but is not a CFDI 4.0 we can read (message in es-MX)."""


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _dec(el: etree._Element, name: str) -> Decimal | None:
    value = el.get(name)
    if value is None:
        return None
    try:
        return Decimal(value.strip())
    except InvalidOperation as exc:
        raise CfdiParseError(f"{name}='{value}' no es un número válido") from exc


def _req_dec(el: etree._Element, name: str) -> Decimal:
    value = _dec(el, name)
    if value is None:
        raise CfdiParseError(f"falta el atributo {name} en {etree.QName(el).localname}")
    return value


def _req(el: etree._Element | None, name: str) -> str:
    if el is None:
        raise CfdiParseError(f"falta el nodo que contiene {name}")
    value = el.get(name)
    if value is None:
        raise CfdiParseError(f"falta el atributo {name} en {etree.QName(el).localname}")
    return value


def _dt(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise CfdiParseError(f"fecha inválida: {value}") from exc


def _tax(el: etree._Element) -> Tax:
    return Tax(
        tax=_req(el, "Impuesto"),
        factor_type=_req(el, "TipoFactor"),
        rate=_dec(el, "TasaOCuota"),
        base=_dec(el, "Base"),
        amount=_dec(el, "Importe"),
    )


def _concept(el: etree._Element) -> Concept:
    c = lambda tag: _q(CFDI_NS, tag)  # noqa: E731
    third = el.find(c("ACuentaTerceros"))
    return Concept(
        product_code=_req(el, "ClaveProdServ"),
        quantity=_req_dec(el, "Cantidad"),
        unit_code=_req(el, "ClaveUnidad"),
        description=_req(el, "Descripcion"),
        unit_price=_req_dec(el, "ValorUnitario"),
        tax_object=_req(el, "ObjetoImp"),
        identification=el.get("NoIdentificacion"),
        unit=el.get("Unidad"),
        discount=_dec(el, "Descuento"),
        amount=_req_dec(el, "Importe"),
        transferred_taxes=[_tax(t) for t in el.iterfind(f"{c('Impuestos')}/{c('Traslados')}/{c('Traslado')}")],
        withheld_taxes=[_tax(t) for t in el.iterfind(f"{c('Impuestos')}/{c('Retenciones')}/{c('Retencion')}")],
        third_party=None
        if third is None
        else ThirdParty(
            _req(third, "RfcACuentaTerceros"),
            _req(third, "NombreACuentaTerceros"),
            _req(third, "RegimenFiscalACuentaTerceros"),
            _req(third, "DomicilioFiscalACuentaTerceros"),
        ),
        customs_numbers=[_req(x, "NumeroPedimento") for x in el.iterfind(c("InformacionAduanera"))],
        property_accounts=[_req(x, "Numero") for x in el.iterfind(c("CuentaPredial"))],
    )


def _payment_tax(el: etree._Element, suffix: str) -> PaymentTax:
    return PaymentTax(
        tax=_req(el, f"Impuesto{suffix}"),
        factor_type=el.get(f"TipoFactor{suffix}"),
        rate=_dec(el, f"TasaOCuota{suffix}"),
        base=_dec(el, f"Base{suffix}"),
        amount=_dec(el, f"Importe{suffix}"),
    )


def _payment_taxes(el: etree._Element, suffix: str) -> tuple[list[PaymentTax], list[PaymentTax]]:
    p = lambda tag: _q(PAGO20_NS, tag)  # noqa: E731
    base = f"{p('Impuestos' + suffix)}"
    transferred = [
        _payment_tax(t, suffix) for t in el.iterfind(f"{base}/{p('Traslados' + suffix)}/{p('Traslado' + suffix)}")
    ]
    withheld = [
        _payment_tax(t, suffix) for t in el.iterfind(f"{base}/{p('Retenciones' + suffix)}/{p('Retencion' + suffix)}")
    ]
    return transferred, withheld


def parse_payments(el: etree._Element) -> PaymentsComplement:
    p = lambda tag: _q(PAGO20_NS, tag)  # noqa: E731
    tot = el.find(p("Totales"))
    if tot is None:
        raise CfdiParseError("pago20:Pagos sin nodo Totales")
    totals = PaymentTotals(
        total_amount=_req_dec(tot, "MontoTotalPagos"),
        withheld_iva=_dec(tot, "TotalRetencionesIVA"),
        withheld_isr=_dec(tot, "TotalRetencionesISR"),
        withheld_ieps=_dec(tot, "TotalRetencionesIEPS"),
        transferred_base_iva16=_dec(tot, "TotalTrasladosBaseIVA16"),
        transferred_iva16=_dec(tot, "TotalTrasladosImpuestoIVA16"),
        transferred_base_iva8=_dec(tot, "TotalTrasladosBaseIVA8"),
        transferred_iva8=_dec(tot, "TotalTrasladosImpuestoIVA8"),
        transferred_base_iva0=_dec(tot, "TotalTrasladosBaseIVA0"),
        transferred_iva0=_dec(tot, "TotalTrasladosImpuestoIVA0"),
        exempt_base_iva=_dec(tot, "TotalTrasladosBaseIVAExento"),
    )
    payments = []
    for pe in el.iterfind(p("Pago")):
        docs = []
        for d in pe.iterfind(p("DoctoRelacionado")):
            dt, dw = _payment_taxes(d, "DR")
            docs.append(
                RelatedDocument(
                    uuid=_req(d, "IdDocumento"),
                    currency=_req(d, "MonedaDR"),
                    installment=int(_req(d, "NumParcialidad")),
                    previous_balance=_req_dec(d, "ImpSaldoAnt"),
                    amount_paid=_req_dec(d, "ImpPagado"),
                    remaining_balance=_req_dec(d, "ImpSaldoInsoluto"),
                    tax_object=_req(d, "ObjetoImpDR"),
                    series=d.get("Serie"),
                    folio=d.get("Folio"),
                    exchange_rate=_dec(d, "EquivalenciaDR"),
                    transferred_taxes=dt,
                    withheld_taxes=dw,
                )
            )
        pt, pw = _payment_taxes(pe, "P")
        payments.append(
            Payment(
                paid_at=_dt(_req(pe, "FechaPago")),
                payment_form=_req(pe, "FormaDePagoP"),
                currency=_req(pe, "MonedaP"),
                amount=_req_dec(pe, "Monto"),
                exchange_rate=_dec(pe, "TipoCambioP"),
                operation_number=pe.get("NumOperacion"),
                related_documents=docs,
                transferred_taxes=pt,
                withheld_taxes=pw,
            )
        )
    return PaymentsComplement(totals=totals, payments=payments, version=_req(el, "Version"))


def parse_tfd(el: etree._Element) -> TimbreFiscalDigital:
    return TimbreFiscalDigital(
        uuid=_req(el, "UUID"),
        stamped_at=_dt(_req(el, "FechaTimbrado")),
        pac_rfc=_req(el, "RfcProvCertif"),
        cfd_seal=_req(el, "SelloCFD"),
        sat_certificate_number=_req(el, "NoCertificadoSAT"),
        sat_seal=_req(el, "SelloSAT"),
        legend=el.get("Leyenda"),
        version=_req(el, "Version"),
    )


def parse_tree(root: etree._Element) -> Invoice:
    """A cfdi:Comprobante 4.0 element -> Invoice."""
    c = lambda tag: _q(CFDI_NS, tag)  # noqa: E731
    if root.tag != c("Comprobante") or root.get("Version") != "4.0":
        raise CfdiParseError("el documento no es un CFDI versión 4.0")
    issuer_el, receiver_el = root.find(c("Emisor")), root.find(c("Receptor"))
    if issuer_el is None or receiver_el is None:
        raise CfdiParseError("faltan los nodos Emisor o Receptor")
    g = root.find(c("InformacionGlobal"))
    taxes = root.find(c("Impuestos"))
    transferred_totals: list[TaxTotal] = []
    withheld_totals: list[TaxTotal] = []
    if taxes is not None:
        transferred_totals = [
            TaxTotal(
                tax=_req(t, "Impuesto"),
                amount=_dec(t, "Importe"),
                factor_type=_req(t, "TipoFactor"),
                rate=_dec(t, "TasaOCuota"),
                base=_req_dec(t, "Base"),
            )
            for t in taxes.iterfind(f"{c('Traslados')}/{c('Traslado')}")
        ]
        withheld_totals = [
            TaxTotal(tax=_req(t, "Impuesto"), amount=_req_dec(t, "Importe"))
            for t in taxes.iterfind(f"{c('Retenciones')}/{c('Retencion')}")
        ]
    pagos = root.find(f"{c('Complemento')}/{_q(PAGO20_NS, 'Pagos')}")
    tfd = root.find(f"{c('Complemento')}/{_q(TFD_NS, 'TimbreFiscalDigital')}")
    return Invoice(
        issued_at=_dt(_req(root, "Fecha")),
        place_of_issue=_req(root, "LugarExpedicion"),
        voucher_type=_req(root, "TipoDeComprobante"),
        exportation=_req(root, "Exportacion"),
        currency=_req(root, "Moneda"),
        issuer=Issuer(
            _req(issuer_el, "Rfc"),
            _req(issuer_el, "Nombre"),
            _req(issuer_el, "RegimenFiscal"),
            issuer_el.get("FacAtrAdquirente"),
        ),
        receiver=Receiver(
            rfc=_req(receiver_el, "Rfc"),
            name=_req(receiver_el, "Nombre"),
            tax_zip_code=_req(receiver_el, "DomicilioFiscalReceptor"),
            tax_regime=_req(receiver_el, "RegimenFiscalReceptor"),
            cfdi_use=_req(receiver_el, "UsoCFDI"),
            tax_residence=receiver_el.get("ResidenciaFiscal"),
            foreign_tax_id=receiver_el.get("NumRegIdTrib"),
        ),
        concepts=[_concept(x) for x in root.iterfind(f"{c('Conceptos')}/{c('Concepto')}")],
        series=root.get("Serie"),
        folio=root.get("Folio"),
        payment_form=root.get("FormaPago"),
        payment_method=root.get("MetodoPago"),
        payment_conditions=root.get("CondicionesDePago"),
        exchange_rate=_dec(root, "TipoCambio"),
        confirmation=root.get("Confirmacion"),
        global_information=None
        if g is None
        else GlobalInformation(_req(g, "Periodicidad"), _req(g, "Meses"), int(_req(g, "Año"))),
        related=[
            RelatedCfdis(_req(r, "TipoRelacion"), [_req(u, "UUID") for u in r.iterfind(c("CfdiRelacionado"))])
            for r in root.iterfind(c("CfdiRelacionados"))
        ],
        subtotal=_req_dec(root, "SubTotal"),
        discount=_dec(root, "Descuento"),
        total=_req_dec(root, "Total"),
        total_transferred=None if taxes is None else _dec(taxes, "TotalImpuestosTrasladados"),
        total_withheld=None if taxes is None else _dec(taxes, "TotalImpuestosRetenidos"),
        transferred_totals=transferred_totals,
        withheld_totals=withheld_totals,
        payments=None if pagos is None else parse_payments(pagos),
        stamp=None if tfd is None else parse_tfd(tfd),
        certificate_number=root.get("NoCertificado"),
        certificate=root.get("Certificado"),
        seal=root.get("Sello"),
    )


def parse_cfdi(data: bytes) -> Invoice:
    """Untrusted CFDI bytes -> Invoice (hardened parse via xmlsafe.parse_xml)."""
    return parse_tree(parse_xml(data))
