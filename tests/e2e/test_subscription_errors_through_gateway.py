"""A subgraph's typed refusal or end of a subscription reaches the client through Hive Gateway with
the subgraph's message and extensions.code (over graphql-transport-ws and SSE), not as the masked
INTERNAL_SERVER_ERROR "Unexpected error.": TOO_MANY_SUBSCRIPTIONS past SUBSCRIPTIONS_MAX_PER_USER,
STALE_TOKEN when the member's role changes, UNAUTHENTICATED without a token."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from shared.bus import org_channel, publish_live
from shared.embedded import free_port
from shared.serving import uvicorn_command
from tests.conftest import unique_email
from tests.e2e.conftest import ROOT, sign_up_by_mail
from tests.gateway_flows import PASSWORD, join_as_member

pytestmark = pytest.mark.e2e

LIMIT = 2
# Distinct documents: the gateway shares identical subscriptions of one token upstream
# (supergraph/subscriptions.mjs), and here each must count at the subgraph.
OPEN = ["subscription A { invoiceEvents { invoiceId } }", "subscription B { invoiceEvents { status } }"]
ONE_TOO_MANY = "subscription C { invoiceEvents { invoiceId status } }"
TOO_MANY = {"message": f"Tienes demasiadas suscripciones abiertas (máximo {LIMIT}); cierra alguna.",
            "path": ["invoiceEvents"],
            "extensions": {"code": "TOO_MANY_SUBSCRIPTIONS", "scope": "user", "limit": LIMIT}}


@pytest.fixture(scope="module")
def limited_gateway(stack):
    """A gateway in front of an invoice process that admits LIMIT subscriptions per user."""
    invoice_port, gateway_port = free_port(), free_port()
    stack.start("invoice-limited", uvicorn_command("subgraphs.invoice.app:app", host="127.0.0.1", port=invoice_port),
                f"http://127.0.0.1:{invoice_port}/health/ready", env={"SUBSCRIPTIONS_MAX_PER_USER": str(LIMIT)})
    stack.start("gateway-limited", [str(ROOT / "supergraph" / "gateway.sh")], f"http://127.0.0.1:{gateway_port}/readiness",
                env={"GATEWAY_PORT": str(gateway_port), "INVOICE_URL": f"http://127.0.0.1:{invoice_port}/graphql"})
    yield f"http://127.0.0.1:{gateway_port}"
    stack.stop("gateway-limited")
    stack.stop("invoice-limited")


def _org(token: str) -> str:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["org"]


def _event(n: int) -> dict:
    return {"kind": "invoice_status", "invoiceId": f"00000000-0000-0000-0000-{n:012d}", "status": "STAMPED",
            "uuid": None, "code": None, "message": None, "at": "2026-01-01T00:00:00+00:00"}


class Socket:
    """One graphql-transport-ws connection through the gateway, several subscriptions on it."""

    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def open(cls, url: str, token: str | None) -> Socket:
        ws = await websockets.connect(url.replace("http", "ws", 1) + "/graphql", subprotocols=["graphql-transport-ws"])
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"} if token else {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        return cls(ws)

    async def subscribe(self, op_id: str, query: str) -> None:
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))

    async def recv(self, timeout: float = 15) -> dict:
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if msg["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif msg["type"] != "pong":
                return msg

    async def until_listening(self, redis: Redis, channel: str, ids: set[str]) -> None:
        """Publish warm-up events until every subscription in `ids` delivered one (the gateway and
        the subgraph subscribe upstream asynchronously), then drain the rest."""
        waiting = set(ids)
        for n in range(150):
            await publish_live(redis, channel, _event(900_000 + n))
            try:
                while waiting:
                    msg = await self.recv(timeout=0.2)
                    assert msg["type"] == "next" and "errors" not in msg["payload"], msg
                    waiting.discard(msg["id"])
            except (asyncio.TimeoutError, TimeoutError):
                continue
            break
        assert not waiting, f"never listening: {waiting}"
        try:
            while True:
                await self.recv(timeout=0.3)
        except (asyncio.TimeoutError, TimeoutError):
            pass


async def _sse(url: str, query: str, token: str | None) -> list[dict]:
    """Every event of one subscription over SSE (Hive Gateway's text/event-stream) until it ends."""
    headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {token}"} if token else {})}
    events = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(30)) as http, \
            http.stream("POST", url + "/graphql", json={"query": query}, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data:") and line[5:].strip():
                events.append(json.loads(line[5:]))
    return events


def _errors(payload: dict) -> list[dict]:
    """The errors as the subgraph sent them (the gateway adds the subgraph's name: serviceName)."""
    return [{**e, "extensions": {k: v for k, v in e.get("extensions", {}).items() if k != "serviceName"}}
            for e in payload.get("errors") or []]


async def test_one_subscription_too_many_is_refused_with_the_subgraphs_code(gateway, stack, mailbox, limited_gateway):
    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("limite"), "password": PASSWORD,
                                                      "fullName": "Pestañas", "organizationName": "Límite"}))["accessToken"]
    redis = Redis.from_url(stack.env["REDIS_URL"])
    sock = await Socket.open(limited_gateway, token)
    try:
        for n, query in enumerate(OPEN):
            await sock.subscribe(f"s{n}", query)
        await sock.until_listening(redis, org_channel(_org(token)), {"s0", "s1"})

        await sock.subscribe("extra", ONE_TOO_MANY)
        refused = await sock.recv()
        assert refused["id"] == "extra" and refused["type"] == "next", refused
        assert _errors(refused["payload"]) == [TOO_MANY], refused
        assert await sock.recv() == {"id": "extra", "type": "complete"}

        # Over SSE too, and the open ones go on.
        [sse] = await _sse(limited_gateway, ONE_TOO_MANY, token)
        assert _errors(sse) == [TOO_MANY], sse
        await publish_live(redis, org_channel(_org(token)), _event(1))
        got = {(m := await sock.recv())["id"]: m["payload"]["data"]["invoiceEvents"] for _ in OPEN}
        assert got == {"s0": {"invoiceId": _event(1)["invoiceId"]}, "s1": {"status": "STAMPED"}}

        # The client leaves: its upstream subscriptions end too (the invoice process stops
        # listening to the organization's channel), nothing left behind by the refusals.
        await sock.ws.close()
        for _ in range(300):
            if (await redis.pubsub_numsub(org_channel(_org(token))))[0][1] == 0:
                break
            await asyncio.sleep(0.05)
        assert (await redis.pubsub_numsub(org_channel(_org(token))))[0][1] == 0
    finally:
        await sock.ws.close()
        await redis.aclose()


async def test_stream_ended_by_a_role_change_arrives_as_stale_token(gateway, stack, mailbox):
    owner = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("duena"), "password": PASSWORD,
                                                      "fullName": "Dueña", "organizationName": "Tienda"}))["accessToken"]
    member, member_id = await join_as_member(gateway, mailbox, owner, "ACCOUNTANT")
    redis = Redis.from_url(stack.env["REDIS_URL"])
    sock = await Socket.open(stack.urls["gateway"], member)
    try:
        await sock.subscribe("mine", OPEN[0])
        await sock.until_listening(redis, org_channel(_org(member)), {"mine"})
        await gateway.ok("mutation($u: ID!) { changeMemberRole(userId: $u, role: MEMBER) { membership { role } } }",
                         {"u": member_id}, token=owner)
        ended = await sock.recv()
        assert ended["id"] == "mine" and ended["type"] == "next", ended
        assert _errors(ended["payload"]) == [{
            "message": "Tus permisos cambiaron; renueva tu sesión y vuelve a suscribirte.", "path": ["invoiceEvents"],
            "extensions": {"code": "STALE_TOKEN", "reason": "ROLE_CHANGED"}}], ended
        assert await sock.recv() == {"id": "mine", "type": "complete"}
    finally:
        await sock.ws.close()
        await redis.aclose()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_anonymous_subscription_is_refused_as_unauthenticated(stack, transport):
    if transport == "ws":
        sock = await Socket.open(stack.urls["gateway"], None)
        try:
            await sock.subscribe("1", OPEN[0])
            refused = await sock.recv()
            assert refused["type"] == "next", refused
            payload = refused["payload"]
        finally:
            await sock.ws.close()
    else:
        [payload] = await _sse(stack.urls["gateway"], OPEN[0], None)
    [error] = _errors(payload)
    assert error["extensions"]["code"] == "UNAUTHENTICATED" and error["message"] == "Se requiere iniciar sesión.", payload
