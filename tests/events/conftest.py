from __future__ import annotations

import pytest

from shared.runtime import build_runtime
from tests.events.isolation import private_settings


settings = private_settings("events")  # see tests/events/isolation.py


@pytest.fixture(scope="session")
async def rt(settings):
    runtime = build_runtime("events-test", settings)
    yield runtime
    await runtime.close()
