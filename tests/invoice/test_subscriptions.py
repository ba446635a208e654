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
async def served_invoice_url(settings, auth_http):
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
    yield f"ws://127.0.0.1:{port}/graphql"
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
