"""Is a supplier CFDI still valid at SAT? Asked of SAT's ConsultaCFDIService through the invoice
service's adapter (sat/pac/sat_status.py) when a CFDI is imported or attached, and
again on demand (`recheckSupplierCfdiStatus`).

A CFDI SAT reports as cancelled backs no expense: the import is refused. When SAT cannot be
reached in time the import still goes through (SAT's service is often slow or down, and the user
has the paper in hand), but the expense is not deductible-ready until a re-check confirms it.

Environment (all optional):
  SAT_STATUS_CHECK=true|false      default: on when APP_ENV=production, off otherwise (local dev and
                                   tests run without network; tests turn it on against the simulator)
  SAT_STATUS_URL                   the same setting the invoice service's adapter reads
  SAT_STATUS_TIMEOUT_SECONDS=8     bounds the whole question, connection included
"""

from __future__ import annotations

import asyncio
import enum
import logging
from decimal import Decimal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from subgraphs.expense.supplier_cfdi import MESSAGES
from sat.pac.base import PacError
from sat.pac.sat_status import PRODUCTION_URL, SatStatusService
from sat.pac.transport import Timeouts, shared_client

log = logging.getLogger(__name__)


class SatCheckSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    app_env: str = "development"
    sat_status_check: bool | None = None
    sat_status_url: str = PRODUCTION_URL
    sat_status_timeout_seconds: float = Field(default=8.0, gt=0, le=60)

    @property
    def enabled(self) -> bool:
        return self.app_env == "production" if self.sat_status_check is None else self.sat_status_check

    @property
    def timeouts(self) -> Timeouts:
        t = self.sat_status_timeout_seconds
        return Timeouts(connect=min(t, 5.0), read=t)


class SatState(enum.Enum):
    """What we know of the CFDI at SAT (stored on the expense as the value)."""
    NOT_CHECKED = "NOT_CHECKED"  # the check is off (local development)
    VIGENTE = "VIGENTE"
    CANCELLED = "CANCELLED"
    NOT_FOUND = "NOT_FOUND"  # SAT does not know it (yet: a new timbre can take up to 72 h to reach SAT)
    UNCONFIRMED = "UNCONFIRMED"  # SAT did not answer in time

    @property
    def definitive(self) -> bool:
        """SAT answered about this CFDI (as opposed to: not asked, or no answer)."""
        return self in (SatState.VIGENTE, SatState.CANCELLED, SatState.NOT_FOUND)


_REASONS = {
    SatState.UNCONFIRMED: "No se pudo confirmar con el SAT que el CFDI esté vigente (el servicio no respondió); "
                          "vuelve a consultarlo más tarde (recheckSupplierCfdiStatus).",
    SatState.NOT_FOUND: "El SAT aún no registra este CFDI (puede tardar hasta 72 horas desde su timbrado); "
                        "vuelve a consultarlo más tarde (recheckSupplierCfdiStatus).",
    SatState.CANCELLED: MESSAGES["CFDI_CANCELLED"],
}


def sat_reason(state: str | None) -> str | None:
    """Why SAT's answer keeps the expense from being deductible-ready (None: it does not)."""
    return _REASONS.get(SatState(state)) if state else None


async def ask_sat(uuid: str, issuer_rfc: str, receiver_rfc: str, total: Decimal, seal: str,
                  settings: SatCheckSettings | None = None) -> SatState:
    """SAT's view of the CFDI. Never raises for SAT's own trouble: that is UNCONFIRMED."""
    settings = settings or SatCheckSettings()
    if not settings.enabled:
        return SatState.NOT_CHECKED
    timeouts = settings.timeouts
    sat = SatStatusService(settings.sat_status_url, client=shared_client(timeouts), timeouts=timeouts)
    try:
        # httpx bounds each read; this bounds the whole exchange.
        async with asyncio.timeout(settings.sat_status_timeout_seconds):
            status = await sat.status(uuid, issuer_rfc, receiver_rfc, total, seal)
    except (PacError, TimeoutError) as exc:
        log.warning("SAT status of CFDI %s not confirmed: %s", uuid, exc or "timeout")
        return SatState.UNCONFIRMED
    lifecycle = status.lifecycle
    if lifecycle == "CANCELLED":
        return SatState.CANCELLED
    if lifecycle == "NOT_FOUND":
        return SatState.NOT_FOUND
    return SatState.VIGENTE  # ACTIVE, or a cancellation request pending/rejected: still valid today
