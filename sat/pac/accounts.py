"""Where each PAC lives (typed settings from the environment) and an organization's PAC accounts:
validated, sealed at rest with the same envelope as the CSD keys, and assembled into the one PAC
the invoice service talks to (a FailoverPac when the organization lists more than one).

Environment (all optional):
  PAC_ENVIRONMENT=test|production       picks each provider's default endpoint
  FINKOK_URL, SW_URL, SAT_STATUS_URL    override an endpoint (a simulator, a proxy)
  PAC_CONNECT_TIMEOUT_SECONDS=5  PAC_READ_TIMEOUT_SECONDS=20  PAC_FAILOVER_COOLDOWN_SECONDS=60
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Literal

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis

from shared.config import Settings
from shared.crypto import seal, unseal
from sat.cfdi.csd import Csd

from . import finkok, sat_status, swsapien
from .failover import FailoverPac
from .transport import Timeouts

PROVIDERS = ("finkok", "swsapien")


class PacSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    pac_environment: Literal["test", "production"] = "test"
    finkok_url: str | None = None
    sw_url: str | None = None
    sat_status_url: str = sat_status.PRODUCTION_URL  # SAT has one public endpoint
    pac_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Below PAC_TIMEOUT_SECONDS (30 s), which bounds a whole stamping call (recover + stamp).
    pac_read_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    pac_failover_cooldown_seconds: int = Field(default=60, ge=1, le=3600)

    def url(self, provider: str) -> str:
        production = self.pac_environment == "production"
        if provider == "finkok":
            return self.finkok_url or (finkok.PRODUCTION_URL if production else finkok.TEST_URL)
        return self.sw_url or (swsapien.PRODUCTION_URL if production else swsapien.TEST_URL)

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(connect=self.pac_connect_timeout_seconds, read=self.pac_read_timeout_seconds)


@dataclass(frozen=True)
class PacAccount:
    """One provider account of an organization: Finkok needs username+password; SW a token or
    user+password."""
    provider: str
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def problems(self) -> list[tuple[str, str, str]]:
        """(field, code, es-MX message) for each thing wrong with the account."""
        if self.provider not in PROVIDERS:
            return [("provider", "UNKNOWN_PAC", "Proveedor de certificación no soportado (finkok o swsapien).")]
        if self.provider == "finkok" and not (self.username and self.password):
            return [("username" if not self.username else "password", "REQUIRED",
                     "Finkok requiere usuario y contraseña.")]
        if self.provider == "swsapien" and not (self.token or (self.username and self.password)):
            return [("token", "REQUIRED", "SW Sapien requiere un token, o usuario y contraseña.")]
        return []


def _context(organization_id: uuid.UUID, provider: str) -> str:
    return f"invoice.pac-account:{organization_id}:{provider}"


def seal_account(account: PacAccount, *, organization_id: uuid.UUID, settings: Settings) -> str:
    """The account as one sealed string; bound to the organization and provider (a row copied to
    another organization cannot be opened)."""
    plain = json.dumps({k: v for k, v in asdict(account).items() if v is not None}).encode()
    return seal(plain, context=_context(organization_id, account.provider), settings=settings)


def open_account(sealed: str, *, organization_id: uuid.UUID, provider: str, settings: Settings) -> PacAccount:
    data = json.loads(unseal(sealed, context=_context(organization_id, provider), settings=settings))
    return PacAccount(**data)


def build_adapter(account: PacAccount, settings: PacSettings, *, csd: Csd | None,
                  sat: sat_status.SatStatusService | None, client: httpx.AsyncClient | None = None):
    url, timeouts = settings.url(account.provider), settings.timeouts
    if account.provider == "finkok":
        return finkok.FinkokPac(finkok.FinkokAccount(account.username or "", account.password or ""), url=url,
                                csd=csd, sat=sat, client=client, timeouts=timeouts)
    return swsapien.SwSapienPac(swsapien.SwAccount(token=account.token, user=account.username,
                                                   password=account.password),
                                url=url, csd=csd, sat=sat, client=client, timeouts=timeouts)


def build_pac(accounts: list[PacAccount], settings: PacSettings, redis: Redis, *, csd: Csd | None = None,
              client: httpx.AsyncClient | None = None):
    """The organization's PAC: its accounts in order of preference behind one FailoverPac.

    `client`: one pooled httpx client shared by every adapter of the worker (connection reuse);
    the caller owns and closes it.
    """
    if not accounts:
        raise ValueError("an organization needs at least one PAC account")
    sat = sat_status.SatStatusService(settings.sat_status_url, client=client, timeouts=settings.timeouts)
    adapters = [build_adapter(a, settings, csd=csd, sat=sat, client=client) for a in accounts]
    return FailoverPac(adapters, redis, cooldown_seconds=settings.pac_failover_cooldown_seconds)
