"""Settings of the invoice service and the stamping worker, validated at start-up.

`PAC_PROVIDER` names the PAC adapter (`sat.pac.PROVIDERS`); an unknown name stops
the service and the worker before they accept work, instead of leaving invoices in STAMPING.
Provider adapters add their own settings here (credentials, URLs), each prefixed by the provider.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import SettingsError


class InvoiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    pac_provider: str = Field(default="sandbox", description="PAC adapter: one of sat.pac.PROVIDERS")
    pac_timeout_seconds: float = Field(default=30.0, gt=0, le=300, description="Longest wait for one PAC answer")

    @field_validator("pac_provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        from sat.pac import PROVIDERS

        v = v.strip().lower()
        if v not in PROVIDERS:
            raise ValueError(f"PAC desconocido {v!r}; opciones: {', '.join(sorted(PROVIDERS))}")
        return v


def load_invoice_settings(**overrides) -> InvoiceSettings:
    """Settings from the environment, or SettingsError (exits) with one readable message."""
    try:
        return InvoiceSettings(**overrides)
    except ValidationError as exc:
        lines = ["Configuración de facturación inválida / invalid invoice configuration:"]
        lines += [f"  - {'.'.join(str(p) for p in e['loc']).upper()}: {e['msg'].replace('Value error, ', '')}"
                  for e in exc.errors()]
        raise SettingsError("\n".join(lines)) from None


@lru_cache
def get_invoice_settings() -> InvoiceSettings:
    return load_invoice_settings()
