"""SW Sapien (SmarterWeb, REST + bearer token): stamp v4, cancel by CSD or by signed XML,
pending cancellations and accept/reject as the receiver; status through SAT's ConsultaCFDIService.

Wire shapes follow SW's public SDKs (lunasoft sw-sdk-python/php) and python-satcfdi: every answer is
`{"status": "success"|"error", "data": ..., "message": "CODE - text", "messageDetail": ...}`.
Authentication is a long-lived account token, or user/password exchanged at /security/authenticate
for a 2-hour token (renewed on expiry or on a 401).

Idempotency: stamp v4 takes a `customid` header. We send the invoice's idempotency key there, so a
retry after a lost answer is recognised as the same request, and a re-sent CFDI answers 307
("timbre previo") with the earlier timbre in `data`, which we return as `previously_stamped`.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal

import httpx
from cryptography.hazmat.primitives import serialization

from sat.cfdi.csd import Csd

from .base import CancelResult, PacError, StampResult
from .finkok import cancel_outcome
from . import transport
from .transport import HttpAdapter, PacInDoubt, Timeouts, send, stamp_from_xml

TEST_URL = "https://services.test.sw.com.mx"
PRODUCTION_URL = "https://services.sw.com.mx"
PROVIDER = "SW Sapien"

# Codes SW puts at the start of `message`. True = retry later; everything unknown is permanent.
CODES: dict[str, tuple[bool, str]] = {
    "AU4101": (False, "El token de SW Sapien está vacío."),
    "AU4102": (False, "El token de SW Sapien no es válido o expiró."),
    "AU2000": (False, "Usuario o contraseña de SW Sapien inválidos."),
    **transport.STAMP_CODES,
    **transport.CANCEL_CODES,
    "CACFDI33": (False, "Datos de cancelación incompletos o inválidos."),
    "CASD": (True, "SW Sapien no pudo comunicarse con el SAT."),
    "SWCUSTOMID": (False, "El identificador de la solicitud ya se usó con otro comprobante."),
}
_CODE = re.compile(r"^\s*([A-Za-z]*\d+|[A-Z]{2,}[A-Z0-9]*)")


def error_from(body: dict) -> PacError:
    message = str(body.get("message") or "")
    match = _CODE.match(message)
    code = match.group(1) if match else "PAC_ERROR"
    transient, text = CODES.get(code, (False, message or "SW Sapien rechazó la solicitud."))
    if code.startswith("CFDI"):
        text = message
    return PacError(code, text, transient=transient)


@dataclass(frozen=True)
class SwAccount:
    token: str | None = None  # the account's long-lived token, or…
    user: str | None = None  # …user and password for 2-hour tokens
    password: str | None = None


class SwSapienPac(HttpAdapter):
    name = "swsapien"

    def __init__(self, account: SwAccount, *, url: str = TEST_URL, csd: Csd | None = None, sat=None,
                 client: httpx.AsyncClient | None = None, timeouts: Timeouts = Timeouts()):
        self.account, self.url, self.csd, self.sat = account, url.rstrip("/"), csd, sat
        super().__init__(client, timeouts)
        self._token, self._expires = account.token, float("inf") if account.token else 0.0

    # --- plumbing -------------------------------------------------------------------------------
    async def _bearer(self, renew: bool = False) -> str:
        if self.account.token:
            return self.account.token
        if renew or not self._token or time.time() > self._expires - 60:
            response = await send(self.client, PROVIDER, "POST", f"{self.url}/security/authenticate",
                                  headers={"user": self.account.user or "", "password": self.account.password or ""})
            body = _json(response)
            if body.get("status") != "success":
                raise error_from(body)
            self._token, self._expires = body["data"]["token"], float(body["data"].get("expires_in") or 0)
        return self._token

    async def _request(self, method: str, path: str, *, headers: dict | None = None, **kwargs) -> dict:
        for attempt in (0, 1):
            token = await self._bearer(renew=attempt == 1)
            response = await send(self.client, PROVIDER, method, f"{self.url}{path}",
                                  headers={"Authorization": f"bearer {token}", **(headers or {})}, **kwargs)
            if response.status_code == 401 and attempt == 0 and not self.account.token:
                continue  # the 2-hour token expired early: renew once
            return _json(response)
        raise AssertionError("unreachable")

    # --- stamping -------------------------------------------------------------------------------
    async def stamp(self, xml: bytes, *, idempotency_key: str | None = None) -> StampResult:
        headers = {"customid": idempotency_key} if idempotency_key else {}
        body = await self._request("POST", "/v4/cfdi33/stamp/v4", headers=headers,
                                   files={"xml": ("xml", xml, "text/xml")})
        data = body.get("data") or {}
        if body.get("status") == "success" and data.get("cfdi"):
            return stamp_from_xml(PROVIDER, data["cfdi"].encode("utf-8"), previously_stamped=False)
        error = error_from(body)
        if error.code == "307":
            if data.get("cfdi"):
                return stamp_from_xml(PROVIDER, data["cfdi"].encode("utf-8"), previously_stamped=True)
            raise PacInDoubt("307", "SW Sapien tiene un timbre previo pero no lo devolvió.")
        raise error

    async def recover(self, xml: bytes, *, idempotency_key: str | None = None) -> StampResult | None:
        """SW has no separate "stamped" query: re-sending with the same customid is answered with
        the earlier timbre (307) when there is one, and stamps it here when there is none."""
        return await self.stamp(xml, idempotency_key=idempotency_key)

    # --- cancellation (issuer) ------------------------------------------------------------------
    def _csd_json(self) -> dict:
        """SW wants the DER certificate and the encrypted DER key: we encrypt it for this call
        with a one-time password, so the CSD's own password never leaves the vault."""
        if self.csd is None:
            raise PacError("CSD_REQUIRED", "Se necesita el CSD del emisor para cancelar con SW Sapien.")
        password = secrets.token_urlsafe(18)
        key = self.csd.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                 serialization.BestAvailableEncryption(password.encode()))
        cer = self.csd.certificate.public_bytes(serialization.Encoding.DER)
        return {"b64Cer": base64.b64encode(cer).decode(), "b64Key": base64.b64encode(key).decode(),
                "password": password}

    async def _cancel_answer(self, body: dict, uuid: str) -> str:
        if body.get("status") != "success":
            raise error_from(body)
        codes = {k.upper(): str(v) for k, v in ((body.get("data") or {}).get("uuid") or {}).items()}
        code = codes.get(uuid.upper(), "")
        if code not in ("201", "202"):
            raise error_from({"message": f"{code} - {body.get('messageDetail') or ''}"})
        return code

    async def cancel(self, uuid: str, rfc: str, reason: str, replacement_uuid: str | None, *,
                     receiver_rfc: str | None = None, total: Decimal | None = None) -> CancelResult:
        body = await self._request("POST", "/cfdi33/cancel/csd", json={
            "uuid": uuid.upper(), "rfc": rfc.upper(), "motivo": reason,
            "foliosustitucion": (replacement_uuid or "").upper(), **self._csd_json()})
        await self._cancel_answer(body, uuid)
        return await self._after_cancel(uuid, rfc, receiver_rfc, total)

    async def cancel_xml(self, signed_request: bytes, uuid: str, rfc: str, *, receiver_rfc: str | None = None,
                         total: Decimal | None = None) -> CancelResult:
        """Cancel with a Cancelacion request already signed (XMLDSig) by the issuer's CSD."""
        body = await self._request("POST", "/cfdi33/cancel/xml", files={"xml": ("xml", signed_request, "text/xml")})
        await self._cancel_answer(body, uuid)
        return await self._after_cancel(uuid, rfc, receiver_rfc, total)

    async def _after_cancel(self, uuid, rfc, receiver_rfc, total) -> CancelResult:
        """SW only says the request was received; SAT says whether it is done or awaits the receiver."""
        if self.sat is None or receiver_rfc is None or total is None:
            return CancelResult("PENDING")
        status = await self.sat.status(uuid, rfc, receiver_rfc, total)
        return CancelResult("CANCELLED" if status.state == "Cancelado" else cancel_outcome(status.cancellation_status))

    async def status(self, uuid: str, *, issuer_rfc: str | None = None, receiver_rfc: str | None = None,
                     total: Decimal | None = None) -> str:
        if self.sat is None or issuer_rfc is None or receiver_rfc is None or total is None:
            raise PacError("STATUS_NEEDS_CFDI", "La consulta de estado necesita RFC emisor, RFC receptor y total.")
        return (await self.sat.status(uuid, issuer_rfc, receiver_rfc, total)).lifecycle

    # --- receiver side --------------------------------------------------------------------------
    async def pending_cancellations(self, receiver_rfc: str) -> list[str]:
        body = await self._request("GET", f"/pendings/{receiver_rfc.upper()}")
        if body.get("status") != "success":
            raise error_from(body)
        return [u.upper() for u in (body.get("data") or {}).get("uuid") or []]

    async def answer_cancellations(self, receiver_rfc: str, answers: dict[str, bool]) -> dict[str, str]:
        body = await self._request("POST", "/acceptreject/csd", json={
            "rfc": receiver_rfc.upper(), **self._csd_json(),
            "uuids": [{"uuid": u.upper(), "action": "Aceptacion" if ok else "Rechazo"} for u, ok in answers.items()]})
        if body.get("status") != "success":
            raise error_from(body)
        return {f["uuid"].upper(): str(f["estatusUUID"]) for f in (body.get("data") or {}).get("folios") or []}


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError as exc:
        raise PacInDoubt("PAC_BAD_RESPONSE", f"{PROVIDER} devolvió una respuesta ilegible.") from exc
    if not isinstance(body, dict):
        raise PacInDoubt("PAC_BAD_RESPONSE", f"{PROVIDER} devolvió una respuesta inesperada.")
    return body
