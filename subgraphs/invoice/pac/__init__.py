"""PAC access: an async interface (base.py) and the embedded sandbox (sandbox.py), the default.

`PAC_PROVIDER` picks the implementation; only `sandbox` exists today.
"""

from __future__ import annotations

import os

from redis.asyncio import Redis

from .base import CancelResult, Pac, PacError, StampResult

__all__ = ["CancelResult", "Pac", "PacError", "StampResult", "get_pac"]


def get_pac(redis: Redis) -> Pac:
    provider = os.environ.get("PAC_PROVIDER", "sandbox")
    if provider == "sandbox":
        from .sandbox import SandboxPac

        return SandboxPac(redis)
    raise RuntimeError(f"PAC_PROVIDER desconocido: {provider}")
