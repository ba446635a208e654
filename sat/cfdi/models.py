"""Typed model of a CFDI 4.0 Comprobante, its TimbreFiscalDigital 1.1 and Pagos 2.0 complement.

English names throughout; the SAT attribute each field maps to is given in the comment. The
mapping to SAT's Spanish names lives in exactly one place: `build.py` (writing) and `parse.py`
(reading). Money and quantities are `Decimal`, never float.

Computed amounts (Importe, tax Importe, SubTotal, Total, ...) are optional on input: `totals.py`
fills them; `parse.py` fills them from the XML as-is so stored CFDIs are reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

CFDI_NS = "http://www.sat.gob.mx/cfd/4"
TFD_NS = "http://www.sat.gob.mx/TimbreFiscalDigital"
PAGO20_NS = "http://www.sat.gob.mx/Pagos20"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

GENERIC_RFC_NATIONAL = "XAXX010101000"  # público en general
GENERIC_RFC_FOREIGN = "XEXX010101000"  # residente en el extranjero


@dataclass
class Tax:
    """One cfdi:Traslado / cfdi:Retencion of a concept (or a grouped line of the invoice)."""

    tax: str  # Impuesto: c_Impuesto ("001" ISR, "002" IVA, "003" IEPS)
    factor_type: str  # TipoFactor: "Tasa" | "Cuota" | "Exento"
    rate: Decimal | None = None  # TasaOCuota (None only when Exento)
    base: Decimal | None = None  # Base (defaults to the concept's Importe - Descuento)
    amount: Decimal | None = None  # Importe (None only when Exento)


@dataclass
class ThirdParty:
    """ACuentaTerceros: the concept is billed on behalf of a third party."""

    rfc: str  # RfcACuentaTerceros
    name: str  # NombreACuentaTerceros
    tax_regime: str  # RegimenFiscalACuentaTerceros
    tax_zip_code: str  # DomicilioFiscalACuentaTerceros


@dataclass
class Concept:
    """cfdi:Concepto."""

    product_code: str  # ClaveProdServ
    quantity: Decimal  # Cantidad
    unit_code: str  # ClaveUnidad
    description: str  # Descripcion
    unit_price: Decimal  # ValorUnitario
    tax_object: str  # ObjetoImp: c_ObjetoImp
    identification: str | None = None  # NoIdentificacion
    unit: str | None = None  # Unidad
    discount: Decimal | None = None  # Descuento
    amount: Decimal | None = None  # Importe (computed)
    transferred_taxes: list[Tax] = field(default_factory=list)  # Impuestos/Traslados
    withheld_taxes: list[Tax] = field(default_factory=list)  # Impuestos/Retenciones
    third_party: ThirdParty | None = None  # ACuentaTerceros
    customs_numbers: list[str] = field(default_factory=list)  # InformacionAduanera/@NumeroPedimento
    property_accounts: list[str] = field(default_factory=list)  # CuentaPredial/@Numero


@dataclass
class Issuer:
    """cfdi:Emisor."""

    rfc: str  # Rfc
    name: str  # Nombre
    tax_regime: str  # RegimenFiscal
    acquirer_operation_number: str | None = None  # FacAtrAdquirente


@dataclass
class Receiver:
    """cfdi:Receptor."""

    rfc: str  # Rfc
    name: str  # Nombre
    tax_zip_code: str  # DomicilioFiscalReceptor
    tax_regime: str  # RegimenFiscalReceptor
    cfdi_use: str  # UsoCFDI
    tax_residence: str | None = None  # ResidenciaFiscal (c_Pais), foreign receivers only
    foreign_tax_id: str | None = None  # NumRegIdTrib


@dataclass
class GlobalInformation:
    """cfdi:InformacionGlobal: a global invoice summarising sales to the general public."""

    periodicity: str  # Periodicidad: c_Periodicidad
    months: str  # Meses: c_Meses
    year: int  # Año


@dataclass
class RelatedCfdis:
    """cfdi:CfdiRelacionados: one relation type and the UUIDs it applies to."""

    relation_type: str  # TipoRelacion: c_TipoRelacion
    uuids: list[str] = field(default_factory=list)  # CfdiRelacionado/@UUID


@dataclass
class TaxTotal:
    """A grouped line of the invoice-level cfdi:Impuestos."""

    tax: str  # Impuesto
    amount: Decimal | None  # Importe (None when Exento)
    factor_type: str | None = None  # TipoFactor (transfers only)
    rate: Decimal | None = None  # TasaOCuota (transfers only)
    base: Decimal | None = None  # Base (transfers only)


@dataclass
class TimbreFiscalDigital:
    """tfd:TimbreFiscalDigital 1.1, the PAC's stamp."""

    uuid: str  # UUID
    stamped_at: datetime  # FechaTimbrado
    pac_rfc: str  # RfcProvCertif
    cfd_seal: str  # SelloCFD (== Comprobante/@Sello)
    sat_certificate_number: str  # NoCertificadoSAT
    sat_seal: str = ""  # SelloSAT
    legend: str | None = None  # Leyenda
    version: str = "1.1"


@dataclass
class PaymentTax:
    """A TrasladoDR/RetencionDR (per related document) or TrasladoP/RetencionP (per payment)."""

    tax: str  # ImpuestoDR / ImpuestoP
    factor_type: str | None  # TipoFactorDR / TipoFactorP (None for RetencionP)
    rate: Decimal | None  # TasaOCuotaDR / TasaOCuotaP
    base: Decimal | None  # BaseDR / BaseP
    amount: Decimal | None  # ImporteDR / ImporteP


@dataclass
class RelatedDocument:
    """pago20:DoctoRelacionado: one invoice (PPD) a payment settles in part or in full."""

    uuid: str  # IdDocumento
    currency: str  # MonedaDR
    installment: int  # NumParcialidad
    previous_balance: Decimal  # ImpSaldoAnt
    amount_paid: Decimal  # ImpPagado
    remaining_balance: Decimal  # ImpSaldoInsoluto
    tax_object: str  # ObjetoImpDR
    series: str | None = None  # Serie
    folio: str | None = None  # Folio
    exchange_rate: Decimal | None = None  # EquivalenciaDR
    transferred_taxes: list[PaymentTax] = field(default_factory=list)  # TrasladosDR
    withheld_taxes: list[PaymentTax] = field(default_factory=list)  # RetencionesDR


@dataclass
class Payment:
    """pago20:Pago."""

    paid_at: datetime  # FechaPago
    payment_form: str  # FormaDePagoP
    currency: str  # MonedaP
    amount: Decimal  # Monto
    exchange_rate: Decimal | None = None  # TipoCambioP
    operation_number: str | None = None  # NumOperacion
    related_documents: list[RelatedDocument] = field(default_factory=list)
    transferred_taxes: list[PaymentTax] = field(default_factory=list)  # ImpuestosP/TrasladosP
    withheld_taxes: list[PaymentTax] = field(default_factory=list)  # ImpuestosP/RetencionesP


@dataclass
class PaymentTotals:
    """pago20:Totales: the complement's summary in MXN."""

    total_amount: Decimal  # MontoTotalPagos
    withheld_iva: Decimal | None = None  # TotalRetencionesIVA
    withheld_isr: Decimal | None = None  # TotalRetencionesISR
    withheld_ieps: Decimal | None = None  # TotalRetencionesIEPS
    transferred_base_iva16: Decimal | None = None  # TotalTrasladosBaseIVA16
    transferred_iva16: Decimal | None = None  # TotalTrasladosImpuestoIVA16
    transferred_base_iva8: Decimal | None = None  # TotalTrasladosBaseIVA8
    transferred_iva8: Decimal | None = None  # TotalTrasladosImpuestoIVA8
    transferred_base_iva0: Decimal | None = None  # TotalTrasladosBaseIVA0
    transferred_iva0: Decimal | None = None  # TotalTrasladosImpuestoIVA0
    exempt_base_iva: Decimal | None = None  # TotalTrasladosBaseIVAExento


@dataclass
class PaymentsComplement:
    """pago20:Pagos 2.0, required in a CFDI of type P."""

    totals: PaymentTotals
    payments: list[Payment] = field(default_factory=list)
    version: str = "2.0"


@dataclass
class Invoice:
    """cfdi:Comprobante 4.0."""

    issued_at: datetime  # Fecha (local time of LugarExpedicion, no timezone in the XML)
    place_of_issue: str  # LugarExpedicion: c_CodigoPostal
    voucher_type: str  # TipoDeComprobante: I, E, T, N, P
    exportation: str  # Exportacion: c_Exportacion
    currency: str  # Moneda: c_Moneda
    issuer: Issuer
    receiver: Receiver
    concepts: list[Concept]
    series: str | None = None  # Serie
    folio: str | None = None  # Folio
    payment_form: str | None = None  # FormaPago: c_FormaPago
    payment_method: str | None = None  # MetodoPago: PUE | PPD
    payment_conditions: str | None = None  # CondicionesDePago
    exchange_rate: Decimal | None = None  # TipoCambio
    confirmation: str | None = None  # Confirmacion
    global_information: GlobalInformation | None = None  # InformacionGlobal
    related: list[RelatedCfdis] = field(default_factory=list)  # CfdiRelacionados
    # Computed by totals.compute_totals (or read as-is by parse.py).
    subtotal: Decimal | None = None  # SubTotal
    discount: Decimal | None = None  # Descuento
    total: Decimal | None = None  # Total
    total_transferred: Decimal | None = None  # Impuestos/@TotalImpuestosTrasladados
    total_withheld: Decimal | None = None  # Impuestos/@TotalImpuestosRetenidos
    transferred_totals: list[TaxTotal] = field(default_factory=list)  # Impuestos/Traslados
    withheld_totals: list[TaxTotal] = field(default_factory=list)  # Impuestos/Retenciones
    # Complements.
    payments: PaymentsComplement | None = None  # pago20:Pagos
    stamp: TimbreFiscalDigital | None = None  # tfd:TimbreFiscalDigital
    # Seal (set by csd.sign_cfdi; read by parse.py).
    certificate_number: str | None = None  # NoCertificado
    certificate: str | None = None  # Certificado (base64 DER)
    seal: str | None = None  # Sello
