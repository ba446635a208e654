"""Every subgraph's real ASGI app in-process, verifying real tokens from the in-process auth app."""

from __future__ import annotations

import importlib
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from shared import embedded
from shared.config import load_settings
from shared.runtime import build_runtime
from shared.tokens import TokenVerifier
from tests.auth.conftest import (  # noqa: F401 - fixtures re-exported for this package
    auth_app, auth_http, auth_settings, gql, ip, sign_up,
)
from tests.conftest import running_app

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent.name for p in (ROOT / "subgraphs").glob("*/schema.py"))


@pytest.fixture(scope="session")
def settings(database_url):
    """The run's database, but a Redis of its own: the sweep trips throttles (e.g. failed API-key
    exchanges), and their locks must not leak into other tests."""
    proc, redis_url = embedded.start_redis(workdir=Path(tempfile.mkdtemp(prefix="redis-security-")))
    try:
        yield load_settings(database_url=database_url, redis_url=redis_url, app_env="test")
    finally:
        proc.terminate()
        proc.wait(5)


def jwks_runtime_factory(auth_http):
    """Runtimes verifying tokens with the in-process auth app's JWKS (HTTP in production)."""

    def factory(name, cfg):
        async def jwks() -> dict:
            return (await auth_http.get("/.well-known/jwks.json")).json()

        return build_runtime(name, cfg, verifier=TokenVerifier(jwks, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience,
                                                               min_refresh_interval=0.5))

    return factory


def make_app(service: str, settings, auth_http):
    create_app = importlib.import_module(f"subgraphs.{service}.app").create_app
    return create_app(settings, runtime_factory=jwks_runtime_factory(auth_http))


@pytest.fixture(scope="session")
async def service_apps(settings, auth_app, auth_http):
    """name -> (app, in-process HTTP client) for every subgraph."""
    async with AsyncExitStack() as stack:
        apps = {"auth": (auth_app, auth_http)}
        for name in SERVICES:
            if name != "auth":
                app = make_app(name, settings, auth_http)
                apps[name] = (app, await stack.enter_async_context(running_app(app)))
        yield apps
