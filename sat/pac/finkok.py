"""Finkok (SOAP): stamp, quick_stamp, stamped (recover), query_pending, cancel with the CSD,
get_receipt, get_sat_status, get_pending and accept_reject as the receiver.

Wire shapes follow Finkok's public WSDLs (stamp.wsdl, cancel.wsdl) as used by phpcfdi/finkok and
python-satcfdi: requests in the `http://facturacion.finkok.com/{stamp,cancel}` namespaces with the
account's username/password in every call; results in `apps.services.soap.core.views`.

"Previously stamped": `stamp` answers incidence 307 and, per Finkok's documentation, may or may
not include the earlier timbre (phpcfdi's "StampServiceDobleEstampado" notes). We then call
`stamped`, which returns it; a 307 without it is never treated as a failure of the CFDI.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal

import httpx
from cryptography.hazmat.primitives import serialization
from lxml import etree

from sat.cfdi.csd import Csd

from .base import CancelResult, PacError, StampResult
from .sat_status import CfdiStatus
from . import transport
from .transport import HttpAdapter, PacInDoubt, Timeouts, parse_answer, send, stamp_from_xml

TEST_URL = "https://demo-facturacion.finkok.com"
PRODUCTION_URL = "https://facturacion.finkok.com"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
STAMP_NS = "http://facturacion.finkok.com/stamp"
CANCEL_NS = "http://facturacion.finkok.com/cancel"
APPS_NS = "apps.services.soap.core.views"
PROVIDER = "Finkok"

# Stamping incidences (Finkok "tipificación"). True = worth retrying later, False = fix the CFDI or account.
STAMP_CODES: dict[str, tuple[bool, str]] = {
    **transport.STAMP_CODES,
    "300": (False, "Usuario o contraseña de Finkok inválidos."),
    "702": (False, "El RFC del emisor no está registrado en la cuenta de Finkok."),
    "703": (False, "La cuenta de Finkok está suspendida."),
    "704": (False, "Error con la contraseña de la llave privada."),
    "705": (False, "Estructura del XML inválida."),
    "706": (False, "Socio de Finkok inválido."),
    "707": (False, "El XML ya contiene un nodo TimbreFiscalDigital."),
    "708": (True, "Finkok no pudo conectarse con el SAT."),
    "712": (False, "El atributo NoCertificado no coincide con el certificado."),
}
# Per-UUID answers to a cancellation request.
CANCEL_CODES: dict[str, tuple[bool, str]] = {
    **transport.CANCEL_CODES,
    "708": (True, "Finkok no pudo conectarse con el SAT."),
    "711": (False, "Error con el certificado al cancelar."),
    "no_cancelable": (False, "El CFDI no es cancelable (tiene documentos relacionados vigentes)."),
}


def _error(table: dict[str, tuple[bool, str]], code: str, detail: str = "") -> PacError:
    transient, message = table.get(code, (False, detail or f"Finkok rechazó la solicitud (código {code})."))
    if code.startswith("CFDI") and detail:
        message = detail  # SAT validation matrix codes: Finkok's text is SAT's
    return PacError(code, message, transient=transient)


@dataclass(frozen=True)
class FinkokAccount:
    username: str
    password: str


@dataclass(frozen=True)
class PendingStamp:
    """query_pending: S = stamped, not yet delivered to SAT; F = delivered."""
    uuid: str
    status: str
    xml: bytes | None


def cancel_outcome(state: str) -> str:
    """SAT's EstatusCancelacion after a request was received (201/202) → our CancelResult status."""
    if state.startswith("Cancelado"):
        return "CANCELLED"
    return "REJECTED" if state == "Solicitud rechazada" else "PENDING"


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _find(root, name: str):
    found = root.xpath(f".//*[local-name()='{name}']")
    return found[0] if found else None


def _text(root, name: str) -> str:
    el = _find(root, name)
    return (el.text or "").strip() if el is not None else ""


class FinkokPac(HttpAdapter):
    name = "finkok"

    def __init__(self, account: FinkokAccount, *, url: str = TEST_URL, csd: Csd | None = None,
                 sat=None, client: httpx.AsyncClient | None = None, timeouts: Timeouts = Timeouts()):
        """`csd`: the issuer's CSD, needed to cancel and to answer cancellations as receiver."""
        self.account, self.url, self.csd, self.sat = account, url.rstrip("/"), csd, sat
        super().__init__(client, timeouts)

    # --- SOAP plumbing --------------------------------------------------------------------------
    def _operation(self, ns: str, op: str, fields: list[tuple[str, str | None]]) -> tuple[etree._Element, bytes]:
        env = etree.Element(_q(SOAP_NS, "Envelope"), nsmap={"soapenv": SOAP_NS, "ns": ns, "apps": APPS_NS})
        etree.SubElement(env, _q(SOAP_NS, "Header"))
        call = etree.SubElement(etree.SubElement(env, _q(SOAP_NS, "Body")), _q(ns, op))
        for name, value in [("username", self.account.username), ("password", self.account.password), *fields]:
            etree.SubElement(call, _q(ns, name)).text = value
        return call, env

    async def _call(self, service: str, env: etree._Element):
        response = await send(self.client, PROVIDER, "POST", f"{self.url}/servicios/soap/{service}.wsdl", soap=True,
                              content=etree.tostring(env, xml_declaration=True, encoding="utf-8"),
                              headers={"Content-Type": "text/xml; charset=utf-8"})
        root = parse_answer(PROVIDER, response.content)
        fault = _text(root, "faultstring")
        if fault:
            raise PacError("PAC_FAULT", f"Finkok rechazó la solicitud: {fault}")
        return root

    # --- stamping -------------------------------------------------------------------------------
    async def _stamp_call(self, op: str, xml: bytes):
        call, env = self._operation(STAMP_NS, op, [])
        xml_el = etree.Element(_q(STAMP_NS, "xml"))
        xml_el.text = base64.b64encode(xml).decode("ascii")
        call.insert(0, xml_el)
        return await self._call("stamp", env)

    @staticmethod
    def _incidences(root) -> list[tuple[str, str]]:
        return [(_text(i, "CodigoError"), _text(i, "MensajeIncidencia"))
                for i in root.xpath("//*[local-name()='Incidencia']")]

    async def stamp(self, xml: bytes, *, idempotency_key: str | None = None, quick: bool = False) -> StampResult:
        """Finkok has no idempotency key: the sealed CFDI itself is the key (307 → recover)."""
        root = await self._stamp_call("quick_stamp" if quick else "stamp", xml)
        stamped = _text(root, "xml")
        incidences = self._incidences(root)
        previous = any(code == "307" for code, _ in incidences)
        if stamped and not previous:  # other incidences beside a timbre are warnings
            return stamp_from_xml(PROVIDER, stamped.encode("utf-8"), previously_stamped=False)
        if previous:
            if stamped:
                return stamp_from_xml(PROVIDER, stamped.encode("utf-8"), previously_stamped=True)
            previous = await self.stamped(xml)
            if previous is None:  # Finkok says it has a timbre but cannot hand it over yet
                raise PacInDoubt("307", "Finkok tiene un timbre previo que aún no puede entregar.")
            return previous
        if not incidences:
            raise PacInDoubt("PAC_BAD_RESPONSE", "Finkok no devolvió el CFDI timbrado ni una incidencia.")
        code, detail = incidences[0]
        raise _error(STAMP_CODES, code, detail)

    async def quick_stamp(self, xml: bytes) -> StampResult:
        return await self.stamp(xml, quick=True)

    async def stamped(self, xml: bytes) -> StampResult | None:
        """The timbre Finkok already gave this very CFDI, or None when it never stamped it (603)."""
        root = await self._stamp_call("stamped", xml)
        stamped = _text(root, "xml")
        if stamped:
            return stamp_from_xml(PROVIDER, stamped.encode("utf-8"), previously_stamped=True)
        incidences = self._incidences(root)
        if not incidences or incidences[0][0] == "603":
            return None
        code, detail = incidences[0]
        raise _error(STAMP_CODES, code, detail)

    async def recover(self, xml: bytes, *, idempotency_key: str | None = None) -> StampResult | None:
        return await self.stamped(xml)

    async def query_pending(self, uuid: str) -> PendingStamp:
        _, env = self._operation(STAMP_NS, "query_pending", [("uuid", uuid)])
        root = await self._call("stamp", env)
        if _text(root, "error"):
            raise PacError("PAC_QUERY", f"Finkok: {_text(root, 'error')}")
        xml = _text(root, "xml")
        return PendingStamp(_text(root, "uuid").upper(), _text(root, "status"), xml.encode("utf-8") if xml else None)

    # --- cancellation (issuer) ------------------------------------------------------------------
    def _csd_fields(self) -> list[tuple[str, str]]:
        """Finkok wants the certificate in PEM and the key in PEM encrypted with the account password."""
        if self.csd is None:
            raise PacError("CSD_REQUIRED", "Se necesita el CSD del emisor para cancelar con Finkok.")
        cer = self.csd.certificate.public_bytes(serialization.Encoding.PEM)
        key = self.csd.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self.account.password.encode("utf-8")))
        return [("cer", base64.b64encode(cer).decode()), ("key", base64.b64encode(key).decode())]

    async def cancel(self, uuid: str, rfc: str, reason: str, replacement_uuid: str | None,
                     **_cfdi) -> CancelResult:
        """Finkok answers SAT's EstatusCancelacion itself (receiver RFC and total are not needed)."""
        call, env = self._operation(CANCEL_NS, "cancel", [("taxpayer_id", rfc.upper()), *self._csd_fields(),
                                                          ("store_pending", "false")])
        folios = etree.Element(_q(CANCEL_NS, "UUIDS"))
        folio = etree.SubElement(etree.SubElement(folios, _q(APPS_NS, "uuids")), _q(APPS_NS, "UUID"))
        folio.set("UUID", uuid.upper())
        folio.set("Motivo", reason)
        folio.set("FolioSustitucion", (replacement_uuid or "").upper())
        call.insert(0, folios)
        root = await self._call("cancel", env)
        answer = _text(root, "EstatusUUID")
        if answer not in ("201", "202"):
            code = answer or _text(root, "CodEstatus") or "PAC_CANCEL"
            raise _error(CANCEL_CODES, code.split()[0] if code[0].isdigit() else code, _text(root, "CodEstatus"))
        return CancelResult(cancel_outcome(_text(root, "EstatusCancelacion")))

    async def get_receipt(self, uuid: str, rfc: str, kind: str = "C") -> bytes:
        """The SAT acuse Finkok kept for `uuid` (C = cancellation, R = reception)."""
        _, env = self._operation(CANCEL_NS, "get_receipt", [("taxpayer_id", rfc.upper()), ("uuid", uuid.upper()),
                                                            ("type", kind)])
        root = await self._call("cancel", env)
        if _text(root, "success").lower() != "true":
            raise PacError("RECEIPT_NOT_FOUND", _text(root, "error") or "Finkok no tiene el acuse de ese folio.")
        return _text(root, "receipt").encode("utf-8")

    async def sat_status(self, uuid: str, issuer_rfc: str, receiver_rfc: str, total: Decimal) -> CfdiStatus:
        _, env = self._operation(CANCEL_NS, "get_sat_status", [
            ("taxpayer_id", issuer_rfc.upper()), ("rtaxpayer_id", receiver_rfc.upper()), ("uuid", uuid.upper()),
            ("total", f"{Decimal(total):.2f}")])
        root = await self._call("cancel", env)
        if _text(root, "error"):
            raise PacError("PAC_STATUS", f"Finkok: {_text(root, 'error')}", transient=True)
        return CfdiStatus(_text(root, "CodigoEstatus"), _text(root, "Estado"), _text(root, "EsCancelable"),
                          _text(root, "EstatusCancelacion"))

    async def status(self, uuid: str, *, issuer_rfc: str | None = None, receiver_rfc: str | None = None,
                     total: Decimal | None = None) -> str:
        if issuer_rfc is None or receiver_rfc is None or total is None:
            raise PacError("STATUS_NEEDS_CFDI", "La consulta de estado necesita RFC emisor, RFC receptor y total.")
        service = self.sat.status if self.sat is not None else self.sat_status
        return (await service(uuid, issuer_rfc, receiver_rfc, total)).lifecycle

    # --- receiver side --------------------------------------------------------------------------
    async def pending_cancellations(self, receiver_rfc: str) -> list[str]:
        """UUIDs of CFDIs received by `receiver_rfc` whose issuers asked to cancel them."""
        _, env = self._operation(CANCEL_NS, "get_pending", [("rtaxpayer_id", receiver_rfc.upper())])
        root = await self._call("cancel", env)
        if _text(root, "error"):
            raise PacError("PAC_PENDING", f"Finkok: {_text(root, 'error')}", transient=True)
        return [(s.text or "").strip().upper() for s in root.xpath("//*[local-name()='uuids']/*") if s.text]

    async def answer_cancellations(self, receiver_rfc: str, answers: dict[str, bool]) -> dict[str, str]:
        """Accept (True) or reject (False) each request; returns SAT's code per UUID (1000 = done)."""
        call, env = self._operation(CANCEL_NS, "accept_reject", [("rtaxpayer_id", receiver_rfc.upper()),
                                                                 *self._csd_fields()])
        uuids = etree.Element(_q(CANCEL_NS, "uuids"))
        for uuid, accept in answers.items():
            item = etree.SubElement(uuids, _q(APPS_NS, "UUID_AR"))
            etree.SubElement(item, _q(APPS_NS, "uuid")).text = uuid.upper()
            etree.SubElement(item, _q(APPS_NS, "respuesta")).text = "Aceptacion" if accept else "Rechazo"
        call.insert(2, uuids)
        root = await self._call("cancel", env)
        if _text(root, "error"):
            raise PacError("PAC_ACCEPT_REJECT", f"Finkok: {_text(root, 'error')}")
        return {_text(f, "uuid").upper(): _text(f, "status")
                for f in root.xpath("//*[local-name()='aceptacion' or local-name()='rechazo']/*")}
