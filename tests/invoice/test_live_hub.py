"""Subscriptions through the process's one pub/sub connection (shared/pubsub.py), over real
WebSockets against the invoice app served by uvicorn: bounded per user and organization, ended
when their token expires or their authority changes, alive across a Redis restart."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import pytest
import websockets
from redis.asyncio import Redis

from shared import embedded
from shared.bus import AUTHORITY_CHANNEL, org_channel
from shared.events import ApiKeyRevoked, MemberRemoved, MemberRoleChanged, make_event
from tests.events.helpers import until
from tests.invoice.conftest import make_invoice_app
from tests.notification.conftest import serve_app

EVENTS = "subscription { invoiceEvents { invoiceId status } }"


@pytest.fixture
def auth_runtime(auth_app, auth_http):
    return auth_app.state.runtime


@asynccontextmanager
async def served(settings, auth_http, **changes):
    app = make_invoice_app(settings.model_copy(update=changes), auth_http)
    async with serve_app(app) as host:
        yield f"ws://{host}/graphql", app.state.runtime


async def mint(auth_runtime, user: uuid.UUID, org: uuid.UUID, *, ttl: int = 300, api_key: uuid.UUID | None = None) -> str:
    """A genuine access token signed by the auth service's key (ttl and claims chosen by the test)."""
    from subgraphs.auth import keys

    claims = {"sub": str(user), "org": str(org), "perms": ["invoice:read"]}
    if api_key:
        claims["akid"] = str(api_key)
    async with auth_runtime.sessionmaker() as session, session.begin():
        return await keys.sign(session, auth_runtime.settings, claims, ttl=ttl,
                               audience=auth_runtime.settings.jwt_audience)


async def connect(url: str, token: str):
    ws = await websockets.connect(url, subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    return ws


async def subscribe(ws, op_id: str, query: str = EVENTS) -> None:
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))


async def recv(ws, timeout: float = 10) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] not in ("ping", "pong"):
            return msg


def error_of(msg: dict) -> dict:
    errors = msg["payload"] if msg["type"] == "error" else msg["payload"].get("errors")
    assert errors, msg
    return errors[0]


async def publish_status(redis: Redis, org: uuid.UUID, invoice_id: str | None = None) -> str:
    invoice_id = invoice_id or str(uuid.uuid4())
    await redis.publish(org_channel(org), json.dumps({
        "kind": "invoice_status", "invoiceId": invoice_id, "status": "STAMPED", "uuid": None, "code": None,
        "message": None, "at": datetime.now(timezone.utc).isoformat()}))
    return invoice_id


async def publish_authority(redis: Redis, payload, org: uuid.UUID) -> None:
    ev = make_event(payload, organization_id=org, actor_id=None)
    await redis.publish(AUTHORITY_CHANNEL, json.dumps(ev.model_dump(mode="json")))


async def test_one_redis_connection_fans_out_to_every_subscription(settings, auth_http, auth_runtime):
    org = uuid.uuid4()
    async with served(settings, auth_http) as (url, rt):
        sockets = [await connect(url, await mint(auth_runtime, uuid.uuid4(), org)) for _ in range(3)]
        try:
            for i, ws in enumerate(sockets):
                for j in range(5):
                    await subscribe(ws, f"s{i}-{j}")
            await until(lambda: rt.live.listening(org_channel(org)) == 15, "15 local subscribers")
            # One Redis subscriber for the organization's channel, not fifteen.
            assert (await rt.redis.pubsub_numsub(org_channel(org)))[0][1] == 1
            invoice_id = await publish_status(rt.redis, org)
            for ws in sockets:
                got = {(m := await recv(ws))["id"]: m["payload"]["data"]["invoiceEvents"]["invoiceId"] for _ in range(5)}
                assert sorted(got.values()) == [invoice_id] * 5
        finally:
            for ws in sockets:
                await ws.close()
        await until(lambda: rt.live.listening(org_channel(org)) == 0, "unsubscribed")
        # The last local subscriber gone, the process stops listening to the channel.
        for _ in range(200):
            if (await rt.redis.pubsub_numsub(org_channel(org)))[0][1] == 0:
                break
            await asyncio.sleep(0.01)
        assert (await rt.redis.pubsub_numsub(org_channel(org)))[0][1] == 0


async def test_open_subscriptions_are_limited_per_user_and_per_organization(settings, auth_http, auth_runtime):
    org, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with served(settings, auth_http, subscriptions_max_per_user=3, subscriptions_max_per_organization=5) as (url, rt):
        ws1 = await connect(url, await mint(auth_runtime, first, org))
        ws2 = await connect(url, await mint(auth_runtime, second, org))
        try:
            for j in range(3):
                await subscribe(ws1, f"a{j}")
            await until(lambda: rt.live.listening(org_channel(org)) == 3, "3 subscribers")
            await subscribe(ws1, "a3")
            msg = await recv(ws1)
            assert msg["id"] == "a3"
            err = error_of(msg)
            assert err["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            assert err["extensions"]["scope"] == "user" and err["extensions"]["limit"] == 3
            assert await recv(ws1) == {"id": "a3", "type": "complete"}

            for j in range(2):
                await subscribe(ws2, f"b{j}")
            await until(lambda: rt.live.listening(org_channel(org)) == 5, "5 subscribers")
            await subscribe(ws2, "b2")
            err = error_of(await recv(ws2))
            assert err["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            assert err["extensions"]["scope"] == "organization"
            assert await recv(ws2) == {"id": "b2", "type": "complete"}

            # Closing one frees its place.
            await ws1.send(json.dumps({"id": "a0", "type": "complete"}))
            await until(lambda: rt.live.listening(org_channel(org)) == 4, "one closed")
            await subscribe(ws2, "b3")
            await until(lambda: rt.live.listening(org_channel(org)) == 5, "a new one admitted")
            invoice_id = await publish_status(rt.redis, org)
            msg = await recv(ws2)
            assert msg["type"] == "next" and msg["payload"]["data"]["invoiceEvents"]["invoiceId"] == invoice_id
        finally:
            await ws1.close()
            await ws2.close()


async def test_stream_ends_when_its_token_expires(settings, auth_http, auth_runtime):
    org = uuid.uuid4()
    async with served(settings, auth_http) as (url, rt):
        ws = await connect(url, await mint(auth_runtime, uuid.uuid4(), org, ttl=2))
        try:
            await subscribe(ws, "1")
            msg = await recv(ws)
            assert msg["id"] == "1"
            assert error_of(msg)["extensions"]["code"] == "TOKEN_EXPIRED"
            assert (await recv(ws))["type"] == "complete"
        finally:
            await ws.close()
        await until(lambda: rt.live.listening(org_channel(org)) == 0, "the expired stream released")


@pytest.mark.parametrize("change,reason", [
    (lambda user, key: MemberRemoved(user_id=user), "MEMBER_REMOVED"),
    (lambda user, key: MemberRoleChanged(user_id=user, old_role="ADMIN", new_role="MEMBER"), "ROLE_CHANGED"),
    (lambda user, key: ApiKeyRevoked(api_key_id=key), "API_KEY_REVOKED"),
])
async def test_stream_ends_when_its_authority_changes(settings, auth_http, auth_runtime, change, reason):
    org, user, bystander, key = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with served(settings, auth_http) as (url, rt):
        token = await mint(auth_runtime, user, org, api_key=key if reason == "API_KEY_REVOKED" else None)
        ws = await connect(url, token)
        other = await connect(url, await mint(auth_runtime, bystander, org))
        try:
            await subscribe(ws, "mine")
            await subscribe(other, "theirs")
            await until(lambda: rt.live.listening(org_channel(org)) == 2, "both subscribed")
            await until(lambda: rt.live.subscribed(AUTHORITY_CHANNEL),
                        "authority channel subscribed")
            await publish_authority(rt.redis, change(user, key), org)
            msg = await recv(ws)
            err = error_of(msg)
            assert err["extensions"]["code"] == "STALE_TOKEN" and err["extensions"]["reason"] == reason
            assert (await recv(ws))["type"] == "complete"
            # Another member's stream goes on.
            invoice_id = await publish_status(rt.redis, org)
            msg = await recv(other)
            assert msg["type"] == "next" and msg["payload"]["data"]["invoiceEvents"]["invoiceId"] == invoice_id
        finally:
            await ws.close()
            await other.close()


async def test_stream_stays_open_across_a_redis_restart(settings, auth_http, auth_runtime, tmp_path):
    proc, redis_url = embedded.start_redis(workdir=tmp_path)
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    org = uuid.uuid4()
    try:
        async with served(settings, auth_http, redis_url=redis_url) as (url, rt):
            ws = await connect(url, await mint(auth_runtime, uuid.uuid4(), org))
            try:
                await subscribe(ws, "1")
                await until(lambda: rt.live.listening(org_channel(org)) == 1, "subscribed")
                first = await publish_status(rt.redis, org)
                assert (await recv(ws))["payload"]["data"]["invoiceEvents"]["invoiceId"] == first

                proc.send_signal(signal.SIGTERM)  # a restart, as an operator or the OS would do it
                proc.wait(10)
                await until(lambda: rt.live.listening(org_channel(org)) == 0, "the hub noticed")
                proc, _ = embedded.start_redis(port=port, workdir=tmp_path)
                await until(lambda: rt.live.connections >= 2 and rt.live.listening(org_channel(org)) == 1,
                            "the hub reconnected and subscribed again")

                second = await publish_status(rt.redis, org)
                msg = await recv(ws)  # not a `complete`, not an error: the same stream goes on
                assert msg["type"] == "next" and msg["id"] == "1", msg
                assert msg["payload"]["data"]["invoiceEvents"]["invoiceId"] == second
            finally:
                await ws.close()
    finally:
        proc.kill()
        proc.wait(5)
