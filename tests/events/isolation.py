"""A database and a Redis of their own for the event-backbone and notification tests.

The end-to-end tests start a real worker (relay loop, notification consumer, mail jobs) on the
session's shared database and Redis, and it keeps running for the rest of the run. Tests that
assert who relays or consumes what, and when, must not race it: they get private servers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared import embedded


@contextmanager
def private_backends(database_url: str, tag: str) -> Iterator[tuple[str, str]]:
    from shared.migrations import ROOT, SERVICES, upgrade

    name = f"facturacion_{tag}_{os.getpid()}"
    url = embedded.create_database(database_url, name)
    for service in SERVICES:
        if (ROOT / "subgraphs" / service / "migrations").is_dir():
            upgrade(service, url)
    workdir = Path(tempfile.mkdtemp(prefix=f"redis-{tag}-"))
    proc, redis_url = embedded.start_redis(workdir=workdir)
    try:
        yield url, redis_url
    finally:
        proc.terminate()
        proc.wait(5)
        embedded.drop_database(database_url, name)
