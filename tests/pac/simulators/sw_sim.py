"""SW Sapien's REST services as documented in SW's SDKs: bearer token (or /security/authenticate),
stamp v4 (multipart `xml`, `customid` header), cancel by CSD (JSON) and by signed XML,
/pendings/{rfc}, /acceptreject/csd. Answers use SW's envelope {status, data, message, messageDetail}.

Our reading of the documentation, reproduced here: a re-sent CFDI answers 307 with the earlier
timbre in `data`; a `customid` already used for another CFDI is refused.
"""

from __future__ import annotations

import base64
import secrets
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml
from sat.pac.base import PacError

from .core import Faults, SatLedger, StampingEngine, check_csd

CANCEL_NS = "http://cancelacfd.sat.gob.mx"


def _error(message: str, status: int = 400, data=None) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message, "messageDetail": message, "data": data}, status)


def _ok(data) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


def _v4(rec) -> dict:
    return {"cfdi": rec.xml.decode(), "uuid": rec.uuid, "noCertificadoSAT": "", "fechaTimbrado": "",
            "selloSAT": "", "selloCFDI": "", "cadenaOriginalSAT": "", "qrCode": ""}


def sw_app(ledger: SatLedger, engine: StampingEngine, users: dict[str, str], tokens: set[str],
           faults: Faults) -> Starlette:
    issued: dict[str, float] = {}

    def authorised(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and (token in tokens or issued.get(token, 0) > time.time())

    def guarded(op: str):
        def wrap(handler):
            async def endpoint(request: Request) -> Response:
                fault = faults.take(op, request.client)
                if fault in ("500", "503"):
                    return Response(b"", int(fault))
                if fault == "hang":
                    await faults.hang()
                if not authorised(request):
                    return _error("AU4102 - El token proporcionado no es válido o expiró.", 401)
                response = await handler(request)
                if fault == "hang_after":
                    await faults.hang()
                return response
            return endpoint
        return wrap

    async def authenticate(request: Request) -> Response:
        user, password = request.headers.get("user"), request.headers.get("password")
        if not user or users.get(user) != password:
            return _error("AU2000 - El usuario o contraseña son inválidos.", 401)
        token = secrets.token_urlsafe(24)
        issued[token] = time.time() + 7200
        return _ok({"token": token, "expires_in": int(issued[token])})

    @guarded("stamp")
    async def stamp(request: Request) -> Response:
        form = await request.form()
        upload = form.get("xml")
        if upload is None:
            return _error("301 - XML mal formado (falta el archivo xml).")
        xml = await upload.read() if hasattr(upload, "read") else str(upload).encode()
        try:
            rec, previous = engine.stamp(xml, request.headers.get("customid"))
        except PacError as exc:
            return _error(f"{exc.code} - {exc.message}")
        if previous:
            return _error("307 - El comprobante contiene un timbre previo.", data=_v4(rec))
        return _ok(_v4(rec))

    def cancel_answer(uuid: str, rfc: str) -> Response:
        code = ledger.cancel(uuid, rfc)
        rec = ledger.get(uuid)
        if code not in ("201", "202"):
            return _error(f"{code} - No se pudo cancelar el folio.", data={"uuid": {uuid: code}})
        return _ok({"acuse": rec.acuse, "uuid": {uuid: code}})

    @guarded("cancel")
    async def cancel_csd(request: Request) -> Response:
        body = await request.json()
        missing = [k for k in ("uuid", "rfc", "motivo", "b64Cer", "b64Key", "password") if not body.get(k)]
        if missing or body["motivo"] not in ("01", "02", "03", "04"):
            return _error(f"CACFDI33 - Problemas con los campos: {', '.join(missing) or 'motivo'}.")
        problem = check_csd(base64.b64decode(body["b64Cer"]), base64.b64decode(body["b64Key"]),
                            body["password"].encode(), body["rfc"])
        if problem:
            return _error(f"CACFDI33 - {problem}")
        return cancel_answer(body["uuid"].upper(), body["rfc"])

    @guarded("cancel")
    async def cancel_xml(request: Request) -> Response:
        upload = (await request.form()).get("xml")
        try:
            root = parse_xml(await upload.read())
        except (UnsafeXmlError, AttributeError):
            return _error("CACFDI33 - XML de cancelación mal formado.")
        folios = root.findall(f"{{{CANCEL_NS}}}Folios/{{{CANCEL_NS}}}Folio")
        signature = root.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
        if root.tag != f"{{{CANCEL_NS}}}Cancelacion" or len(folios) != 1 or signature is None:
            return _error("CACFDI33 - La solicitud de cancelación no es válida.")
        return cancel_answer(folios[0].get("UUID", "").upper(), root.get("RfcEmisor", ""))

    @guarded("pending")
    async def pendings(request: Request) -> Response:
        uuids = ledger.pending_for(request.path_params["rfc"])
        return JSONResponse({"status": "success", "codStatus": "1100" if uuids else "1101", "data": {"uuid": uuids}})

    @guarded("accept_reject")
    async def accept_reject(request: Request) -> Response:
        body = await request.json()
        problem = check_csd(base64.b64decode(body.get("b64Cer", "")), base64.b64decode(body.get("b64Key", "")),
                            str(body.get("password", "")).encode(), body.get("rfc", ""))
        if problem:
            return _error(f"CA1000 - {problem}")
        folios = [{"uuid": f["uuid"].upper(), "respuesta": f["action"],
                   "estatusUUID": ledger.answer(body["rfc"], f["uuid"], f["action"] == "Aceptacion")}
                  for f in body.get("uuids") or []]
        return _ok({"acuse": "<Acuse/>", "folios": folios})

    return Starlette(routes=[
        Route("/security/authenticate", authenticate, methods=["POST"]),
        Route("/v4/cfdi33/stamp/v4", stamp, methods=["POST"]),
        Route("/cfdi33/cancel/csd", cancel_csd, methods=["POST"]),
        Route("/cfdi33/cancel/xml", cancel_xml, methods=["POST"]),
        Route("/pendings/{rfc}", pendings, methods=["GET"]),
        Route("/acceptreject/csd", accept_reject, methods=["POST"]),
    ])
