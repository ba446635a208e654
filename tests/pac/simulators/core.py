"""State shared by the simulators: what SAT knows (`SatLedger`), what one PAC stamped
(`StampingEngine`), and the faults a test asks a simulator to show (`Faults`).

Handlers run on the simulator's own thread and event loop; a lock keeps the state consistent.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sat.cfdi import requires_receiver_acceptance, stamp_cfdi, to_bytes
from sat.cfdi.csd import certificate_rfc
from sat.cfdi.rules import place_timezone
from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml
from sat.pac.base import PacError
from sat.pac.sandbox import check_stampable, signer


def seal_hash(root) -> str:
    return hashlib.sha256((root.get("Sello") or "").encode()).hexdigest()


@dataclass
class Record:
    uuid: str
    xml: bytes
    issuer_rfc: str
    receiver_rfc: str
    total: Decimal
    invoice: object
    pac: str
    state: str = "Vigente"  # Vigente | Cancelado
    cancellation_status: str = ""  # "" | En proceso | Cancelado sin aceptación | Cancelado con aceptación | Solicitud rechazada
    acuse: str = ""


class SatLedger:
    """SAT's side: every timbre any simulated PAC issued, cancellations, receivers' pending requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.force_acceptance = False  # tests: make the next cancellations wait for the receiver

    def register(self, record: Record) -> None:
        with self.lock:
            self.records[record.uuid] = record

    def get(self, uuid: str) -> Record | None:
        return self.records.get(uuid.upper())

    def cancel(self, uuid: str, issuer_rfc: str) -> str:
        """SAT's per-folio code: 201 received, 202 received before, 203 not the issuer, 205 unknown."""
        with self.lock:
            rec = self.records.get(uuid.upper())
            if rec is None:
                return "205"
            if rec.issuer_rfc != issuer_rfc.upper():
                return "203"
            if rec.state == "Cancelado" or rec.cancellation_status == "En proceso":
                return "202"
            needs = self.force_acceptance or requires_receiver_acceptance(rec.invoice, datetime.now(timezone.utc))
            if needs:
                rec.cancellation_status = "En proceso"
            else:
                rec.state, rec.cancellation_status = "Cancelado", "Cancelado sin aceptación"
            rec.acuse = (f'<Acuse Fecha="{datetime.now().isoformat(timespec="seconds")}" RfcEmisor="{rec.issuer_rfc}">'
                         f'<Folios><UUID>{rec.uuid}</UUID><EstatusUUID>201</EstatusUUID></Folios></Acuse>')
            return "201"

    def pending_for(self, receiver_rfc: str) -> list[str]:
        with self.lock:
            return [r.uuid for r in self.records.values()
                    if r.receiver_rfc == receiver_rfc.upper() and r.cancellation_status == "En proceso"]

    def answer(self, receiver_rfc: str, uuid: str, accept: bool) -> str:
        """SAT's codes for accept/reject: 1000 done, 1001 no pending request, 1003 not the receiver, 1005 unknown."""
        with self.lock:
            rec = self.records.get(uuid.upper())
            if rec is None:
                return "1005"
            if rec.receiver_rfc != receiver_rfc.upper():
                return "1003"
            if rec.cancellation_status != "En proceso":
                return "1001"
            if accept:
                rec.state, rec.cancellation_status = "Cancelado", "Cancelado con aceptación"
            else:
                rec.cancellation_status = "Solicitud rechazada"
            return "1000"

    def status(self, uuid: str, issuer_rfc: str, receiver_rfc: str, total: Decimal) -> dict[str, str]:
        rec = self.get(uuid)
        if rec is None or (rec.issuer_rfc, rec.receiver_rfc) != (issuer_rfc.upper(), receiver_rfc.upper()) \
                or rec.total != total:
            return {"CodigoEstatus": "N - 602: Comprobante no encontrado.", "Estado": "No Encontrado",
                    "EsCancelable": "", "EstatusCancelacion": ""}
        needs = requires_receiver_acceptance(rec.invoice, datetime.now(timezone.utc))
        return {"CodigoEstatus": "S - Comprobante obtenido satisfactoriamente.", "Estado": rec.state,
                "EsCancelable": "Cancelable con aceptación" if needs else "Cancelable sin aceptación",
                "EstatusCancelacion": rec.cancellation_status, "ValidacionEFOS": "200"}


class Faults:
    """Faults a test queues for the next calls of an operation: "503", "500", "hang" (never
    answers, does nothing) or "hang_after" (does the work, then never answers)."""

    def __init__(self):
        self.queue: dict[str, deque[str]] = {}
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.quirks: set[str] = set()  # documented provider behaviours a test switches on
        self.peers: set[tuple[str, int]] = set()  # client (host, port) seen: one per kept-alive connection

    def inject(self, kind: str, op: str = "stamp", times: int = 1) -> None:
        with self.lock:
            self.queue.setdefault(op, deque()).extend([kind] * times)

    def take(self, op: str, peer=None) -> str | None:
        with self.lock:
            if peer is not None:
                self.peers.add((peer.host, peer.port))
            self.calls[op] = self.calls.get(op, 0) + 1
            q = self.queue.get(op)
            return q.popleft() if q else None

    def clear(self) -> None:
        with self.lock:
            self.queue.clear()
            self.quirks.clear()
            self.peers.clear()

    async def hang(self) -> None:
        while not self.released.is_set():
            await asyncio.sleep(0.05)


class StampingEngine:
    """One PAC's stamping: validates like a PAC, one timbre per sealed CFDI, idempotency keys."""

    def __init__(self, ledger: SatLedger, pac_rfc: str, name: str):
        self.ledger, self.pac_rfc, self.name = ledger, pac_rfc, name
        self.by_seal: dict[str, str] = {}
        self.by_key: dict[str, str] = {}  # idempotency key → seal hash
        self.lock = threading.Lock()

    def stamp(self, xml: bytes, key: str | None = None) -> tuple[Record, bool]:
        """(record, previously_stamped) or PacError with the PAC's code."""
        try:
            root = parse_xml(xml)
        except UnsafeXmlError as exc:
            raise PacError("301", "XML mal formado.") from exc
        digest = seal_hash(root)
        with self.lock:
            if key and self.by_key.get(key, digest) != digest:
                raise PacError("SWCUSTOMID", "El customId ya fue utilizado con otro comprobante.")
            known = self.by_seal.get(digest)
            if known:
                return self.ledger.get(known), True
            invoice = check_stampable(root, datetime.now(timezone.utc))
            local = datetime.now(timezone.utc).astimezone(place_timezone("06000")).replace(tzinfo=None, microsecond=0)
            tfd = stamp_cfdi(root, signer(), self.pac_rfc, local)
            record = Record(tfd.uuid, to_bytes(root), invoice.issuer.rfc.upper(), invoice.receiver.rfc.upper(),
                            invoice.total, invoice, self.name)
            self.ledger.register(record)
            self.by_seal[digest] = tfd.uuid
            if key:
                self.by_key[key] = digest
            return record, False

    def stamped(self, xml: bytes) -> Record | None:
        try:
            root = parse_xml(xml)
        except UnsafeXmlError:
            return None
        known = self.by_seal.get(seal_hash(root))
        return self.ledger.get(known) if known else None


def check_csd(cert_der_or_pem: bytes, key_bytes: bytes, password: bytes, rfc: str) -> str | None:
    """What a PAC checks on a CSD sent to cancel or answer: None when fine, else the reason."""
    try:
        cert = (x509.load_pem_x509_certificate(cert_der_or_pem) if cert_der_or_pem.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(cert_der_or_pem))
        key = (serialization.load_pem_private_key(key_bytes, password) if key_bytes.lstrip().startswith(b"-----")
               else serialization.load_der_private_key(key_bytes, password))
    except (ValueError, TypeError):
        return "No se pudo abrir el certificado o la llave con la contraseña dada."
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        return "La llave privada no corresponde al certificado."
    if certificate_rfc(cert) != rfc.upper():
        return "El certificado no corresponde al RFC."
    return None


@dataclass
class Accounts:
    """Credentials a simulator accepts."""
    users: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
