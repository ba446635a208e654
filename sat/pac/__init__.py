"""PAC access: an async interface (base.py) and one adapter per provider, picked by
`PAC_PROVIDER` (subgraphs/invoice/settings.py). The embedded sandbox (sandbox.py) is the default.

To add a provider: write its adapter beside sandbox.py (its constructor takes the Redis client
and the InvoiceSettings), put its settings in InvoiceSettings, and register a factory in PROVIDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from .base import CancelResult, Pac, PacError, StampResult

if TYPE_CHECKING:
    from subgraphs.invoice.settings import InvoiceSettings

__all__ = ["PROVIDERS", "CancelResult", "Pac", "PacError", "StampResult", "get_pac"]


def _sandbox(redis: Redis, settings: "InvoiceSettings") -> Pac:
    from .sandbox import SandboxPac

    return SandboxPac(redis)


# Provider name (PAC_PROVIDER) -> factory. Imports stay inside factories: an adapter's
# dependencies load only where it is used.
PROVIDERS: dict[str, Callable[[Redis, "InvoiceSettings"], Pac]] = {
    "sandbox": _sandbox,
}


def get_pac(redis: Redis, settings: "InvoiceSettings | None" = None) -> Pac:
    from subgraphs.invoice.settings import get_invoice_settings

    settings = settings or get_invoice_settings()
    return PROVIDERS[settings.pac_provider](redis, settings)
