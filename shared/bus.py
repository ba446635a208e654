"""Where events travel after the outbox: names and helpers every producer and consumer shares.

- Durable delivery: one Redis stream (`events`), read by each consumer through its own consumer
  group (at-least-once; consumers deduplicate by event id).
- Live delivery: pub/sub channel per organization (and per user), for GraphQL subscriptions, which
  listen through one connection per process (`shared.pubsub.LiveHub`). Pub/sub is lossy by nature;
  subscriptions are a view, the stream and the database stay the record.
- Authority changes (member removed, role changed, API key revoked) also go live, on one channel
  every process listens to, so open subscriptions end when what allowed them is gone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from shared.events import Event

EVENTS_STREAM = "events"
STREAM_MAXLEN = 1_000_000  # approximate trim; consumers read far faster than this fills


AUTHORITY_CHANNEL = "live:authority"
# Auth events that end open subscriptions. They carry ids and role names only; every other auth
# event stays on the durable stream (some carry e-mail links with single-use tokens).
AUTHORITY_EVENTS = frozenset({"auth.member_removed", "auth.member_role_changed", "auth.api_key_revoked"})


def org_channel(organization_id: uuid.UUID | str) -> str:
    return f"live:org:{organization_id}"


def user_channel(user_id: uuid.UUID | str) -> str:
    return f"live:user:{user_id}"


def live_channels(event: Event) -> list[str]:
    """Where the relay publishes `event` for live subscriptions (besides the durable stream)."""
    if event.type in AUTHORITY_EVENTS:
        return [AUTHORITY_CHANNEL]
    if event.organization_id is not None and not event.type.startswith("auth."):
        return [org_channel(event.organization_id)]
    return []


def _live_payload(message: dict) -> str:
    """What `publish_live` and `publish_live_many` publish."""
    return json.dumps(message, default=str)


async def publish_live(redis: Redis, channel: str, message: dict) -> None:
    await redis.publish(channel, _live_payload(message))


async def publish_live_many(redis: Redis, messages: list[tuple[str, dict]]) -> None:
    """`publish_live` for several (channel, message) pairs, in one round trip (a pipeline)."""
    if len(messages) == 1:
        await publish_live(redis, *messages[0])
        return
    async with redis.pipeline(transaction=False) as pipe:
        for channel, message in messages:
            pipe.publish(channel, _live_payload(message))
        await pipe.execute()


async def listen(redis: Redis, *channels: str) -> AsyncIterator[dict]:
    """Yield JSON messages published on `channels` until the caller stops iterating."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(*channels)
    try:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                yield json.loads(message["data"])
    finally:
        await pubsub.unsubscribe(*channels)
        await pubsub.aclose()


def stream_fields(event: Event) -> dict[str, str]:
    return {"id": str(event.id), "type": event.type, "event": event.model_dump_json()}
