"""`/health/live` (the process answers) and `/health/ready` (its database and Redis answer)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from starlette.responses import JSONResponse
from starlette.routing import Route


def health_routes(runtime_getter) -> list[Route]:
    async def live(request):
        return JSONResponse({"status": "ok"})

    async def ready(request):
        rt = runtime_getter()
        checks: dict[str, str] = {}

        async def db():
            async with rt.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        for name, probe in (("database", db), ("redis", rt.redis.ping)):
            try:
                await asyncio.wait_for(probe(), timeout=2)
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - report any failure, never raise from a probe
                checks[name] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    return [Route("/health/live", live), Route("/health/ready", ready)]
