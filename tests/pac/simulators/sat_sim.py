"""SAT's ConsultaCFDIService (WCF/SOAP 1.1): SOAPAction IConsultaCFDIService/Consulta, one
`expresionImpresa` argument, answer in the Sat.Cfdi.Negocio.ConsultaCfdi.Servicio data contract."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qs, urlsplit

from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml

from .core import Faults, SatLedger

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
TEMPURI = "http://tempuri.org/"
CONTRACT = "http://schemas.datacontract.org/2004/07/Sat.Cfdi.Negocio.ConsultaCfdi.Servicio"
ACTION = "http://tempuri.org/IConsultaCFDIService/Consulta"
INVALID = {"CodigoEstatus": "N - 601: La expresión impresa proporcionada no es válida.", "Estado": "No Encontrado",
           "EsCancelable": "", "EstatusCancelacion": ""}


def _envelope(fields: dict[str, str]) -> bytes:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    response = etree.SubElement(etree.SubElement(env, f"{{{SOAP}}}Body"), f"{{{TEMPURI}}}ConsultaResponse",
                                nsmap={None: TEMPURI})
    result = etree.SubElement(response, f"{{{TEMPURI}}}ConsultaResult", nsmap={"a": CONTRACT})
    for name, value in fields.items():
        etree.SubElement(result, f"{{{CONTRACT}}}{name}").text = value or None
    return etree.tostring(env, xml_declaration=True, encoding="utf-8")


def _fault(message: str) -> Response:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    fault = etree.SubElement(etree.SubElement(env, f"{{{SOAP}}}Body"), f"{{{SOAP}}}Fault")
    etree.SubElement(fault, "faultcode").text = "s:Client"
    etree.SubElement(fault, "faultstring").text = message
    return Response(etree.tostring(env, encoding="utf-8"), 500, media_type="text/xml")


def sat_app(ledger: SatLedger, faults: Faults) -> Starlette:
    async def consulta(request: Request) -> Response:
        fault = faults.take("status")
        if fault in ("500", "503"):
            return Response(b"", int(fault))
        if fault == "hang":
            await faults.hang()
        if request.headers.get("soapaction", "").strip('"') != ACTION:
            return _fault("The message with Action '' cannot be processed at the receiver.")
        try:
            root = parse_xml(await request.body())
        except UnsafeXmlError:
            return _fault("XML mal formado")
        expr = root.xpath("//*[local-name()='Consulta']/*[local-name()='expresionImpresa']")
        if not expr:
            return _fault("Falta expresionImpresa")
        query = {k: v[0] for k, v in parse_qs(urlsplit((expr[0].text or "").strip()).query).items()}
        try:
            total = Decimal(query["tt"])
            fields = ledger.status(query["id"], query["re"], query["rr"], total)
        except (KeyError, InvalidOperation):
            fields = INVALID
        return Response(_envelope(fields), media_type="text/xml")

    return Starlette(routes=[Route("/ConsultaCFDIService.svc", consulta, methods=["POST"])])
