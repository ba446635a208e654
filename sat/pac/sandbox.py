"""The embedded sandbox PAC: behaves like a real one, offline.

- `stamp`: checks the XSD, the Sello against the embedded Certificado and the 72-hour window;
  assigns an uppercase UUID v4 and signs a real TFD 1.1 with its own test certificate (see
  README.md in this folder). A CFDI it already stamped (same Sello) gets the same timbre back,
  with `previously_stamped=True` (state in Redis, so any worker process sees it).
  It stands in for a remote PAC, so it costs the caller what one does: its CPU (parse, checks,
  signing, serializing; ~0.6 ms) runs in its own threads, never on the caller's event loop, and each
  call is one request of its own (concurrent calls run concurrently); its state takes ONE Redis
  round trip per timbre (claim the seal and write the record, or read the earlier timbre back).
- `cancel` / `status`: simulates SAT's cancellation with receiver acceptance. Whether acceptance is
  needed is decided from the stored CFDI (`requires_receiver_acceptance`); what the receiver
  answers comes from `PAC_SANDBOX_ACCEPTANCE` = accept (default) | reject | pending.

Failure injection for tests, read from the environment on every call:
  PAC_SANDBOX_LATENCY_MS=250           delay before answering
  PAC_SANDBOX_FAIL=timeout|5xx|reject:CODE
  PAC_SANDBOX_FAIL_MODE=always|once    once: fail only the first attempt for each CFDI
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from redis.asyncio import Redis

from sat.cfdi import load_csd, requires_receiver_acceptance, stamp_cfdi, to_bytes, validate_xsd
from sat.cfdi.cadena import cadena_original
from sat.cfdi.csd import Csd, certificate_rfc, is_csd_certificate, verify_signature
from sat.cfdi.models import CFDI_NS, TFD_NS
from sat.cfdi.parse import parse_tree
from sat.cfdi.rules import issue_date_window
from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml
from sat.cfdi.rules import place_timezone

from .base import CancelResult, PacError, StampResult

HERE = Path(__file__).resolve().parent
PAC_RFC = "SPR190613I52"  # the RFC the sandbox writes as RfcProvCertif
_PREFIX = "pac:sandbox"
_TTL = 90 * 24 * 3600
THREADS = 2
# KEYS: seal, record; ARGV: uuid, record JSON, ttl, record key prefix. Atomic in Redis (a script
# runs alone): the seal is claimed and its record written together, or, when the seal has a timbre
# already, that timbre's uuid and record are answered (the record key follows from the uuid).
_CLAIM_SEAL = """
local known = redis.call('GET', KEYS[1])
if known then
  return {0, known, redis.call('GET', ARGV[4] .. known)}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return {1}
"""


@lru_cache(maxsize=1)
def signer() -> Csd:
    """The sandbox's own certificate (an expired SAT test CSD, loaded inside its validity)."""
    return load_csd(
        (HERE / "xia190128j61_csd.cer").read_bytes(), (HERE / "xia190128j61_csd.key").read_bytes(), "12345678a",
        now=datetime(2021, 6, 1, tzinfo=timezone.utc),
    )


def certificate_lookup(number: str) -> x509.Certificate | None:
    """For `verify_cfdi`: resolves the sandbox's NoCertificadoSAT to its certificate."""
    s = signer()
    return s.certificate if number == s.certificate_number else None


@lru_cache(maxsize=256)
def _issuer_certificate(certificado: str) -> tuple[x509.Certificate, str, bool] | None:
    """The Certificado attribute read once per certificate, not per stamp (an issuer's CFDIs all
    carry the same one): the certificate, its RFC and whether it is a CSD; None when unreadable."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode("".join(certificado.split())))
    except ValueError:
        return None
    return cert, certificate_rfc(cert), is_csd_certificate(cert)


def check_stampable(root, now: datetime):
    """What every PAC checks before stamping (XSD, Sello, CSD of the issuer, 72 h window), as the
    PacError a PAC answers with; the parsed invoice when the CFDI can be stamped."""
    if root.find(f"{{{CFDI_NS}}}Complemento/{{{TFD_NS}}}TimbreFiscalDigital") is not None:
        raise PacError("307", "El comprobante ya contiene un timbre previo.")
    issues = validate_xsd(root, mode="lean")
    if issues:
        raise PacError("301", f"El XML no cumple con el esquema: {issues[0].message}")
    issuer = _issuer_certificate(root.get("Certificado") or "")
    if issuer is None:
        raise PacError("303", "El certificado del emisor no es válido.")
    cert, rfc, is_csd = issuer
    if not verify_signature(cert, cadena_original(root).encode("utf-8"), root.get("Sello") or ""):
        raise PacError("302", "El sello del emisor no es válido.")
    invoice = parse_tree(root)
    if rfc != invoice.issuer.rfc.upper():
        raise PacError("303", "El certificado no corresponde al RFC del emisor.")
    if not is_csd:
        raise PacError("306", "El certificado no es de tipo CSD (¿es una e.firma/FIEL?).")
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise PacError("305", "La fecha de emisión no está dentro de la vigencia del CSD del emisor.")
    window = issue_date_window(invoice, now)
    if window:
        raise PacError("401", "El rango de la fecha de generación no debe ser mayor a 72 horas.")
    return invoice


@lru_cache(maxsize=1)
def _cpu() -> ThreadPoolExecutor:
    """The sandbox's own threads (the "PAC's servers"): two, so calls overlap there too, and apart
    from asyncio's default executor, where the worker seals its batches. Measured per stamp: six
    threads (to_thread's pool) cost more CPU than one or two, from GIL hand-offs between them."""
    return ThreadPoolExecutor(THREADS, thread_name_prefix="sandbox-pac")


@dataclass
class _Prepared:
    """What the sandbox's CPU work made of a CFDI: its seal's hash (None: not even XML) and either
    the refusal a PAC answers or the timbre to commit (uuid, stamped CFDI, record)."""
    seal_hash: str | None
    refused: PacError | None = None
    uuid: str = ""
    stamped_at: datetime | None = None
    xml: bytes = b""
    record: bytes = b""


def _timbre(xml: bytes, now: datetime) -> _Prepared:
    """Everything a stamp computes (blocking CPU, run in a thread): parse, the checks of
    `check_stampable`, the signed TFD and the stamped CFDI with its record."""
    try:
        root = parse_xml(xml)
    except UnsafeXmlError as exc:
        refused = PacError("301", "XML mal formado.")
        refused.__cause__ = exc
        return _Prepared(None, refused)
    seal_hash = hashlib.sha256((root.get("Sello") or "").encode()).hexdigest()
    try:
        invoice = check_stampable(root, now)
    except PacError as exc:
        return _Prepared(seal_hash, exc)
    stamped_at = now.astimezone(place_timezone(invoice.place_of_issue)).replace(tzinfo=None, microsecond=0)
    tfd = stamp_cfdi(root, signer(), PAC_RFC, stamped_at)
    out = to_bytes(root)
    record = {"uuid": tfd.uuid, "stamped_at": now.isoformat(), "xml": out.decode("utf-8"),
              "issuer_rfc": invoice.issuer.rfc, "status": "ACTIVE"}
    return _Prepared(seal_hash, None, tfd.uuid, now, out, json.dumps(record).encode())


class SandboxPac:
    def __init__(self, redis: Redis):
        self.redis = redis

    async def _latency_and_failure(self, key: str) -> None:
        latency = int(os.environ.get("PAC_SANDBOX_LATENCY_MS", "0") or 0)
        if latency:
            await asyncio.sleep(latency / 1000)
        fail = os.environ.get("PAC_SANDBOX_FAIL", "").strip()
        if not fail:
            return
        if os.environ.get("PAC_SANDBOX_FAIL_MODE", "always") == "once":
            first = await self.redis.set(f"{_PREFIX}:failed:{fail}:{key}", b"1", nx=True, ex=_TTL)
            if not first:
                return
        if fail == "timeout":
            raise PacError("PAC_TIMEOUT", "El PAC no respondió a tiempo.", transient=True)
        if fail == "5xx":
            raise PacError("PAC_UNAVAILABLE", "El PAC respondió con un error del servidor (503).", transient=True)
        if fail.startswith("reject:"):
            code = fail.split(":", 1)[1] or "CFDI40999"
            raise PacError(code, f"El PAC rechazó el comprobante (código {code}).")

    async def stamp(self, xml: bytes, *, idempotency_key: str | None = None) -> StampResult:
        # A real PAC's CPU is not ours: the sandbox's runs in its threads, off the caller's event loop.
        prepared = await asyncio.get_running_loop().run_in_executor(_cpu(), _timbre, xml, datetime.now(timezone.utc))
        if prepared.seal_hash is None:
            raise prepared.refused
        await self._latency_and_failure(prepared.seal_hash)
        seal_key = f"{_PREFIX}:seal:{prepared.seal_hash}"
        if prepared.refused is not None:
            # A CFDI stamped before gets its timbre back even when it would be refused now (e.g.
            # past the 72-hour window), as from a real PAC.
            known = await self.redis.get(seal_key)
            if known:
                return await self._previous(known.decode())
            raise prepared.refused
        # Two concurrent requests for one CFDI: only the first record wins, the other gets it back.
        # Seal and record are written in one step, as a real PAC commits a timbre: a caller killed
        # (or timed out) halfway must not leave a seal whose timbre can never be found again.
        won = await self.redis.eval(_CLAIM_SEAL, 2, seal_key, f"{_PREFIX}:cfdi:{prepared.uuid}",
                                    prepared.uuid.encode(), prepared.record, _TTL, f"{_PREFIX}:cfdi:")
        if not int(won[0]):
            known = won[1].decode()
            rec = json.loads(won[2]) if len(won) > 2 and won[2] else None
            return self._as_previous(rec) if rec is not None else await self._previous(known)
        return StampResult(prepared.uuid, prepared.stamped_at, prepared.xml, signer().certificate_number)

    async def _record(self, uuid: str) -> dict | None:
        for _ in range(50):  # the winner writes the record right after claiming the seal
            raw = await self.redis.get(f"{_PREFIX}:cfdi:{uuid.upper()}")
            if raw:
                return json.loads(raw)
            await asyncio.sleep(0.02)
        return None

    async def _previous(self, uuid: str) -> StampResult:
        rec = await self._record(uuid)
        if rec is None:
            raise PacError("PAC_UNAVAILABLE", "El PAC no encontró el timbre previo.", transient=True)
        return self._as_previous(rec)

    @staticmethod
    def _as_previous(rec: dict) -> StampResult:
        return StampResult(rec["uuid"], datetime.fromisoformat(rec["stamped_at"]), rec["xml"].encode("utf-8"),
                           signer().certificate_number, previously_stamped=True)

    async def cancel(self, uuid: str, rfc: str, reason: str, replacement_uuid: str | None) -> CancelResult:
        await self._latency_and_failure(f"cancel:{uuid}")
        rec = await self._record(uuid) if uuid else None
        if rec is None:
            raise PacError("205", "El folio fiscal no existe.")
        if rec["issuer_rfc"] != rfc.upper():
            raise PacError("203", "El folio fiscal no corresponde al RFC del emisor.")
        if rec["status"] in ("CANCELLED", "PENDING"):
            return CancelResult("CANCELLED" if rec["status"] == "CANCELLED" else "PENDING")
        invoice = parse_tree(parse_xml(rec["xml"].encode("utf-8")))
        needs = requires_receiver_acceptance(invoice, datetime.now(timezone.utc))
        rec["status"] = "PENDING" if needs else "CANCELLED"
        rec["reason"], rec["replacement_uuid"] = reason, replacement_uuid
        await self.redis.set(f"{_PREFIX}:cfdi:{rec['uuid']}", json.dumps(rec).encode(), ex=_TTL)
        return CancelResult(rec["status"])

    async def status(self, uuid: str) -> str:
        rec = await self._record(uuid)
        if rec is None:
            return "NOT_FOUND"
        if rec["status"] == "PENDING":
            answer = os.environ.get("PAC_SANDBOX_ACCEPTANCE", "accept")
            if answer in ("accept", "reject"):
                rec["status"] = "CANCELLED" if answer == "accept" else "REJECTED"
                await self.redis.set(f"{_PREFIX}:cfdi:{rec['uuid']}", json.dumps(rec).encode(), ex=_TTL)
        return rec["status"]
