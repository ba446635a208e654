"""The stack as real processes on loopback: subgraphs under uvicorn, the arq worker, the gateway.

Session-scoped: started once for all end-to-end tests, on free ports, against the test database
and Redis, and stopped (whole process groups) at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.embedded import free_port
from shared.registry import subgraphs

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_SECRET = "e2e-gateway-secret"


class Stack:
    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}

    def start(self, name: str, cmd: list[str], health: str | None, env: dict | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if health:
            self.wait(name, health)

    def wait(self, name: str, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.log(name)}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not healthy at {url}:\n{self.log(name)}")

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


SERVICES = [s for s in os.environ.get("E2E_SERVICES", ",".join(s.name for s in subgraphs())).split(",")
            if (ROOT / "subgraphs" / s / "app.py").exists()]


class Mailbox:
    """A real SMTP listener (aiosmtpd) that keeps every message it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.port = free_port()
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                import email
                from email import policy

                msg = email.message_from_bytes(envelope.original_content, policy=policy.default)
                mailbox.messages.append((envelope.rcpt_tos, msg))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list:
        return [m for rcpts, m in self.messages if address in rcpts]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 30):
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.to(address)) >= count:
                return self.to(address)
            await asyncio.sleep(0.1)
        raise AssertionError(f"no mail for {address} after {timeout}s; got {[r for r, _ in self.messages]}")

    def stop(self):
        self.controller.stop()


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
def e2e_redis_url(redis_url):
    """Likewise its own Redis database (stream, consumer groups, arq queue)."""
    if os.environ.get("REDIS_URL"):
        base, _, db = redis_url.rpartition("/")
        yield f"{base}/{(int(db or 0) + 1) % 16}" if db.isdigit() else redis_url + "/1"
        return
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
           "LOGIN_MAX_FAILURES_PER_IP": "1000", "MAIL_REQUESTS_MAX_PER_CLIENT": "60", "AUTHZ_CACHE_SECONDS": "0", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port)}
    for s, p in ports.items():
        env[f"{s.upper()}_URL"] = f"http://127.0.0.1:{p}/graphql"
    st = Stack(env, tmp_path_factory.mktemp("stack-logs"))
    try:
        for s, p in ports.items():
            st.start(s, [sys.executable, "-m", "uvicorn", f"subgraphs.{s}.app:app", "--host", "127.0.0.1",
                         "--port", str(p), "--no-access-log", "--no-proxy-headers"], f"http://127.0.0.1:{p}/health/ready")
            st.urls[s] = f"http://127.0.0.1:{p}"
        st.start("worker", [sys.executable, "-m", "arq", "workers.main.WorkerSettings"], None)
        st.start("gateway", [str(ROOT / "supergraph" / "gateway.sh")], f"http://127.0.0.1:{gateway_port}/readiness")
        st.urls["gateway"] = f"http://127.0.0.1:{gateway_port}"
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


async def sign_up_by_mail(gateway, mailbox, account: dict) -> dict:
    """An account the way a person gets one through the gateway: signUp, the mailed link (received
    by the SMTP listener), completeSignUp. Returns the tokens."""
    import re

    earlier = len(mailbox.to(account["email"]))  # e.g. an invitation that came first
    await gateway.ok("mutation($i: SignUpInput!) { signUp(input: $i) { success } }", {"i": account})
    message = (await mailbox.wait_for(account["email"], count=earlier + 1))[-1]
    token = re.search(r"completar-registro\?token=([\w-]+)", message.get_body(preferencelist=("plain",)).get_content()).group(1)
    done = await gateway.ok("""mutation($t: String!) { completeSignUp(token: $t) {
        tokens { accessToken refreshToken organizationId } userErrors { code } } }""", {"t": token})
    assert done["completeSignUp"]["userErrors"] == [], done
    return done["completeSignUp"]["tokens"]
