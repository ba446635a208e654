"""The embedded sandbox PAC: behaves like a real one, offline.

- `stamp`: checks the XSD, the Sello against the embedded Certificado and the 72-hour window;
  assigns an uppercase UUID v4 and signs a real TFD 1.1 with its own test certificate (see
  README.md in this folder). A CFDI it already stamped (same Sello) gets the same timbre back,
  with `previously_stamped=True` (state in Redis, so any worker process sees it).
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
# KEYS: seal, record; ARGV: uuid, record JSON, ttl. Atomic in Redis (a script runs alone).
_CLAIM_SEAL = ("if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then "
               "redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) return 1 end return 0")


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


def check_stampable(root, now: datetime):
    """What every PAC checks before stamping (XSD, Sello, CSD of the issuer, 72 h window), as the
    PacError a PAC answers with; the parsed invoice when the CFDI can be stamped."""
    if root.find(f"{{{CFDI_NS}}}Complemento/{{{TFD_NS}}}TimbreFiscalDigital") is not None:
        raise PacError("307", "El comprobante ya contiene un timbre previo.")
    issues = validate_xsd(root, mode="lean")
    if issues:
        raise PacError("301", f"El XML no cumple con el esquema: {issues[0].message}")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode("".join((root.get("Certificado") or "").split())))
    except ValueError as exc:
        raise PacError("303", "El certificado del emisor no es válido.") from exc
    if not verify_signature(cert, cadena_original(root).encode("utf-8"), root.get("Sello") or ""):
        raise PacError("302", "El sello del emisor no es válido.")
    invoice = parse_tree(root)
    if certificate_rfc(cert) != invoice.issuer.rfc.upper():
        raise PacError("303", "El certificado no corresponde al RFC del emisor.")
    if not is_csd_certificate(cert):
        raise PacError("306", "El certificado no es de tipo CSD (¿es una e.firma/FIEL?).")
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise PacError("305", "La fecha de emisión no está dentro de la vigencia del CSD del emisor.")
    window = issue_date_window(invoice, now)
    if window:
        raise PacError("401", "El rango de la fecha de generación no debe ser mayor a 72 horas.")
    return invoice


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
        try:
            root = parse_xml(xml)
        except UnsafeXmlError as exc:
            raise PacError("301", "XML mal formado.") from exc
        seal = root.get("Sello") or ""
        seal_hash = hashlib.sha256(seal.encode()).hexdigest()
        await self._latency_and_failure(seal_hash)

        known = await self.redis.get(f"{_PREFIX}:seal:{seal_hash}")
        if known:
            return await self._previous(known.decode())
        invoice = check_stampable(root, datetime.now(timezone.utc))
        stamped_at = datetime.now(timezone.utc).astimezone(place_timezone(invoice.place_of_issue)).replace(
            tzinfo=None, microsecond=0)
        tfd = stamp_cfdi(root, signer(), PAC_RFC, stamped_at)
        out = to_bytes(root)
        record = {"uuid": tfd.uuid, "stamped_at": datetime.now(timezone.utc).isoformat(), "xml": out.decode("utf-8"),
                  "issuer_rfc": invoice.issuer.rfc, "status": "ACTIVE"}
        # Two concurrent requests for one CFDI: only the first record wins, the other gets it back.
        # Seal and record are written in one step, as a real PAC commits a timbre: a caller killed
        # (or timed out) halfway must not leave a seal whose timbre can never be found again.
        won = await self.redis.eval(_CLAIM_SEAL, 2, f"{_PREFIX}:seal:{seal_hash}", f"{_PREFIX}:cfdi:{tfd.uuid}",
                                    tfd.uuid.encode(), json.dumps(record).encode(), _TTL)
        if not won:
            return await self._previous((await self.redis.get(f"{_PREFIX}:seal:{seal_hash}")).decode())
        return StampResult(tfd.uuid, datetime.fromisoformat(record["stamped_at"]), out,
                           signer().certificate_number)

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
