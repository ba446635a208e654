"""HTTP plumbing every real PAC adapter shares: one pooled client, timeouts, and the rule that
decides whether a failed call may still have done its work at the provider.

That rule matters for exactly-once stamping. A refused connection or a 502/503 from the
provider's front door means the request never reached the stamping service: it is safe to send
the same CFDI to another PAC. A read timeout, a dropped connection or a 500/504 means the
provider may have stamped it and we never heard: `PacInDoubt`. The CFDI then belongs to that
PAC until it answers again and says whether it stamped it (see failover.py).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx

from sat.cfdi.models import CFDI_NS, TFD_NS
from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml

from .base import PacError, StampResult


MEXICO_CITY = ZoneInfo("America/Mexico_City")


# Stamping codes every PAC shares (SAT's PAC validations): code -> (temporary?, es-MX message).
STAMP_CODES: dict[str, tuple[bool, str]] = {
    "301": (False, "XML mal formado."),
    "302": (False, "Sello mal formado o inválido."),
    "303": (False, "El sello no corresponde al emisor."),
    "304": (False, "Certificado revocado o caduco."),
    "305": (False, "La fecha de emisión no está dentro de la vigencia del CSD del emisor."),
    "306": (False, "El certificado no es de tipo CSD."),
    "307": (False, "El CFDI contiene un timbre previo."),
    "308": (False, "Certificado no expedido por el SAT."),
    "401": (False, "Fecha y hora de generación fuera de rango (72 horas)."),
    "402": (False, "El RFC del emisor no está en la lista de contribuyentes obligados (LCO)."),
    "403": (False, "La fecha de emisión no es posterior al 1 de enero de 2012."),
}
# What SAT answers per folio to a cancellation request (201/202 are success).
CANCEL_CODES: dict[str, tuple[bool, str]] = {
    "203": (False, "El folio fiscal no corresponde al RFC del emisor."),
    "204": (False, "El folio fiscal no aplica para cancelación."),
    "205": (False, "El folio fiscal no existe."),
}


class PacInDoubt(PacError):
    """The call failed after the request may have reached the provider (timeout, dropped link, 500)."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message, transient=True)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0  # SAT-bound operations (cancel, accept/reject) can take long

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.read, pool=self.connect)


def new_client(timeouts: Timeouts) -> httpx.AsyncClient:
    """Keep-alive pool: one TLS handshake per provider and worker, not one per CFDI."""
    return httpx.AsyncClient(timeout=timeouts.httpx(), follow_redirects=False,
                             limits=httpx.Limits(max_connections=20, max_keepalive_connections=10))


_shared: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Timeouts, httpx.AsyncClient]]" = \
    weakref.WeakKeyDictionary()


def shared_client(timeouts: Timeouts) -> httpx.AsyncClient:
    """One pooled client per event loop (a worker process) and timeout setting, so the PACs built
    for each invoice reuse the same kept-alive connections instead of a handshake per CFDI."""
    per_loop = _shared.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(timeouts)
    if client is None or client.is_closed:
        client = per_loop[timeouts] = new_client(timeouts)
    return client


class HttpAdapter:
    """An adapter's HTTP client: its own pool, or one the caller shares between adapters (and closes)."""

    def __init__(self, client: httpx.AsyncClient | None, timeouts: Timeouts):
        self._owns_client = client is None
        self.client = client or new_client(timeouts)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()


async def send(client: httpx.AsyncClient, provider: str, method: str, url: str, *,
               soap: bool = False, **kwargs) -> httpx.Response:
    """The provider's response, or a transient PacError telling whether the work may have been done.

    `soap`: a 500 carrying a SOAP Fault is the service's answer (bad request), returned as is.
    """
    try:
        response = await client.request(method, url, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise PacError("PAC_UNAVAILABLE", f"No se pudo conectar con {provider} ({type(exc).__name__}).",
                       transient=True) from exc
    except httpx.TimeoutException as exc:
        raise PacInDoubt("PAC_TIMEOUT", f"{provider} no respondió a tiempo.") from exc
    except httpx.HTTPError as exc:  # connection dropped mid-exchange, protocol error
        raise PacInDoubt("PAC_ERROR", f"Error de comunicación con {provider} ({type(exc).__name__}).") from exc
    status = response.status_code
    if status in (502, 503):
        raise PacError("PAC_UNAVAILABLE", f"{provider} no está disponible (HTTP {status}).", transient=True)
    if status == 500 and soap and b"Fault" in response.content[:2000]:
        return response
    if status >= 500:
        raise PacInDoubt("PAC_UNAVAILABLE", f"{provider} respondió con un error del servidor (HTTP {status}).")
    return response


def parse_answer(provider: str, body: bytes):
    """The provider's XML answer, parsed without entities or network; garbage is a transient error."""
    try:
        return parse_xml(body)
    except UnsafeXmlError as exc:
        raise PacInDoubt("PAC_BAD_RESPONSE", f"{provider} devolvió una respuesta ilegible.") from exc


def stamp_from_xml(provider: str, xml: bytes, *, previously_stamped: bool) -> StampResult:
    """Our StampResult from a stamped CFDI, trusting only what its TimbreFiscalDigital says."""
    root = parse_answer(provider, xml)
    tfd = root.find(f"{{{CFDI_NS}}}Complemento/{{{TFD_NS}}}TimbreFiscalDigital")
    if tfd is None or not tfd.get("UUID"):
        raise PacInDoubt("PAC_BAD_RESPONSE", f"{provider} devolvió un CFDI sin TimbreFiscalDigital.")
    # FechaTimbrado is SAT's central-Mexico wall time, without offset.
    stamped_at = datetime.fromisoformat(tfd.get("FechaTimbrado")).replace(tzinfo=MEXICO_CITY).astimezone(timezone.utc)
    return StampResult(uuid=tfd.get("UUID").upper(), stamped_at=stamped_at, xml=xml,
                       sat_certificate_number=tfd.get("NoCertificadoSAT") or "",
                       previously_stamped=previously_stamped)
