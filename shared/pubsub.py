"""Live subscriptions: one Redis pub/sub connection per process, fanned out in-process.

Every GraphQL subscription of a process listens through its `LiveHub` (`Runtime.live`):
- One connection, whatever the number of subscriptions: the hub SUBSCRIBEs to a channel while at
  least one local subscription wants it, and each message is decoded once (`LiveMessage`) and handed
  to every local subscriber. `LiveMessage.shared` lets them compute a payload once per key instead
  of once per subscriber, and `LiveMessage.event` hands GraphQL an event whose selection is executed
  and serialized once per distinct (document, variables) for all subscribers (`shared.live_graphql`).
- Bounded: open subscriptions are limited per user and per organization in each process
  (`SUBSCRIPTIONS_MAX_PER_USER`, `SUBSCRIPTIONS_MAX_PER_ORGANIZATION`); past them the client gets
  `TOO_MANY_SUBSCRIPTIONS`. A subscriber that does not keep up (mailbox full) is ended with
  `SUBSCRIPTION_OVERFLOW` rather than slowing the others or growing memory.
- No longer than its authority: a stream ends with `TOKEN_EXPIRED` when the token it was opened
  with expires, and with `STALE_TOKEN` when the auth service removes the member, changes their role
  or revokes the API key (events relayed on `AUTHORITY_CHANNEL`, see `shared.bus`). Clients
  reconnect with a fresh token; a role change invalidates the old token everywhere anyway.
- Survives Redis restarts: when the connection drops, streams stay open (no `complete`), the hub
  reconnects with backoff (50 ms doubling to 5 s) and subscribes again to every channel still
  wanted. Messages published while it was away are lost for live views (pub/sub keeps nothing;
  the database and the event stream stay the record); events the relay could not publish during
  the outage are published when Redis is back and reach the streams then.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from shared.bus import AUTHORITY_CHANNEL
from shared.errors import AppError
from shared.tokens import Principal

log = logging.getLogger(__name__)

T = TypeVar("T")

MAILBOX_SIZE = 1000  # messages waiting for one slow subscriber before it is ended
PING_AFTER = 15.0  # seconds of silence before the hub checks the connection is alive
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 5.0


class LiveMessage:
    """One published message, decoded once per process and shared by every local subscriber."""

    __slots__ = ("channel", "data", "_memo")

    def __init__(self, channel: str, data: Any):
        self.channel, self.data = channel, data
        self._memo: dict[Any, Any] = {}

    def shared(self, key: Any, compute: Callable[[Any], T]) -> T:
        """`compute(data)` once per key for all subscribers (they must treat the result as
        read-only): the hook for computing a payload once per distinct selection."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute(self.data)
            return value

    def event(self, key: Any, compute: Callable[[Any], Any]) -> SharedEvent:
        """What a subscription resolver yields when the event's fields depend on the message only
        (never on the subscriber's context): GraphQL then runs each distinct selection of it once
        for every subscriber of this message, and each subscriber only copies the result."""
        return SharedEvent(self, self.shared(key, compute))


class SharedEvent:
    """A subscription event that all subscribers of one message receive alike (see `LiveMessage.event`)."""

    __slots__ = ("message", "value")

    def __init__(self, message: LiveMessage, value: Any):
        self.message, self.value = message, value


def token_expired() -> AppError:
    return AppError("Tu sesión expiró; vuelve a suscribirte con un token nuevo.", code="TOKEN_EXPIRED")


def stale_token(reason: str) -> AppError:
    return AppError("Tus permisos cambiaron; renueva tu sesión y vuelve a suscribirte.", code="STALE_TOKEN",
                    extensions={"reason": reason})


class _Subscriber:
    """One open subscription: a bounded mailbox, and the error that ended it (if any)."""

    __slots__ = ("principal", "_items", "_wake", "_ended", "_expiry")

    def __init__(self, principal: Principal):
        self.principal = principal
        self._items: deque[LiveMessage] = deque()
        self._wake = asyncio.Event()
        self._ended: AppError | None = None
        self._expiry: asyncio.TimerHandle | None = None

    def deliver(self, message: LiveMessage) -> None:
        if self._ended is not None:
            return
        if len(self._items) >= MAILBOX_SIZE:
            self.end(AppError("La suscripción no consumió sus mensajes a tiempo; vuelve a suscribirte.",
                              code="SUBSCRIPTION_OVERFLOW"))
            return
        self._items.append(message)
        self._wake.set()

    def end(self, error: AppError) -> None:
        """End the stream with `error` (before any message still queued: authority comes first)."""
        if self._ended is None:
            self._ended = error
            self._wake.set()

    async def next(self) -> LiveMessage:
        while True:
            if self._ended is not None:
                raise self._ended
            if self._items:
                return self._items.popleft()
            self._wake.clear()
            await self._wake.wait()


class LiveHub:
    def __init__(self, redis: Redis, *, max_per_user: int, max_per_organization: int):
        self._redis = redis
        self.max_per_user, self.max_per_organization = max_per_user, max_per_organization
        # channel -> its local subscribers; the authority channel is always wanted.
        self._channels: dict[str, set[_Subscriber]] = {AUTHORITY_CHANNEL: set()}
        self._per_user: Counter[uuid.UUID] = Counter()
        self._per_org: Counter[uuid.UUID] = Counter()
        self._by_member: dict[tuple[uuid.UUID, uuid.UUID], set[_Subscriber]] = defaultdict(set)
        self._by_api_key: dict[uuid.UUID, set[_Subscriber]] = defaultdict(set)
        self._sent: set[str] = set()  # channels SUBSCRIBEd (and not UNSUBSCRIBEd) on this connection
        # Channels Redis confirmed it delivers on this connection (confirmations come in command
        # order, so this is Redis's own state as of the last confirmation read).
        self._ready: set[str] = set()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False
        self.connections = 0  # successful (re)connections, for operators and tests

    # --- what subscriptions use -------------------------------------------------------------------

    async def stream(self, channel: str, principal: Principal) -> AsyncIterator[LiveMessage]:
        """Messages published on `channel` from now on, until the caller stops or the stream is
        ended (token expired, authority changed, too slow): then the `AppError` is raised."""
        sub = self._admit(principal)
        try:
            self._join(channel, sub)
            while True:
                yield await sub.next()
        finally:
            self._leave(channel, sub)

    def listening(self, channel: str) -> int:
        """Local subscribers of `channel` that Redis is delivering to right now (0 while the hub
        is not subscribed): what a caller waits for before publishing in tests."""
        return len(self._channels.get(channel, ())) if channel in self._ready else 0

    def subscribed(self, channel: str) -> bool:
        """Whether Redis confirmed it delivers `channel` to this process right now."""
        return channel in self._ready

    # --- bookkeeping ------------------------------------------------------------------------------

    def _admit(self, p: Principal) -> _Subscriber:
        if self._per_user[p.user_id] >= self.max_per_user:
            raise AppError(f"Tienes demasiadas suscripciones abiertas (máximo {self.max_per_user}); cierra alguna.",
                           code="TOO_MANY_SUBSCRIPTIONS", extensions={"scope": "user", "limit": self.max_per_user})
        if self._per_org[p.organization_id] >= self.max_per_organization:
            raise AppError(f"La organización tiene demasiadas suscripciones abiertas (máximo {self.max_per_organization}).",
                           code="TOO_MANY_SUBSCRIPTIONS",
                           extensions={"scope": "organization", "limit": self.max_per_organization})
        left = float(p.claims.get("exp", 0)) - time.time() if p.claims.get("exp") is not None else None
        if left is not None and left <= 0:  # accepted within the verifier's clock-skew leeway only
            raise token_expired()
        sub = _Subscriber(p)
        self._per_user[p.user_id] += 1
        self._per_org[p.organization_id] += 1
        self._by_member[(p.organization_id, p.user_id)].add(sub)
        if p.api_key_id is not None:
            self._by_api_key[p.api_key_id].add(sub)
        if left is not None:
            loop = asyncio.get_running_loop()
            sub._expiry = loop.call_at(loop.time() + left, sub.end, token_expired())
        return sub

    def _join(self, channel: str, sub: _Subscriber) -> None:
        subs = self._channels.get(channel)
        if subs is None:
            subs = self._channels[channel] = set()
            self._dirty.set()
        subs.add(sub)
        if self._task is None:
            # A fresh context: the hub outlives the request that happened to start it (request id).
            self._task = asyncio.create_task(self._run(), name="live-hub", context=contextvars.Context())

    def _leave(self, channel: str, sub: _Subscriber) -> None:
        p = sub.principal
        if sub._expiry is not None:
            sub._expiry.cancel()
        self._per_user[p.user_id] -= 1
        if self._per_user[p.user_id] <= 0:
            del self._per_user[p.user_id]
        self._per_org[p.organization_id] -= 1
        if self._per_org[p.organization_id] <= 0:
            del self._per_org[p.organization_id]
        _discard(self._by_member, (p.organization_id, p.user_id), sub)
        if p.api_key_id is not None:
            _discard(self._by_api_key, p.api_key_id, sub)
        subs = self._channels.get(channel)
        if subs is not None:
            subs.discard(sub)
            if not subs and channel != AUTHORITY_CHANNEL:
                del self._channels[channel]
                self._dirty.set()

    # --- the connection ---------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self._closed:
            pubsub = self._redis.pubsub()
            writer = None
            try:
                await pubsub.connect()
                self.connections += 1
                self._sent.clear()
                self._ready.clear()
                self._dirty.set()
                writer = asyncio.create_task(self._write(pubsub))
                if await self._read(pubsub, writer):
                    delay = BACKOFF_FIRST  # it worked for a while: the next drop retries at once
            except (RedisError, OSError) as exc:
                log.warning("live hub: cannot reach Redis (%s); retrying in %.2f s", exc, delay)
            except Exception:  # noqa: BLE001 - a bug here must not end every live stream for good
                log.exception("live hub: unexpected failure; reconnecting")
            finally:
                if writer is not None:
                    writer.cancel()
                    with suppress(BaseException):
                        await writer
                self._ready.clear()
                with suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _write(self, pubsub: PubSub) -> None:
        """Keep Redis subscribed to exactly the channels local subscriptions want."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            wanted = set(self._channels)
            add, drop = wanted - self._sent, self._sent - wanted
            if add:
                self._sent |= add
                await pubsub.execute_command("SUBSCRIBE", *add)
            if drop:
                self._sent -= drop
                await pubsub.execute_command("UNSUBSCRIBE", *drop)

    async def _read(self, pubsub: PubSub, writer: asyncio.Task) -> bool:
        """Dispatch until the connection fails; answers whether Redis confirmed anything first (a
        connection that worked, as opposed to one refused at once)."""
        healthy = False
        silent = 0
        try:
            while True:
                if writer.done():
                    writer.result()  # a failed SUBSCRIBE means the connection is gone
                message = await pubsub.get_message(timeout=PING_AFTER)
                if message is None:
                    silent += 1
                    if silent > 1:
                        raise ConnectionError("Redis did not answer a PING")
                    await pubsub.execute_command("PING")
                    continue
                silent = 0
                kind = message["type"]
                if kind == "subscribe":
                    healthy = True
                    self._ready.add(_text(message["channel"]))
                elif kind == "unsubscribe":
                    self._ready.discard(_text(message["channel"]))
                elif kind == "message":
                    self._dispatch(_text(message["channel"]), message["data"])
        except (RedisError, OSError, ConnectionError) as exc:
            log.warning("live hub: Redis connection lost (%s); reconnecting", exc)
            return healthy

    def _dispatch(self, name: str, raw: bytes) -> None:
        if name == AUTHORITY_CHANNEL:
            self._authority(raw)
            return
        subs = self._channels.get(name)
        if not subs:
            return
        try:
            message = LiveMessage(name, json.loads(raw))
        except ValueError:
            log.warning("live hub: undecodable message on %s dropped", name)
            return
        for sub in list(subs):
            sub.deliver(message)

    def _authority(self, raw: bytes) -> None:
        """Membership and API-key events from the auth service end the streams they invalidate."""
        try:
            ev = json.loads(raw)
            kind, payload = ev["type"], ev.get("payload") or {}
            if kind == "auth.api_key_revoked":
                ended, reason = self._by_api_key.get(uuid.UUID(payload["api_key_id"]), ()), "API_KEY_REVOKED"
            else:
                member = (uuid.UUID(ev["organization_id"]), uuid.UUID(payload["user_id"]))
                reason = {"auth.member_removed": "MEMBER_REMOVED", "auth.member_role_changed": "ROLE_CHANGED"}[kind]
                # API keys are the organization's, not the member's: they end when revoked.
                ended = [s for s in self._by_member.get(member, ()) if s.principal.api_key_id is None]
        except (ValueError, KeyError, TypeError):
            log.warning("live hub: unexpected authority message dropped")
            return
        for sub in list(ended):
            sub.end(stale_token(reason))

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with suppress(BaseException):
                await self._task
            self._task = None


def _discard(index: dict, key, sub: _Subscriber) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
