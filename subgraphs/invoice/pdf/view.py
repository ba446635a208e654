"""A small, display-only view of a stamped CFDI 4.0, read straight from the XML.

This is *not* the engine's model (sat/cfdi): it keeps every value as the exact
string found in the XML (so the PDF shows what was stamped) and only what the representación
impresa prints. Parsing goes through the project's one hardened parser, `xmlsafe.parse_xml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from lxml import etree

from sat.cfdi.cadena import tfd_cadena_original
from sat.cfdi.models import CFDI_NS, PAGO20_NS, TFD_NS
from sat.cfdi.xmlsafe import parse_xml

# The engine does not model Nómina or implocal (display only here), so those two live here.
NS = {
    "cfdi": CFDI_NS,
    "tfd": TFD_NS,
    "pago20": PAGO20_NS,
    "nomina12": "http://www.sat.gob.mx/nomina12",
    "implocal": "http://www.sat.gob.mx/implocal",
}
_CFDI = f"{{{CFDI_NS}}}"


class NotACfdi40Error(ValueError):
    """The XML is well-formed but is not a CFDI 4.0 Comprobante."""


@dataclass(frozen=True, slots=True)
class Tax:
    kind: str  # "T" traslado | "R" retención
    impuesto: str
    tipo_factor: str = ""
    tasa_o_cuota: str = ""
    base: str = ""
    importe: str = ""


@dataclass(frozen=True, slots=True)
class Concepto:
    clave_prod_serv: str
    no_identificacion: str
    cantidad: str
    clave_unidad: str
    unidad: str
    descripcion: str
    valor_unitario: str
    importe: str
    descuento: str
    objeto_imp: str
    taxes: tuple[Tax, ...] = ()
    # Extra lines (terceros, cuenta predial, pedimentos, partes), already formatted for display.
    extras: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Relacionados:
    tipo_relacion: str
    uuids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DoctoRelacionado:
    id_documento: str
    serie: str
    folio: str
    moneda_dr: str
    equivalencia_dr: str
    num_parcialidad: str
    imp_saldo_ant: str
    imp_pagado: str
    imp_saldo_insoluto: str
    objeto_imp_dr: str


@dataclass(frozen=True, slots=True)
class Pago:
    fecha_pago: str
    forma_de_pago: str
    moneda: str
    tipo_cambio: str
    monto: str
    num_operacion: str
    doctos: tuple[DoctoRelacionado, ...] = ()
    taxes: tuple[Tax, ...] = ()


@dataclass(frozen=True, slots=True)
class Pagos:
    version: str
    totales: dict[str, str]
    pagos: tuple[Pago, ...]


@dataclass(frozen=True, slots=True)
class NominaLine:
    kind: str  # "P" percepción | "D" deducción | "O" otro pago
    tipo: str
    clave: str
    concepto: str
    gravado: str = ""
    exento: str = ""
    importe: str = ""


@dataclass(frozen=True, slots=True)
class Nomina:
    """Summary of the Nómina 1.2 complement (display only): the raw attributes of Nomina,
    its Emisor and Receptor, and the percepciones/deducciones/otros pagos lines."""

    attrs: dict[str, str]
    emisor: dict[str, str]
    receptor: dict[str, str]
    lines: tuple[NominaLine, ...]


@dataclass(frozen=True, slots=True)
class Timbre:
    version: str
    uuid: str
    fecha_timbrado: str
    rfc_prov_certif: str
    leyenda: str | None
    sello_cfd: str
    no_certificado_sat: str
    sello_sat: str
    # Cadena original del complemento de certificación, from SAT's own TFD XSLT (the engine's
    # cadena.tfd_cadena_original), so the PDF prints exactly what the PAC signed.
    cadena: str = ""


@dataclass(frozen=True, slots=True)
class InvoiceView:
    version: str
    serie: str
    folio: str
    fecha: str
    lugar_expedicion: str
    tipo_comprobante: str
    exportacion: str
    forma_pago: str
    metodo_pago: str
    condiciones_pago: str
    moneda: str
    tipo_cambio: str
    subtotal: str
    descuento: str
    total: str
    no_certificado: str
    sello: str
    confirmacion: str
    emisor_rfc: str
    emisor_nombre: str
    emisor_regimen: str
    emisor_fac_atr_adquirente: str
    receptor_rfc: str
    receptor_nombre: str
    receptor_domicilio_fiscal: str
    receptor_regimen: str
    receptor_uso_cfdi: str
    receptor_residencia_fiscal: str
    receptor_num_reg_id_trib: str
    informacion_global: dict[str, str] | None
    relacionados: tuple[Relacionados, ...]
    conceptos: tuple[Concepto, ...]
    traslados: tuple[Tax, ...]
    retenciones: tuple[Tax, ...]
    total_traslados: str
    total_retenciones: str
    timbre: Timbre | None
    pagos: Pagos | None = None
    nomina: Nomina | None = None
    # implocal:ImpuestosLocales, as Tax(tipo_factor="Local", tasa_o_cuota=<percent>).
    impuestos_locales: tuple[Tax, ...] = ()
    complementos: tuple[str, ...] = field(default=())  # local names of other complements


def dec(value: str | None) -> Decimal | None:
    """The XML value as a finite Decimal, or None. "NaN"/"Infinity"/"sNaN" parse as Decimals
    but are not amounts (the XSD forbids them; an unvalidated XML may still carry them), and
    downstream formatting would raise on them, so they count as "no value"."""
    if value is None or value == "":
        return None
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _a(el: etree._Element | None, name: str) -> str:
    if el is None:
        return ""
    return el.get(name, "") or ""


def _taxes(parent: etree._Element | None, suffix: str = "") -> tuple[Tax, ...]:
    """Traslado/Retencion children of an Impuestos-like node, for cfdi or pago20 (suffix P/DR)."""
    if parent is None:
        return ()
    out: list[Tax] = []
    for el in parent.iter():
        local = etree.QName(el).localname if isinstance(el.tag, str) else ""
        if local == f"Traslado{suffix}":
            kind = "T"
        elif local == f"Retencion{suffix}":
            kind = "R"
        else:
            continue
        out.append(
            Tax(
                kind=kind,
                impuesto=_a(el, f"Impuesto{suffix}"),
                tipo_factor=_a(el, f"TipoFactor{suffix}"),
                tasa_o_cuota=_a(el, f"TasaOCuota{suffix}"),
                base=_a(el, f"Base{suffix}"),
                importe=_a(el, f"Importe{suffix}"),
            )
        )
    return tuple(out)


def _concepto_extras(c: etree._Element) -> tuple[str, ...]:
    extras: list[str] = []
    t = c.find(f"{_CFDI}ACuentaTerceros")
    if t is not None:
        extras.append(
            "A cuenta de terceros: "
            f"{_a(t, 'RfcACuentaTerceros')} {_a(t, 'NombreACuentaTerceros')}, "
            f"régimen {_a(t, 'RegimenFiscalACuentaTerceros')}, "
            f"C.P. {_a(t, 'DomicilioFiscalACuentaTerceros')}"
        )
    peds = [_a(p, "NumeroPedimento") for p in c.findall(f"{_CFDI}InformacionAduanera")]
    if peds:
        extras.append("Pedimento: " + ", ".join(" ".join(p.split()) for p in peds))
    cuentas = [_a(p, "Numero") for p in c.findall(f"{_CFDI}CuentaPredial")]
    if cuentas:
        extras.append("Cuenta predial: " + ", ".join(cuentas))
    for p in c.findall(f"{_CFDI}Parte"):
        line = (
            f"Parte: {_a(p, 'ClaveProdServ')} {_a(p, 'NoIdentificacion')} "
            f"{_a(p, 'Cantidad')} {_a(p, 'Unidad')} {_a(p, 'Descripcion')}"
        )
        if p.get("Importe"):
            line += f" - Importe {_a(p, 'Importe')}"
        extras.append(" ".join(line.split()))
        pp = [_a(x, "NumeroPedimento") for x in p.findall(f"{_CFDI}InformacionAduanera")]
        if pp:
            extras.append("   Pedimento de la parte: " + ", ".join(" ".join(x.split()) for x in pp))
    return tuple(extras)


def _pagos(complemento: etree._Element | None) -> Pagos | None:
    if complemento is None:
        return None
    node = complemento.find("pago20:Pagos", NS)
    if node is None:
        return None
    tot = node.find("pago20:Totales", NS)
    pagos: list[Pago] = []
    for p in node.findall("pago20:Pago", NS):
        doctos = tuple(
            DoctoRelacionado(
                id_documento=_a(d, "IdDocumento"),
                serie=_a(d, "Serie"),
                folio=_a(d, "Folio"),
                moneda_dr=_a(d, "MonedaDR"),
                equivalencia_dr=_a(d, "EquivalenciaDR"),
                num_parcialidad=_a(d, "NumParcialidad"),
                imp_saldo_ant=_a(d, "ImpSaldoAnt"),
                imp_pagado=_a(d, "ImpPagado"),
                imp_saldo_insoluto=_a(d, "ImpSaldoInsoluto"),
                objeto_imp_dr=_a(d, "ObjetoImpDR"),
            )
            for d in p.findall("pago20:DoctoRelacionado", NS)
        )
        pagos.append(
            Pago(
                fecha_pago=_a(p, "FechaPago"),
                forma_de_pago=_a(p, "FormaDePagoP"),
                moneda=_a(p, "MonedaP"),
                tipo_cambio=_a(p, "TipoCambioP"),
                monto=_a(p, "Monto"),
                num_operacion=_a(p, "NumOperacion"),
                doctos=doctos,
                taxes=_taxes(p.find("pago20:ImpuestosP", NS), "P"),
            )
        )
    return Pagos(
        version=_a(node, "Version"),
        totales=dict(tot.attrib) if tot is not None else {},
        pagos=tuple(pagos),
    )


def _nomina(complemento: etree._Element | None) -> Nomina | None:
    if complemento is None:
        return None
    node = complemento.find("nomina12:Nomina", NS)
    if node is None:
        return None
    e = node.find("nomina12:Emisor", NS)
    r = node.find("nomina12:Receptor", NS)
    lines: list[NominaLine] = []
    for p in node.iterfind("nomina12:Percepciones/nomina12:Percepcion", NS):
        lines.append(NominaLine("P", _a(p, "TipoPercepcion"), _a(p, "Clave"), _a(p, "Concepto"),
                                gravado=_a(p, "ImporteGravado"), exento=_a(p, "ImporteExento")))
    for d in node.iterfind("nomina12:Deducciones/nomina12:Deduccion", NS):
        lines.append(NominaLine("D", _a(d, "TipoDeduccion"), _a(d, "Clave"), _a(d, "Concepto"),
                                importe=_a(d, "Importe")))
    for o in node.iterfind("nomina12:OtrosPagos/nomina12:OtroPago", NS):
        lines.append(NominaLine("O", _a(o, "TipoOtroPago"), _a(o, "Clave"), _a(o, "Concepto"),
                                importe=_a(o, "Importe")))
    return Nomina(
        attrs=dict(node.attrib),
        emisor=dict(e.attrib) if e is not None else {},
        receptor=dict(r.attrib) if r is not None else {},
        lines=tuple(lines),
    )


def _impuestos_locales(complemento: etree._Element | None) -> tuple[Tax, ...]:
    if complemento is None:
        return ()
    node = complemento.find("implocal:ImpuestosLocales", NS)
    if node is None:
        return ()
    out = [
        Tax("R", _a(r, "ImpLocRetenido"), "Local", _a(r, "TasadeRetencion"), "", _a(r, "Importe"))
        for r in node.findall("implocal:RetencionesLocales", NS)
    ]
    out += [
        Tax("T", _a(t, "ImpLocTrasladado"), "Local", _a(t, "TasadeTraslado"), "", _a(t, "Importe"))
        for t in node.findall("implocal:TrasladosLocales", NS)
    ]
    return tuple(out)


def parse_invoice(xml: bytes) -> InvoiceView:
    """Parse a stamped (or unstamped: `timbre` is then None) CFDI 4.0 into an `InvoiceView`."""
    root = parse_xml(xml)
    if root.tag != f"{_CFDI}Comprobante":
        raise NotACfdi40Error(f"no es un CFDI 4.0 (elemento raíz {root.tag!r})")
    emisor = root.find(f"{_CFDI}Emisor")
    receptor = root.find(f"{_CFDI}Receptor")
    ig = root.find(f"{_CFDI}InformacionGlobal")
    relacionados = tuple(
        Relacionados(
            tipo_relacion=_a(r, "TipoRelacion"),
            uuids=tuple(_a(u, "UUID") for u in r.findall(f"{_CFDI}CfdiRelacionado")),
        )
        for r in root.findall(f"{_CFDI}CfdiRelacionados")
    )
    conceptos = []
    conceptos_node = root.find(f"{_CFDI}Conceptos")
    for c in conceptos_node.findall(f"{_CFDI}Concepto") if conceptos_node is not None else ():
        conceptos.append(
            Concepto(
                clave_prod_serv=_a(c, "ClaveProdServ"),
                no_identificacion=_a(c, "NoIdentificacion"),
                cantidad=_a(c, "Cantidad"),
                clave_unidad=_a(c, "ClaveUnidad"),
                unidad=_a(c, "Unidad"),
                descripcion=_a(c, "Descripcion"),
                valor_unitario=_a(c, "ValorUnitario"),
                importe=_a(c, "Importe"),
                descuento=_a(c, "Descuento"),
                objeto_imp=_a(c, "ObjetoImp"),
                taxes=_taxes(c.find(f"{_CFDI}Impuestos")),
                extras=_concepto_extras(c),
            )
        )
    imp = root.find(f"{_CFDI}Impuestos")
    all_taxes = _taxes(imp)
    complemento = root.find(f"{_CFDI}Complemento")
    tfd = complemento.find("tfd:TimbreFiscalDigital", NS) if complemento is not None else None
    timbre = None
    if tfd is not None:
        timbre = Timbre(
            version=_a(tfd, "Version"),
            uuid=_a(tfd, "UUID"),
            fecha_timbrado=_a(tfd, "FechaTimbrado"),
            rfc_prov_certif=_a(tfd, "RfcProvCertif"),
            leyenda=tfd.get("Leyenda"),
            sello_cfd=_a(tfd, "SelloCFD"),
            no_certificado_sat=_a(tfd, "NoCertificadoSAT"),
            sello_sat=_a(tfd, "SelloSAT"),
            cadena=tfd_cadena_original(tfd),
        )
    others = ()
    if complemento is not None:
        others = tuple(
            etree.QName(el).localname
            for el in complemento
            if isinstance(el.tag, str) and el is not tfd
            and etree.QName(el).namespace not in (PAGO20_NS, NS["nomina12"], NS["implocal"])
        )
    return InvoiceView(
        version=_a(root, "Version"),
        serie=_a(root, "Serie"),
        folio=_a(root, "Folio"),
        fecha=_a(root, "Fecha"),
        lugar_expedicion=_a(root, "LugarExpedicion"),
        tipo_comprobante=_a(root, "TipoDeComprobante"),
        exportacion=_a(root, "Exportacion"),
        forma_pago=_a(root, "FormaPago"),
        metodo_pago=_a(root, "MetodoPago"),
        condiciones_pago=_a(root, "CondicionesDePago"),
        moneda=_a(root, "Moneda"),
        tipo_cambio=_a(root, "TipoCambio"),
        subtotal=_a(root, "SubTotal"),
        descuento=_a(root, "Descuento"),
        total=_a(root, "Total"),
        no_certificado=_a(root, "NoCertificado"),
        sello=_a(root, "Sello"),
        confirmacion=_a(root, "Confirmacion"),
        emisor_rfc=_a(emisor, "Rfc"),
        emisor_nombre=_a(emisor, "Nombre"),
        emisor_regimen=_a(emisor, "RegimenFiscal"),
        emisor_fac_atr_adquirente=_a(emisor, "FacAtrAdquirente"),
        receptor_rfc=_a(receptor, "Rfc"),
        receptor_nombre=_a(receptor, "Nombre"),
        receptor_domicilio_fiscal=_a(receptor, "DomicilioFiscalReceptor"),
        receptor_regimen=_a(receptor, "RegimenFiscalReceptor"),
        receptor_uso_cfdi=_a(receptor, "UsoCFDI"),
        receptor_residencia_fiscal=_a(receptor, "ResidenciaFiscal"),
        receptor_num_reg_id_trib=_a(receptor, "NumRegIdTrib"),
        informacion_global=(
            {"Periodicidad": _a(ig, "Periodicidad"), "Meses": _a(ig, "Meses"), "Año": _a(ig, "Año")}
            if ig is not None
            else None
        ),
        relacionados=relacionados,
        conceptos=tuple(conceptos),
        traslados=tuple(t for t in all_taxes if t.kind == "T"),
        retenciones=tuple(t for t in all_taxes if t.kind == "R"),
        total_traslados=_a(imp, "TotalImpuestosTrasladados"),
        total_retenciones=_a(imp, "TotalImpuestosRetenidos"),
        timbre=timbre,
        pagos=_pagos(complemento),
        nomina=_nomina(complemento),
        impuestos_locales=_impuestos_locales(complemento),
        complementos=others,
    )
