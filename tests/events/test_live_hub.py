"""The live hub on its own (shared/pubsub.py), against a real Redis: a message is decoded once per
process and its payload computed once per key for every subscriber; a subscriber that stops
reading is ended without holding the others back."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from shared import pubsub
from shared.errors import AppError
from shared.pubsub import LiveHub
from shared.tokens import Principal
from tests.events.helpers import until


def _principal(org: uuid.UUID) -> Principal:
    return Principal(user_id=uuid.uuid4(), organization_id=org, permissions=frozenset(), token_id="t",
                     claims={"exp": 4102444800})  # 2100-01-01


@pytest.fixture
async def hub(rt):
    live = LiveHub(rt.redis, max_per_user=10, max_per_organization=10)
    yield live
    await live.close()


async def test_each_message_is_decoded_once_and_its_payload_computed_once(rt, hub, monkeypatch):
    org, channel = uuid.uuid4(), f"live:test:{uuid.uuid4()}"
    decoded = []
    real_loads = json.loads
    monkeypatch.setattr(pubsub.json, "loads", lambda raw: decoded.append(raw) or real_loads(raw))
    streams = [hub.stream(channel, _principal(org)) for _ in range(3)]
    firsts = [asyncio.ensure_future(anext(s)) for s in streams]
    await until(lambda: hub.listening(channel) == 3)

    await rt.redis.publish(channel, json.dumps({"n": 1}))
    messages = await asyncio.gather(*firsts)
    assert messages[0] is messages[1] is messages[2]  # one object for every subscriber
    assert len(decoded) == 1
    built = []
    payloads = [m.shared("selection-a", lambda data: built.append(data) or {"payload": data["n"]}) for m in messages]
    assert built == [{"n": 1}] and payloads[0] is payloads[1] is payloads[2]
    for s in streams:
        await s.aclose()
    assert hub.listening(channel) == 0


async def test_a_subscriber_that_stops_reading_is_ended_and_the_others_go_on(rt, hub, monkeypatch):
    monkeypatch.setattr(pubsub, "MAILBOX_SIZE", 5)
    org, channel = uuid.uuid4(), f"live:test:{uuid.uuid4()}"
    stuck, reader = hub.stream(channel, _principal(org)), hub.stream(channel, _principal(org))
    first = [asyncio.ensure_future(anext(stuck)), asyncio.ensure_future(anext(reader))]
    await until(lambda: hub.listening(channel) == 2)
    got = []
    for n in range(7):  # the reader keeps up (one message pending at most); `stuck` never reads
        await rt.redis.publish(channel, json.dumps({"n": n}))
        got.append((await (first[1] if n == 0 else anext(reader))).data["n"])
    assert got == list(range(7))
    assert (await first[0]).data["n"] == 0  # then 6 more arrived while it did not read: past 5, ended
    with pytest.raises(AppError) as exc:
        await anext(stuck)
    assert exc.value.extensions["code"] == "SUBSCRIPTION_OVERFLOW"
    await reader.aclose()
