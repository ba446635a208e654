"""arq worker: every background job of the platform, one module per concern.

Run with `arq workers.main.WorkerSettings`. Each concern module exposes `FUNCTIONS` (job
functions), optionally `CRON_JOBS`, `STARTUP` and `SHUTDOWN` hooks taking the arq ctx.
"""

from __future__ import annotations

import os

from arq.connections import RedisSettings

from shared.config import get_settings
from shared.logs import configure_logging
from shared.runtime import build_runtime
from workers import expense, notifications, relay, stamping

# Concern modules; each owns its jobs. One worker process runs them all.
MODULES = (relay, stamping, notifications, expense)


async def startup(ctx) -> None:
    settings = get_settings()
    configure_logging("worker", settings.log_level)
    ctx["runtime"] = build_runtime("worker", settings)
    for mod in MODULES:
        for hook in getattr(mod, "STARTUP", []):
            await hook(ctx)


async def shutdown(ctx) -> None:
    for mod in MODULES:
        for hook in getattr(mod, "SHUTDOWN", []):
            await hook(ctx)
    await ctx["runtime"].close()


class WorkerSettings:
    functions = [f for m in MODULES for f in getattr(m, "FUNCTIONS", [])]
    cron_jobs = [c for m in MODULES for c in getattr(m, "CRON_JOBS", [])]
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 20
    job_timeout = 120
    health_check_interval = 10
    # Read at import (arq needs it before startup); REDIS_URL is validated again by get_settings().
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
