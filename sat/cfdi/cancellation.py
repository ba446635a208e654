"""SAT cancellation of a stamped CFDI: reasons (motivos) and whether the receiver must accept.

Reasons (Anexo 20 / cancelación 2022):
  01 Comprobante emitido con errores con relación — requires the UUID of the replacement CFDI
     (which must already be stamped with TipoRelacion 04 pointing back).
  02 Comprobante emitido con errores sin relación.
  03 No se llevó a cabo la operación.
  04 Operación nominativa relacionada en una factura global.

Receiver acceptance: by default the receiver has 3 business days to accept/reject; RMF rule
2.7.1.35 lists when it is not needed. We implement the cases we can decide from the CFDI itself
(fractions I-IV, VI-IX); fractions V (RIF receivers), X (PCGCFDISP), XI (financial system) and
XII (Federación) depend on facts outside the XML and are passed in as `issuer_exempt`.
Business days here skip weekends only (SAT's holiday calendar is not modelled).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from .models import GENERIC_RFC_FOREIGN, GENERIC_RFC_NATIONAL, Invoice

REASONS = {
    "01": "Comprobante emitido con errores con relación",
    "02": "Comprobante emitido con errores sin relación",
    "03": "No se llevó a cabo la operación",
    "04": "Operación nominativa relacionada en una factura global",
}
ACCEPTANCE_THRESHOLD_MXN = Decimal("1000.00")
_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


@dataclass(frozen=True)
class CancellationIssue:
    code: str
    field_path: str
    message_es: str


def check_cancellation_request(
    reason: str, replacement_uuid: str | None, cancelled_uuid: str
) -> list[CancellationIssue]:
    """Validate a cancellation request before sending it to the PAC."""
    if reason not in REASONS:
        return [CancellationIssue("INVALID_REASON", "reason", "El motivo de cancelación debe ser 01, 02, 03 o 04.")]
    if reason == "01":
        if not replacement_uuid:
            return [
                CancellationIssue(
                    "REPLACEMENT_REQUIRED",
                    "replacement_uuid",
                    "El motivo 01 requiere el folio fiscal (UUID) del CFDI que sustituye al cancelado.",
                )
            ]
        if not _UUID.match(replacement_uuid):
            return [
                CancellationIssue("INVALID_UUID", "replacement_uuid", "El folio fiscal sustituto no es un UUID válido.")
            ]
        if replacement_uuid.upper() == cancelled_uuid.upper():
            return [
                CancellationIssue(
                    "SELF_REPLACEMENT", "replacement_uuid", "El CFDI sustituto no puede ser el mismo que se cancela."
                )
            ]
    elif replacement_uuid:
        return [
            CancellationIssue(
                "REPLACEMENT_NOT_ALLOWED", "replacement_uuid", "Solo el motivo 01 lleva folio fiscal sustituto."
            )
        ]
    return []


def next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def total_in_mxn(invoice: Invoice) -> Decimal:
    total = invoice.total or Decimal(0)
    if invoice.currency in ("MXN", "XXX"):
        return total
    return total * (invoice.exchange_rate or Decimal(0))


def acceptance_exemption(invoice: Invoice, cancel_at: datetime, issuer_exempt: bool = False) -> str | None:
    """Which rule-2.7.1.35 case lets `invoice` be cancelled without acceptance, or None."""
    if issuer_exempt:
        return "Emisor exceptuado (RIF, PCGCFDISP, sistema financiero o Federación)"
    vt = invoice.voucher_type
    if vt == "N":
        return "Por concepto de nómina"
    if vt == "E":
        return "Por concepto de egresos"
    if vt == "T":
        return "Por concepto de traslado"
    rfc = invoice.receiver.rfc.strip().upper()
    if rfc == GENERIC_RFC_NATIONAL or invoice.global_information is not None:
        return "Operaciones con el público en general"
    if rfc == GENERIC_RFC_FOREIGN:
        return "Emitido a residente en el extranjero"
    # Fraction I excludes payment CFDIs (P): they always need acceptance beyond the other cases.
    if vt != "P" and total_in_mxn(invoice) <= ACCEPTANCE_THRESHOLD_MXN:
        return "Monto total de hasta $1,000.00 M.N."
    issued_day = (invoice.stamp.stamped_at if invoice.stamp else invoice.issued_at).date()
    if cancel_at.replace(tzinfo=None).date() <= next_business_day(issued_day):
        return "Cancelación a más tardar el día hábil siguiente a su expedición"
    return None


def requires_receiver_acceptance(invoice: Invoice, cancel_at: datetime, issuer_exempt: bool = False) -> bool:
    """True when SAT will ask the receiver to accept the cancellation of `invoice` at `cancel_at`."""
    return acceptance_exemption(invoice, cancel_at, issuer_exempt) is None


def cancellation_deadline(invoice: Invoice) -> date:
    """Last day to cancel: January 31 of the year after issuance (CFF 29-A, RMF 2.7.1.47)."""
    return date(invoice.issued_at.year + 1, 1, 31)
