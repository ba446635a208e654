"""`notificationReceived` over a real WebSocket (graphql-transport-ws) against the app served by
uvicorn: the consumer's commit pushes the new notification to the subscribed user only."""

from __future__ import annotations

import asyncio
import json
import uuid

from websockets.asyncio.client import connect

from shared.bus import user_channel
from shared.db import transaction
from shared.outbox import emit
from subgraphs.notification.models import outbox as notification_outbox
from tests.events.helpers import invoice_stamped
from tests.notification.conftest import claims, serve_app
from workers.notifications import consume_once
from workers.relay import relay_once



def fresh_app(settings, runtime_factory):
    # Its own app instance: the session-wide in-process app keeps its own lifespan and runtime.
    from subgraphs.notification.app import create_app

    return create_app(settings, runtime_factory=runtime_factory)


SUBSCRIPTION = "subscription { notificationReceived { id type title read data } }"


async def _recv(ws, timeout=5.0) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] not in ("ping", "pong"):
            return msg


async def _subscribers(rt, channel: str) -> int:
    return (await rt.redis.pubsub_numsub(channel))[0][1]


async def test_notification_received_arrives_over_websocket(rt, settings, notification_runtime_factory, auth_http, sign_up):
    acct, other = await sign_up(), await sign_up()
    user, org = claims(acct.token)
    async with serve_app(fresh_app(settings, notification_runtime_factory)) as host:
        async with connect(f"ws://{host}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {acct.token}"}}))
            assert (await _recv(ws))["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
            for _ in range(300):  # subscribed in Redis before the event is produced
                if await _subscribers(rt, user_channel(user)):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("subscription never reached Redis")

            # Someone else's notification first: it must not reach this socket.
            ou, oo = claims(other.token)
            payloads = [(invoice_stamped(created_by=ou, customer_email=None), oo),
                        (invoice_stamped(created_by=user, customer_email=None), org)]
            async with transaction(rt.sessionmaker) as s:
                for p, o in payloads:
                    await emit(s, notification_outbox, p, organization_id=o, actor_id=p.created_by,
                               aggregate_id=str(p.invoice_id))
            await relay_once(rt)
            await consume_once(rt)

            msg = await _recv(ws)
            assert msg["type"] == "next" and msg["id"] == "1", msg
            n = msg["payload"]["data"]["notificationReceived"]
            assert n["type"] == "invoice.stamped" and n["title"] == "Factura A-123 timbrada" and n["read"] is False
            assert n["data"]["invoiceId"] == str(payloads[1][0].invoice_id)
            uuid.UUID(n["id"])
            await ws.send(json.dumps({"id": "1", "type": "complete"}))


async def test_subscription_without_a_token_is_refused(settings, notification_runtime_factory, auth_http):
    async with serve_app(fresh_app(settings, notification_runtime_factory)) as host:
        async with connect(f"ws://{host}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert (await _recv(ws))["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
            msg = await _recv(ws)
            assert msg["type"] == "error" or (msg["type"] == "next" and msg["payload"].get("errors")), msg
            errors = msg["payload"] if msg["type"] == "error" else msg["payload"]["errors"]
            assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
