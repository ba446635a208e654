"""A database and a Redis of their own for the event-backbone and notification tests.

These tests assert exactly which rows a relay pass or a consumer pass handles, so they must not
share an outbox or a stream with any other test module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from shared import embedded


def private_settings(tag: str):
    """A session `settings` fixture overriding the suite's, on private backends."""

    @pytest.fixture(scope="session")
    def settings(database_url):
        from shared.config import load_settings
        from tests.conftest import admin_database_url

        proc, redis_url = embedded.start_redis(workdir=Path(tempfile.mkdtemp(prefix=f"redis-{tag}-")))
        try:
            with embedded.migrated_database(admin_database_url(), f"facturacion_{tag}_{os.getpid()}") as url:
                yield load_settings(database_url=url, redis_url=redis_url, app_env="test")
        finally:
            proc.terminate()
            proc.wait(5)

    return settings
