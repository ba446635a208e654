"""Test infrastructure: a real PostgreSQL database and a real Redis for the whole run.

With `DATABASE_URL` / `REDIS_URL` set (CI on this machine) the run creates its own database on
that server and drops it at the end; without them it starts the embedded servers that `make dev`
uses. Tests isolate themselves with fresh data (new users and organizations per test).
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager

import httpx
import pytest

from shared import embedded
from shared.config import load_settings


def admin_database_url() -> str:
    return os.environ.get("DATABASE_URL") or embedded.ensure_postgres("pg-test")


@pytest.fixture(scope="session")
def database_url():
    with embedded.migrated_database(admin_database_url(), f"facturacion_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    proc, url = embedded.start_redis()
    yield url
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="session")
def settings(database_url, redis_url):
    return load_settings(database_url=database_url, redis_url=redis_url, app_env="test")


@pytest.fixture(scope="session", autouse=True)
def _test_env(database_url, redis_url):
    # Processes started by end-to-end tests and `get_settings()` read the same values.
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "APP_ENV": "test"})


@asynccontextmanager
async def running_app(app):
    """Run an ASGI app's lifespan and give an HTTP client bound to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def in_process_jwks_runtime_factory(auth_http):
    """A runtime factory whose token verifier reads the JWKS of the in-process auth app."""
    from shared.runtime import build_runtime
    from shared.tokens import TokenVerifier

    def runtime_factory(name, cfg):
        async def jwks() -> dict:
            return (await auth_http.get("/.well-known/jwks.json")).json()

        return build_runtime(name, cfg, verifier=TokenVerifier(jwks, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience,
                                                               min_refresh_interval=0.5))

    return runtime_factory


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.mx"
