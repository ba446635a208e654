"""Reading a supplier's CFDI 4.0 as the backing of an expense. Pure: no database, no network.

The checks are the invoice engine's (`sat/cfdi`, a framework-free package both
services import): hardened parsing, the issuer's Sello against the embedded certificate, the
timbre's SelloCFD equal to the Sello, the TFD's structure, and the engine's PUE/PPD payment
rules. This module only maps their outcome to the expense API's codes and reads the amounts.
SelloSAT is not checked here: that needs the PAC's certificate, which is not available offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sat.cfdi import CfdiParseError, UnsafeXmlError, parse_cfdi, verify_cfdi
from sat.cfdi.rules import payment_method_and_form

MAX_CFDI_BYTES = 2 * 1024 * 1024  # a supplier invoice, not a catalogue

MESSAGES = {
    "CFDI_MALFORMED": "El XML no es un CFDI 4.0 legible (mal formado, demasiado grande o con construcciones no permitidas).",
    "CFDI_SIGNATURE_INVALID": "El sello del emisor no corresponde al contenido del CFDI: el comprobante fue alterado.",
    "CFDI_TIMBRE_MISMATCH": "El timbre fiscal digital falta, está incompleto o no corresponde a este comprobante.",
    "CFDI_RECEIVER_MISMATCH": "El CFDI no está emitido a nombre del RFC de tu organización.",
    "CFDI_DUPLICATE": "Ya existe un gasto de tu organización con este CFDI (mismo UUID).",
    "CFDI_CANCELLED": "El SAT reporta este CFDI como cancelado: no puede respaldar un gasto.",
    "FISCAL_PROFILE_REQUIRED": "Registra primero el RFC de tu organización (perfil fiscal de gastos).",
}

_SIGNATURE_ERRORS = {"INVALID_CERTIFICATE", "CERTIFICATE_NUMBER_MISMATCH", "SELLO_INVALID"}
_TIMBRE_ERRORS = {"NO_TIMBRE", "SELLO_CFD_MISMATCH", "SELLO_SAT_INVALID"}
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
IVA, ISR = "002", "001"


class CfdiRefused(ValueError):
    def __init__(self, code: str, detail: str | None = None):
        super().__init__(MESSAGES[code] + (f" ({detail})" if detail else ""))
        self.code = code


@dataclass(frozen=True)
class SupplierCfdi:
    uuid: str
    voucher_type: str
    issued_on: date
    merchant_rfc: str
    merchant_name: str
    receiver_rfc: str
    currency: str
    exchange_rate: Decimal | None
    subtotal: Decimal
    total: Decimal
    iva_transferred: Decimal
    isr_withheld: Decimal
    iva_withheld: Decimal
    payment_form: str | None
    payment_method: str | None
    seal: str = ""  # the issuer's Sello: its last 8 characters go in SAT's status query
    deductibility_reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def deductible_ready(self) -> bool:
        return not self.deductibility_reasons


def _no_sat_certificates(_number: str):
    return None


def _sum(totals, tax: str) -> Decimal:
    return sum((t.amount or Decimal("0") for t in totals if t.tax == tax), Decimal("0"))


def deductibility_reasons(voucher_type: str, payment_method: str | None, payment_issues: list) -> tuple[str, ...]:
    """Why the CFDI does not yet back a deductible expense (empty: ready)."""
    reasons = [i.message_es for i in payment_issues]
    if voucher_type != "I":
        reasons.append("Solo un CFDI de ingreso (tipo I) del proveedor respalda un gasto deducible.")
    elif payment_method == "PPD":
        reasons.append("Pago en parcialidades o diferido (PPD): falta el complemento de pago del proveedor.")
    return tuple(reasons)


def read_supplier_cfdi(xml: bytes, organization_rfc: str | None) -> SupplierCfdi:
    """Check and read a supplier CFDI; raises `CfdiRefused` with the first failed check's code.
    CPU-bound (RSA verification, XSLT): call it off the event loop."""
    if len(xml) > MAX_CFDI_BYTES:
        raise CfdiRefused("CFDI_MALFORMED", f"más de {MAX_CFDI_BYTES // (1024 * 1024)} MB")
    result = verify_cfdi(xml, _no_sat_certificates)
    errors = set(result.errors)
    if errors & {"MALFORMED_XML", "NOT_CFDI40"}:
        raise CfdiRefused("CFDI_MALFORMED")
    try:
        cfdi = parse_cfdi(xml)
    except (CfdiParseError, UnsafeXmlError) as exc:
        raise CfdiRefused("CFDI_MALFORMED", str(exc)) from None
    if errors & _SIGNATURE_ERRORS:
        raise CfdiRefused("CFDI_SIGNATURE_INVALID")
    if errors & _TIMBRE_ERRORS:
        raise CfdiRefused("CFDI_TIMBRE_MISMATCH")
    tfd = cfdi.stamp
    if tfd is None or tfd.version != "1.1" or not _UUID.fullmatch(tfd.uuid) or not re.fullmatch(r"[0-9]{20}", tfd.sat_certificate_number) \
            or not tfd.sat_seal or not tfd.pac_rfc:
        raise CfdiRefused("CFDI_TIMBRE_MISMATCH", "estructura del TFD 1.1")
    if not organization_rfc:
        raise CfdiRefused("FISCAL_PROFILE_REQUIRED")
    if cfdi.currency not in ("MXN", "XXX") and not cfdi.exchange_rate:
        raise CfdiRefused("CFDI_MALFORMED", "falta TipoCambio para una moneda distinta de MXN")
    if cfdi.receiver.rfc.upper() != organization_rfc.upper():
        raise CfdiRefused("CFDI_RECEIVER_MISMATCH", f"receptor {cfdi.receiver.rfc}, organización {organization_rfc}")
    return SupplierCfdi(
        uuid=tfd.uuid.upper(), voucher_type=cfdi.voucher_type, issued_on=cfdi.issued_at.date(),
        merchant_rfc=cfdi.issuer.rfc, merchant_name=cfdi.issuer.name, receiver_rfc=cfdi.receiver.rfc,
        # XXX ("no currency", payment CFDIs) carries no amount to convert: book it as MXN.
        currency="MXN" if cfdi.currency == "XXX" else cfdi.currency,
        exchange_rate=None if cfdi.currency in ("MXN", "XXX") else cfdi.exchange_rate,
        subtotal=cfdi.subtotal, total=cfdi.total,
        iva_transferred=_sum(cfdi.transferred_totals, IVA), isr_withheld=_sum(cfdi.withheld_totals, ISR),
        iva_withheld=_sum(cfdi.withheld_totals, IVA),
        payment_form=cfdi.payment_form, payment_method=cfdi.payment_method, seal=cfdi.seal or "",
        deductibility_reasons=deductibility_reasons(cfdi.voucher_type, cfdi.payment_method,
                                                    payment_method_and_form(cfdi, cfdi.issued_at)),
    )
