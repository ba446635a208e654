"""Fault injection: the stack's own processes on loopback, on backends this suite may break.

Each test that stops or kills Redis gets its own embedded Redis on a fixed port (restartable in
place); the database is a private migrated one, so the worker's crons and consumers never act on
other tests' rows. Postgres faults use a private embedded server (see `pg_server`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from shared import embedded
from tests.stack import Mailbox, Stack


class RedisServer:
    """An embedded Redis that can be stopped, killed and started again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir, self.port = workdir, port or embedded.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        # Persistent (AOF), as make dev and production run it: a restart keeps queue and stream.
        self.proc, _ = embedded.start_redis(port=self.port, workdir=self.workdir, persistent=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def faults_database_url(database_url):
    from tests.conftest import admin_database_url

    with embedded.migrated_database(admin_database_url(), f"facturacion_faults_{os.getpid()}") as url:
        yield url


@pytest.fixture
def stack_env(faults_database_url, redis_server):
    return {**os.environ, "DATABASE_URL": faults_database_url, "REDIS_URL": redis_server.url, "APP_ENV": "test",
            "LOGIN_MAX_FAILURES_PER_IP": "1000"}


@pytest.fixture
def fault_stack(stack_env, tmp_path):
    st = Stack(stack_env, tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    yield st
    st.stop_all()


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.stop()


def wait_until(predicate, what: str, timeout: float = 30, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail saying `what` never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


SUBGRAPHS = ("auth", "invoice", "notification")


@pytest.fixture
def full_stack(fault_stack, redis_server, mailbox):
    """Redis, every subgraph, the worker and the gateway, mail to `mailbox`; all breakable."""
    from shared.embedded import free_port

    redis_server.start()
    ports = {s: free_port() for s in SUBGRAPHS}
    gateway_port = free_port()
    fault_stack.env.update({
        "AUTH_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
        "INVOICE_SERVICE_URL": f"http://127.0.0.1:{ports['invoice']}", "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_HOST": "127.0.0.1", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port),
        **{f"{s.upper()}_URL": f"http://127.0.0.1:{p}/graphql" for s, p in ports.items()}})
    fault_stack.ports = ports
    fault_stack.start_all(ports, gateway_port)
    return fault_stack


@pytest.fixture
async def gateway(full_stack):
    import httpx

    from tests.graphql_client import GraphQLClient

    async with httpx.AsyncClient(base_url=full_stack.urls["gateway"], timeout=30) as http:
        yield GraphQLClient(http)


# --- what the database and the sandbox PAC hold, for the "nothing lost, nothing twice" checks ----

async def stamping_record(database_url: str, redis_url: str, invoice_ids: list[str]) -> dict:
    """Per invoice: status, UUID, how many times it entered STAMPED and how many InvoiceStamped
    events it emitted; plus every UUID the sandbox PAC ever issued (one record per timbre)."""
    import asyncpg
    from redis.asyncio import Redis

    from shared.config import to_plain_url

    conn = await asyncpg.connect(to_plain_url(database_url))
    try:
        rows = await conn.fetch(
            """SELECT i.id::text AS id, i.status, i.uuid,
                      (SELECT count(*) FROM invoice.invoice_events e WHERE e.invoice_id = i.id AND e.to_status = 'STAMPED') AS stamped,
                      (SELECT count(*) FROM invoice.outbox o WHERE o.aggregate_id = 'invoice:' || i.id::text AND o.type = 'invoice.stamped') AS events,
                      (SELECT count(*) FROM invoice.outbox o WHERE o.aggregate_id = 'invoice:' || i.id::text AND o.delivered_at IS NULL) AS undelivered
               FROM invoice.invoices i WHERE i.id = ANY($1::uuid[])""", invoice_ids)
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        pac_uuids = sorted([k.decode().rsplit(":", 1)[1] async for k in redis.scan_iter("pac:sandbox:cfdi:*")])
    finally:
        await redis.aclose()
    return {"invoices": {r["id"]: dict(r) for r in rows}, "pac_uuids": pac_uuids}


def assert_each_stamped_once(record: dict, invoice_ids: list[str]) -> None:
    invoices = record["invoices"]
    assert sorted(invoices) == sorted(invoice_ids)
    for inv in invoices.values():
        assert (inv["status"], inv["stamped"], inv["events"], inv["undelivered"]) == ("STAMPED", 1, 1, 0), inv
    # One PAC record per stamp request, and it is the one we recorded: no second timbre anywhere.
    assert sorted(inv["uuid"] for inv in invoices.values()) == record["pac_uuids"]
