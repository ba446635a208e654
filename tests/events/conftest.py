from __future__ import annotations

import pytest

from shared.runtime import build_runtime


@pytest.fixture(scope="session")
def settings(database_url):
    """Overrides the session settings for this folder: private Postgres database and Redis (see
    tests/events/isolation.py), so a worker started by other tests cannot race these ones."""
    from shared.config import load_settings
    from tests.events.isolation import private_backends

    with private_backends(database_url, "events") as (db_url, redis_url):
        yield load_settings(database_url=db_url, redis_url=redis_url, app_env="test")


@pytest.fixture(scope="session")
async def rt(settings):
    runtime = build_runtime("events-test", settings)
    yield runtime
    await runtime.close()
