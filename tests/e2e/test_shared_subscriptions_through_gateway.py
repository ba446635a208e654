"""Client subscriptions that share one upstream subscription in the gateway (supergraph/subscriptions.mjs):
every client still receives every event, the upstream outlives the client that opened it, and
another organization's identical subscription receives nothing."""

from __future__ import annotations

import asyncio
import base64
import json

from redis.asyncio import Redis

from shared.bus import org_channel, publish_live
from tests.conftest import unique_email
from tests.e2e.conftest import sign_up_by_mail, subscribe
from tests.gateway_flows import PASSWORD

SHORT = "subscription { invoiceEvents { invoiceId status } }"
LONG = "subscription Long { invoiceEvents { invoiceId status uuid } }"


def _org(token: str) -> str:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["org"]


def _event(n: int) -> dict:
    return {"kind": "invoice_status", "invoiceId": f"00000000-0000-0000-0000-{n:012d}", "status": "STAMPED",
            "uuid": f"U{n}", "code": None, "message": None, "at": "2026-01-01T00:00:00+00:00"}


async def _until_all_listen(redis, channel: str, subs: list) -> None:
    """Publish warm-up events until every subscriber got one, then drain them (bounded; the
    gateway and the subgraph subscribe upstream asynchronously)."""
    for n in range(150):
        await publish_live(redis, channel, _event(900_000 + n))
        try:
            await asyncio.gather(*(s.next(timeout=0.2) for s in subs))
            break
        except (asyncio.TimeoutError, TimeoutError):
            continue
    else:
        raise AssertionError("subscribers never started receiving")
    await asyncio.sleep(0.3)
    for s in subs:  # leftovers of the warm-up
        while True:
            try:
                await s.next(timeout=0.1)
            except (asyncio.TimeoutError, TimeoutError):
                break


async def _ids(sub, n: int) -> list[str]:
    return [(await sub.next(timeout=15))["data"]["invoiceEvents"]["invoiceId"] for _ in range(n)]


async def test_identical_subscriptions_share_upstream_and_each_gets_every_event(gateway, stack, mailbox):
    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("vivo"), "password": PASSWORD,
                                                      "fullName": "Contadora", "organizationName": "Kemper"}))["accessToken"]
    other = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("espia"), "password": PASSWORD,
                                                      "fullName": "Otra", "organizationName": "Otra"}))["accessToken"]
    url = stack.urls["gateway"]
    opened = [await subscribe(url, SHORT, None, token) for _ in range(3)]  # shared upstream
    opened.append(await subscribe(url, LONG, None, token))  # another document: its own upstream
    spy_ws, spy = await subscribe(url, SHORT, None, other)  # same document, another organization
    redis = Redis.from_url(stack.env["REDIS_URL"])
    channel = org_channel(_org(token))
    try:
        await _until_all_listen(redis, channel, [s for _, s in opened])
        await _until_all_listen(redis, org_channel(_org(other)), [spy])  # the spy listens too
        await publish_live(redis, channel, _event(1))
        for _, sub in opened:
            assert await _ids(sub, 1) == [_event(1)["invoiceId"]]

        # The client that opened the shared upstream leaves: the others keep receiving.
        await opened[0][0].close()
        await asyncio.sleep(0.3)
        await publish_live(redis, channel, _event(2))
        await publish_live(redis, channel, _event(3))
        for _, sub in opened[1:]:
            assert await _ids(sub, 2) == [_event(2)["invoiceId"], _event(3)["invoiceId"]]

        await opened[1][0].close()
        await asyncio.sleep(0.3)
        await publish_live(redis, channel, _event(4))
        for _, sub in opened[2:]:
            assert await _ids(sub, 1) == [_event(4)["invoiceId"]]

        try:  # the other organization heard none of it
            got = await spy.next(timeout=0.5)
            raise AssertionError(f"another organization received {got}")
        except (asyncio.TimeoutError, TimeoutError):
            pass
    finally:
        for ws, _ in opened:
            await ws.close()
        await spy_ws.close()
        await redis.aclose()



async def test_more_identical_subscriptions_than_the_subgraph_allows_one_user(gateway, stack, mailbox):
    """The invoice subgraph admits 100 subscriptions per user (SUBSCRIPTIONS_MAX_PER_USER): 120
    identical ones of one token through the gateway all work because they are one upstream."""
    import websockets

    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("pestanas"), "password": PASSWORD,
                                                      "fullName": "Muchas", "organizationName": "Pestañas"}))["accessToken"]
    ws = await websockets.connect(stack.urls["gateway"].replace("http", "ws", 1) + "/graphql",
                                  subprotocols=["graphql-transport-ws"])
    redis = Redis.from_url(stack.env["REDIS_URL"])
    channel = org_channel(_org(token))
    try:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        ids = [f"tab-{i}" for i in range(120)]
        for i in ids:
            await ws.send(json.dumps({"id": i, "type": "subscribe", "payload": {"query": SHORT}}))
        got: dict[str, list[str]] = {i: [] for i in ids}
        for n in range(150):  # warm-ups until every subscription delivered one (bounded)
            await publish_live(redis, channel, _event(800_000 + n))
            try:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
                    if msg["type"] == "ping":
                        await ws.send('{"type":"pong"}')
                        continue
                    assert msg["type"] == "next" and "errors" not in msg["payload"], msg
                    got[msg["id"]].append(msg["payload"]["data"]["invoiceEvents"]["invoiceId"])
            except (asyncio.TimeoutError, TimeoutError):
                pass
            if all(got.values()):
                break
        assert all(got.values()), [i for i, v in got.items() if not v][:5]
    finally:
        await ws.close()
        await redis.aclose()
