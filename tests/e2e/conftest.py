"""The stack as real processes on loopback: subgraphs under uvicorn, the arq worker, the gateway.

Session-scoped: started once for all end-to-end tests, on free ports, against the test database
and Redis, and stopped (whole process groups) at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import httpx
import pytest

from shared.embedded import free_port
from shared.registry import subgraphs
from tests.gateway_flows import sign_up_by_mail  # noqa: F401 - e2e tests import it from here
from tests.stack import ROOT, Mailbox, Stack

GATEWAY_SECRET = "e2e-gateway-secret"
NODE = shutil.which("node")
APOLLO_SCRIPT = ROOT / "tests" / "e2e" / "clients" / "apollo_client.mjs"
needs_apollo = pytest.mark.skipif(NODE is None or not (ROOT / "supergraph" / "node_modules" / "@apollo" / "client").is_dir(),
                                  reason="node or @apollo/client missing (make install)")


async def apollo(mode: str, *args: str, env: dict | None = None) -> dict:
    """Run tests/e2e/clients/apollo_client.mjs (@apollo/client) in one mode; its last output line
    is what the client saw."""
    proc = await asyncio.create_subprocess_exec(NODE, str(APOLLO_SCRIPT), mode, *args, env={**os.environ, **(env or {})},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


SERVICES = [s for s in os.environ.get("E2E_SERVICES", ",".join(s.name for s in subgraphs())).split(",")
            if (ROOT / "subgraphs" / s / "app.py").exists()]


@pytest.fixture(scope="session")
def mailbox():
    box = Mailbox()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def e2e_database_url(database_url):
    """The stack's worker runs crons and consumers for the whole session: it gets its own database
    so it never acts on rows of the in-process tests (and they never race it)."""
    from shared import embedded
    from tests.conftest import admin_database_url

    with embedded.migrated_database(admin_database_url(), f"facturacion_e2e_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
def e2e_redis_url():
    """The stack's own Redis server, fresh for the session, even when REDIS_URL names one: a Redis
    kept from an earlier run still holds its per-client mail throttles (a 15-minute window), its
    stream and its arq queue, and two runs within the window sent more sign-up mail from 127.0.0.1
    than the stack allows, so mail stopped arriving halfway through the second run."""
    from shared import embedded

    proc, url = embedded.start_redis()
    yield url
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="session")
def stack(e2e_database_url, e2e_redis_url, tmp_path_factory, mailbox):
    database_url, redis_url = e2e_database_url, e2e_redis_url
    ports = {s: free_port() for s in SERVICES}
    gateway_port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "APP_ENV": "test",
           "AUTH_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
           "INVOICE_SERVICE_URL": f"http://127.0.0.1:{ports.get('invoice', 0)}",
           "GATEWAY_PORT": str(gateway_port), "GATEWAY_HOST": "127.0.0.1",
           "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}", "GATEWAY_SHARED_SECRET": GATEWAY_SECRET,
           "LOGIN_MAX_FAILURES_PER_IP": "1000", "RATE_LIMIT_DISABLED": "true", "MAIL_REQUESTS_MAX_PER_CLIENT": "60", "AUTHZ_CACHE_SECONDS": "0", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port)}
    for s, p in ports.items():
        env[f"{s.upper()}_URL"] = f"http://127.0.0.1:{p}/graphql"
    st = Stack(env, tmp_path_factory.mktemp("stack-logs"))
    try:
        st.start_all(ports, gateway_port)
        yield st
    finally:
        st.stop_all()


@pytest.fixture
async def gateway(stack):
    from tests.graphql_client import GraphQLClient

    async with httpx.AsyncClient(base_url=stack.urls["gateway"], timeout=30) as http:
        yield GraphQLClient(http)


class Subscription:
    """A graphql-transport-ws subscription over a real WebSocket."""

    def __init__(self, ws):
        self.ws = ws

    async def next(self, timeout: float = 30) -> dict:
        import asyncio
        import json

        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if msg["type"] == "next":
                return msg["payload"]
            if msg["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            if msg["type"] in ("error", "complete"):
                raise AssertionError(f"subscription ended: {msg}")


async def subscribe(url: str, query: str, variables: dict | None, token: str):
    """Open a WebSocket, authenticate in connection_init, start one subscription."""
    import json

    import websockets

    ws = await websockets.connect(url.replace("http", "ws", 1) + "/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    ack = json.loads(await ws.recv())
    assert ack["type"] == "connection_ack", ack
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}))
    return ws, Subscription(ws)
