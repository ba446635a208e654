"""Subscriptions over a real WebSocket: the invoice app served by uvicorn on a free port."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import uvicorn
import websockets

from tests.invoice.conftest import make_invoice_app
from workers.stamping import stamp_invoice_job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def served_invoice_url(served_invoice):
    return served_invoice[1]


@pytest.fixture
async def served_invoice(settings, auth_http):
    """(app, WebSocket URL) of the invoice app served by uvicorn."""
    app = make_invoice_app(settings, auth_http)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning",
                                           ws="websockets-sansio"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    assert server.started
    yield app, f"ws://127.0.0.1:{port}/graphql"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def _connect(url: str, token: str | None):
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"} if token else {}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ack["type"] == "connection_ack", ack
    return ws


async def _next(ws, timeout: float = 10) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] != "ping":
            return msg


async def test_status_changes_arrive_over_websocket(served_invoice_url, org, new_org, job_ctx):
    inv = await org.create_invoice()
    ws = await _connect(served_invoice_url, org.token)
    other = await new_org(with_csd=False)
    ws_other = await _connect(served_invoice_url, other.token)
    try:
        await ws.send(json.dumps({"id": "one", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { invoiceStatusChanged(id: $id) { invoiceId status uuid } }",
            "variables": {"id": inv["id"]}}}))
        await ws.send(json.dumps({"id": "all", "type": "subscribe", "payload": {
            "query": "subscription { invoiceEvents { invoiceId status } }"}}))
        await ws_other.send(json.dumps({"id": "spy", "type": "subscribe", "payload": {
            "query": "subscription { invoiceEvents { invoiceId status } }"}}))
        await asyncio.sleep(0.5)  # let the servers subscribe to Redis before anything is published
        await org.stamp(inv["id"])
        await stamp_invoice_job(job_ctx, inv["id"])
        got: dict[str, list[str]] = {"one": [], "all": []}
        while len(got["one"]) < 2 or len(got["all"]) < 2:
            msg = await _next(ws)
            assert msg["type"] == "next", msg
            data = msg["payload"]["data"]
            event = data.get("invoiceStatusChanged") or data.get("invoiceEvents")
            assert event["invoiceId"] == inv["id"]
            got[msg["id"]].append(event["status"])
        assert got["one"] == ["STAMPING", "STAMPED"]
        assert got["all"] == ["STAMPING", "STAMPED"]
        with pytest.raises(asyncio.TimeoutError):  # another organization hears nothing
            await _next(ws_other, timeout=0.7)
    finally:
        await ws.close()
        await ws_other.close()


async def test_subscription_requires_a_token(served_invoice_url):
    ws = await _connect(served_invoice_url, None)
    try:
        await ws.send(json.dumps({"id": "x", "type": "subscribe", "payload": {
            "query": "subscription { invoiceEvents { invoiceId status } }"}}))
        msg = await _next(ws)
        errors = msg["payload"] if msg["type"] == "error" else msg["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        await ws.close()


def _claims(token: str) -> dict:
    import base64

    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def test_fan_out_executes_each_selection_once_per_message(served_invoice, new_org, monkeypatch):
    """Nine subscribers over three connections, two distinct selections: every subscriber receives
    every event, GraphQL runs 2 selections x 3 messages = 6 times (not 27) and serializes each once;
    another organization's subscriber, same selection, receives nothing."""
    from shared import live_graphql
    from shared.bus import org_channel, publish_live

    app, url = served_invoice
    executed: list[tuple] = []
    serialized: list[int] = []
    original_execute, original_text = live_graphql.SharedEventExecutor._execute_once, live_graphql.SharedData.json_text

    def counting_execute(self, event, serially):
        executed.append(self._selection)
        return original_execute(self, event, serially)

    def counting_text(self):
        if not hasattr(self, "_text"):
            serialized.append(1)
        return original_text.fget(self)

    monkeypatch.setattr(live_graphql.SharedEventExecutor, "_execute_once", counting_execute)
    monkeypatch.setattr(live_graphql.SharedData, "json_text", property(counting_text))

    org, other = await new_org(with_csd=False), await new_org(with_csd=False)
    org_id = _claims(org.token)["org"]
    short = "subscription { invoiceEvents { invoiceId status } }"
    full = "subscription Full { invoiceEvents { invoiceId status uuid code message at } }"
    conns = [await _connect(url, org.token) for _ in range(3)]
    spy = await _connect(url, other.token)
    wanted: dict[tuple[int, str], str] = {}
    try:
        for c, ws in enumerate(conns):
            for n, query in enumerate([short, short, full]):
                await ws.send(json.dumps({"id": f"s{n}", "type": "subscribe", "payload": {"query": query}}))
                wanted[(c, f"s{n}")] = query
        await spy.send(json.dumps({"id": "spy", "type": "subscribe", "payload": {"query": short}}))
        live = app.state.runtime.live
        for _ in range(400):  # until the server's hub delivers to all nine (bounded; no timing asserted)
            if live.listening(org_channel(org_id)) == 9:
                break
            await asyncio.sleep(0.025)
        assert live.listening(org_channel(org_id)) == 9

        events = [{"kind": "invoice_status", "invoiceId": f"00000000-0000-0000-0000-00000000000{i}",
                   "status": "STAMPED", "uuid": f"UUID-{i}", "code": None, "message": None,
                   "at": "2026-01-01T00:00:00+00:00"} for i in range(3)]
        for ev in events:
            await publish_live(app.state.runtime.redis, org_channel(org_id), ev)

        for c, ws in enumerate(conns):
            got: dict[str, list[dict]] = {"s0": [], "s1": [], "s2": []}
            while any(len(v) < 3 for v in got.values()):
                msg = await _next(ws)
                assert msg["type"] == "next", msg
                got[msg["id"]].append(msg["payload"]["data"]["invoiceEvents"])
            for sid in ("s0", "s1"):
                assert got[sid] == [{"invoiceId": e["invoiceId"], "status": "STAMPED"} for e in events]
            assert [g["uuid"] for g in got["s2"]] == ["UUID-0", "UUID-1", "UUID-2"]
            assert got["s2"][0]["at"] == "2026-01-01T00:00:00+00:00"

        assert len(executed) == 6, executed
        assert len({s for s in executed}) == 2
        assert len(serialized) == 6
        with pytest.raises(asyncio.TimeoutError):  # another organization hears nothing
            await _next(spy, timeout=0.5)
    finally:
        for ws in [*conns, spy]:
            await ws.close()
