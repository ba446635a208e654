"""SAT's public ConsultaCFDIService: the status of any CFDI from its printed expression.

The expression is the one of CFDI 3.3/4.0 (Anexo 20, código bidimensional): UUID, issuer RFC,
receiver RFC, total, last 8 characters of the Sello. SAT answers:
- Estado: Vigente | Cancelado | No Encontrado
- EsCancelable: Cancelable sin aceptación | Cancelable con aceptación | No cancelable
- EstatusCancelacion: (empty) | En proceso | Cancelado sin aceptación | Cancelado con aceptación |
  Plazo vencido | Solicitud rechazada
Used by the cancellation flow (polling a pending request) and when importing received CFDIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import httpx
from lxml import etree

from .base import PacError
from .transport import HttpAdapter, Timeouts, parse_answer, send

PRODUCTION_URL = "https://consultaqr.facturaelectronica.sat.gob.mx/ConsultaCFDIService.svc"
SOAP_ACTION = "http://tempuri.org/IConsultaCFDIService/Consulta"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
TEMPURI = "http://tempuri.org/"
VERIFY_URL = "https://verificacfdi.facturaelectronica.sat.gob.mx/default.aspx"


def expression(uuid: str, issuer_rfc: str, receiver_rfc: str, total: Decimal, seal: str = "") -> str:
    """The printed expression: total with up to 6 decimals, no trailing zeros (keeps one)."""
    amount = f"{Decimal(total):.6f}".rstrip("0")
    amount = amount + "0" if amount.endswith(".") else amount
    text = f"{VERIFY_URL}?id={uuid.upper()}&re={issuer_rfc.upper()}&rr={receiver_rfc.upper()}&tt={amount}"
    return text + (f"&fe={seal[-8:]}" if seal else "")


@dataclass(frozen=True)
class CfdiStatus:
    code: str  # CodigoEstatus, e.g. "S - Comprobante obtenido satisfactoriamente."
    state: str  # Estado
    cancellable: str  # EsCancelable
    cancellation_status: str  # EstatusCancelacion
    efos: str = ""  # ValidacionEFOS (issuer listed under art. 69-B)

    @property
    def found(self) -> bool:
        return self.code.startswith("S") and self.state != "No Encontrado"

    @property
    def lifecycle(self) -> str:
        """Our invoice vocabulary: ACTIVE | PENDING | CANCELLED | REJECTED | NOT_FOUND."""
        if not self.found:
            return "NOT_FOUND"
        if self.state == "Cancelado":
            return "CANCELLED"
        if self.cancellation_status == "En proceso":
            return "PENDING"
        if self.cancellation_status == "Solicitud rechazada":
            return "REJECTED"
        return "ACTIVE"

    @property
    def needs_acceptance(self) -> bool:
        return self.cancellable == "Cancelable con aceptación"


def _envelope(expr: str) -> bytes:
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soapenv": SOAP_NS, "tem": TEMPURI})
    etree.SubElement(env, f"{{{SOAP_NS}}}Header")
    call = etree.SubElement(etree.SubElement(env, f"{{{SOAP_NS}}}Body"), f"{{{TEMPURI}}}Consulta")
    etree.SubElement(call, f"{{{TEMPURI}}}expresionImpresa").text = expr
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def _text(root, name: str) -> str:
    found = root.xpath(f".//*[local-name()='{name}']")
    return (found[0].text or "").strip() if found else ""


class SatStatusService(HttpAdapter):
    """Async client of ConsultaCFDIService; `url` points at SAT or at a local simulator."""

    name = "SAT"

    def __init__(self, url: str = PRODUCTION_URL, *, client: httpx.AsyncClient | None = None,
                 timeouts: Timeouts = Timeouts(read=15.0)):
        self.url = url
        super().__init__(client, timeouts)

    async def status(self, uuid: str, issuer_rfc: str, receiver_rfc: str, total: Decimal,
                     seal: str = "") -> CfdiStatus:
        response = await send(self.client, "el SAT", "POST", self.url, soap=True,
                               content=_envelope(expression(uuid, issuer_rfc, receiver_rfc, total, seal)),
                               headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": SOAP_ACTION})
        root = parse_answer("el SAT", response.content)
        fault = _text(root, "faultstring")
        if fault or response.status_code != 200:
            raise PacError("SAT_FAULT", f"El servicio de consulta del SAT rechazó la solicitud: {fault or response.status_code}")
        return CfdiStatus(code=_text(root, "CodigoEstatus"), state=_text(root, "Estado"),
                          cancellable=_text(root, "EsCancelable"),
                          cancellation_status=_text(root, "EstatusCancelacion"),
                          efos=_text(root, "ValidacionEFOS"))
