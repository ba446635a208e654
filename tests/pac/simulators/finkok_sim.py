"""Finkok's SOAP services (stamp.wsdl, cancel.wsdl) as documented in Finkok's wiki and used by
phpcfdi/finkok: same envelopes, same result element names, Finkok's incidence codes.

Documented quirk reproduced on purpose: `stamp` of an already stamped CFDI answers incidence 307
and may or may not include the earlier timbre (quirk "omit_previous_xml"); `stamped` always does.
"""

from __future__ import annotations

import base64
from decimal import Decimal, InvalidOperation

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml
from sat.pac.base import PacError

from .core import Faults, SatLedger, StampingEngine, check_csd

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS = {"stamp": "http://facturacion.finkok.com/stamp", "cancel": "http://facturacion.finkok.com/cancel"}
APPS = "apps.services.soap.core.views"


def _fault(message: str) -> Response:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"senv": SOAP})
    fault = etree.SubElement(etree.SubElement(env, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
    etree.SubElement(fault, "faultcode").text = "senv:Client"
    etree.SubElement(fault, "faultstring").text = message
    return Response(etree.tostring(env, xml_declaration=True, encoding="utf-8"), 500, media_type="text/xml")


def _fill(parent, value) -> None:
    """dict → child elements, list → repeated children, str → text (all in Finkok's apps namespace)."""
    if isinstance(value, dict):
        for name, child in value.items():
            if isinstance(child, list):
                holder = etree.SubElement(parent, f"{{{APPS}}}{name}")
                for item_name, item in child:
                    _fill(etree.SubElement(holder, f"{{{APPS}}}{item_name}"), item)
            else:
                _fill(etree.SubElement(parent, f"{{{APPS}}}{name}"), child)
    elif value is not None:
        parent.text = str(value)


def _answer(service: str, op: str, result: dict) -> Response:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"senv": SOAP, "tns": NS[service], "s0": APPS})
    body = etree.SubElement(env, f"{{{SOAP}}}Body")
    holder = etree.SubElement(etree.SubElement(body, f"{{{NS[service]}}}{op}Response"), f"{{{NS[service]}}}{op}Result")
    _fill(holder, result)
    return Response(etree.tostring(env, xml_declaration=True, encoding="utf-8"), media_type="text/xml")


def _field(call, name: str) -> str:
    found = call.xpath(f"./*[local-name()='{name}']")
    return (found[0].text or "").strip() if found else ""


def _incidence(code: str, message: str) -> dict:
    return {"Incidencias": [("Incidencia", {"IdIncidencia": "1", "CodigoError": code, "MensajeIncidencia": message,
                                            "WorkProcessId": "sim"})]}


def finkok_app(ledger: SatLedger, engine: StampingEngine, users: dict[str, str], faults: Faults) -> Starlette:
    """`faults.quirks`: "omit_previous_xml" makes `stamp` answer 307 without the earlier timbre."""
    receipts: dict[str, str] = {}

    def stamp_result(rec, previous: bool, quick: bool = False) -> dict:
        if previous:
            data = {} if ("omit_previous_xml" in faults.quirks or quick) else {"xml": rec.xml.decode(), "UUID": rec.uuid}
            return {**data, **_incidence("307", "El CFDI contiene un timbre previo")}
        return {"xml": rec.xml.decode(), "UUID": rec.uuid, "CodEstatus": "Comprobante timbrado satisfactoriamente",
                "Incidencias": []}

    async def handle(request: Request, service: str) -> Response:
        try:
            envelope = parse_xml(await request.body())
        except UnsafeXmlError:
            return _fault("XML de la solicitud mal formado")
        calls = envelope.xpath(f"/*[local-name()='Envelope']/*[local-name()='Body']/*")
        if len(calls) != 1 or etree.QName(calls[0]).namespace != NS[service]:
            return _fault("Operación desconocida")
        call = calls[0]
        op = etree.QName(call).localname
        fault = faults.take(op, request.client)
        if fault in ("500", "503"):
            return Response(b"", int(fault))
        if fault == "hang":
            await faults.hang()
        user, password = _field(call, "username"), _field(call, "password")
        if not user or users.get(user) != password:
            if service == "stamp":
                return _answer(service, op, _incidence("300", "Usuario o contraseña inválidos"))
            return _answer(service, op, {"error": "Usuario o contraseña inválidos"})
        response = await dispatch(service, op, call)
        if fault == "hang_after":
            await faults.hang()  # the work is done; the answer never leaves
        return response

    async def dispatch(service: str, op: str, call) -> Response:
        if op in ("stamp", "quick_stamp", "stamped"):
            try:
                xml = base64.b64decode(_field(call, "xml"), validate=True)
            except ValueError:
                return _answer(service, op, _incidence("301", "XML mal formado (base64)"))
            if op == "stamped":
                rec = engine.stamped(xml)
                if rec is None:
                    return _answer(service, op, _incidence("603", "El CFDI no contiene un timbre previo"))
                return _answer(service, op, {"xml": rec.xml.decode(), "UUID": rec.uuid})
            try:
                rec, previous = engine.stamp(xml)
            except PacError as exc:
                return _answer(service, op, _incidence(exc.code, exc.message))
            return _answer(service, op, stamp_result(rec, previous, quick=op == "quick_stamp"))
        if op == "query_pending":
            rec = ledger.get(_field(call, "uuid"))
            if rec is None or rec.pac != engine.name:
                return _answer(service, op, {"error": "UUID no encontrado"})
            return _answer(service, op, {"uuid": rec.uuid, "status": "F", "xml": rec.xml.decode()})
        if op == "cancel":
            rfc = _field(call, "taxpayer_id")
            problem = check_csd(base64.b64decode(_field(call, "cer")), base64.b64decode(_field(call, "key")),
                                users[_field(call, "username")].encode(), rfc)
            if problem:
                return _answer(service, op, {"CodEstatus": f"711 - {problem}"})
            folios = call.xpath(".//*[local-name()='UUID' and @UUID]")
            if len(folios) != 1 or folios[0].get("Motivo") not in ("01", "02", "03", "04"):
                return _answer(service, op, {"CodEstatus": "Solicitud de cancelación inválida"})
            uuid = folios[0].get("UUID").upper()
            code = ledger.cancel(uuid, rfc)
            rec = ledger.get(uuid)
            if code in ("201", "202"):
                receipts[uuid] = rec.acuse
            return _answer(service, op, {
                "Folios": [("Folio", {"EstatusUUID": code, "UUID": uuid,
                                      "EstatusCancelacion": rec.cancellation_status if rec else ""})],
                "Acuse": rec.acuse if rec else "", "RfcEmisor": rfc})
        if op == "get_receipt":
            uuid = _field(call, "uuid").upper()
            if uuid not in receipts:
                return _answer(service, op, {"success": "false", "error": "No se encontró el acuse"})
            return _answer(service, op, {"uuid": uuid, "success": "true", "receipt": receipts[uuid],
                                         "taxpayer_id": _field(call, "taxpayer_id")})
        if op == "get_sat_status":
            try:
                total = Decimal(_field(call, "total"))
            except InvalidOperation:
                return _answer(service, op, {"error": "Total inválido"})
            return _answer(service, op, {"sat": ledger.status(_field(call, "uuid"), _field(call, "taxpayer_id"),
                                                              _field(call, "rtaxpayer_id"), total)})
        if op == "get_pending":
            return _answer(service, op, {"uuids": [("string", u) for u in ledger.pending_for(_field(call, "rtaxpayer_id"))]})
        if op == "accept_reject":
            rfc = _field(call, "rtaxpayer_id")
            problem = check_csd(base64.b64decode(_field(call, "cer")), base64.b64decode(_field(call, "key")),
                                users[_field(call, "username")].encode(), rfc)
            if problem:
                return _answer(service, op, {"error": problem})
            accepted, rejected = [], []
            for item in call.xpath(".//*[local-name()='UUID_AR']"):
                uuid, answer = _field(item, "uuid").upper(), _field(item, "respuesta")
                code = ledger.answer(rfc, uuid, answer == "Aceptacion")
                (accepted if answer == "Aceptacion" else rejected).append(("Folio", {"uuid": uuid, "status": code}))
            return _answer(service, op, {"aceptacion": accepted, "rechazo": rejected})
        return _fault(f"Operación no soportada: {op}")

    async def stamp_service(request: Request) -> Response:
        return await handle(request, "stamp")

    async def cancel_service(request: Request) -> Response:
        return await handle(request, "cancel")

    return Starlette(routes=[Route("/servicios/soap/stamp.wsdl", stamp_service, methods=["POST"]),
                             Route("/servicios/soap/cancel.wsdl", cancel_service, methods=["POST"])])
