"""What the invoice service needs from a PAC (Proveedor Autorizado de Certificación)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class PacError(Exception):
    """A PAC refused or could not answer. `transient` errors are worth retrying (timeouts, 5xx)."""

    def __init__(self, code: str, message: str, *, transient: bool = False):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.transient = code, message, transient


@dataclass(frozen=True)
class StampResult:
    uuid: str
    stamped_at: datetime
    xml: bytes  # the CFDI with its TimbreFiscalDigital
    sat_certificate_number: str
    previously_stamped: bool = False  # the PAC had already stamped this very CFDI


@dataclass(frozen=True)
class CancelResult:
    status: str  # CANCELLED | PENDING (waiting for the receiver) | REJECTED


class Pac(Protocol):
    async def stamp(self, xml: bytes) -> StampResult: ...

    async def cancel(self, uuid: str, rfc: str, reason: str, replacement_uuid: str | None) -> CancelResult: ...

    async def status(self, uuid: str) -> str:
        """ACTIVE | PENDING | CANCELLED | REJECTED | NOT_FOUND"""
        ...
