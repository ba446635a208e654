"""One consumer group on the `events` stream, the same way for every service that reacts to events.

A message is acknowledged only after its effects committed; messages a crashed consumer left
pending are claimed again after `CLAIM_IDLE_MS`; a message failing `MAX_DELIVERIES` times moves
to the group's dead-letter stream so one poison event cannot block the rest. Effects must be
idempotent by event id (the handlers deduplicate in Postgres).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from shared.bus import EVENTS_STREAM
from shared.runtime import Runtime

log = logging.getLogger(__name__)

CLAIM_IDLE_MS = 30_000  # a message pending this long belongs to a consumer that died
MAX_DELIVERIES = 10
BATCH = 100
MAINTAIN_SECONDS = 5.0  # the loop's group check and reclaim of dead consumers' messages

# process(rt, msg_id, fields) applies one stream entry; raising leaves it pending for a retry.
Process = Callable[[Runtime, bytes, dict], Awaitable[None]]
# process_batch(rt, [(msg_id, fields), ...]) applies the wanted entries of one read together (one
# transaction); raising applies nothing, and the entries are then processed one by one.
ProcessBatch = Callable[[Runtime, list[tuple[bytes, dict]]], Awaitable[None]]


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class StreamConsumer:
    group: str
    process: Process
    # Which event types this consumer applies; the others are acknowledged without being parsed
    # (the stream entry carries the type beside the event): most events concern one consumer only.
    wants: Callable[[str], bool] | None = None
    # Optional: all wanted entries of a read at once. If it fails the batch falls back to `process`
    # per entry, so a poison event still fails alone (its failure count, then the dead letter).
    process_batch: ProcessBatch | None = None

    @property
    def dead_letter_stream(self) -> str:
        return f"events:dead:{self.group}"

    @property
    def failures_key(self) -> str:
        return f"events:failures:{self.group}"

    async def ensure_group(self, redis) -> None:
        try:
            # From the start of the stream: a new deployment catches up on history (dedupe makes
            # already-applied events no-ops).
            await redis.xgroup_create(EVENTS_STREAM, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def dead_letter(self, rt: Runtime, msg_id: bytes, fields: dict, reason: str) -> None:
        async with rt.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, {**fields, b"stream_id": msg_id, b"reason": reason.encode()[:500]})
            pipe.xack(EVENTS_STREAM, self.group, msg_id)
            pipe.hdel(self.failures_key, msg_id)
            await pipe.execute()

    async def _handle_batch(self, rt: Runtime, entries) -> int:
        done: list[bytes] = []
        trimmed: list[bytes] = []  # acknowledged, not counted as processed
        wanted: list[tuple[bytes, dict]] = []
        try:
            for msg_id, fields in entries:
                if fields is None:  # trimmed from the stream while pending
                    trimmed.append(msg_id)
                    continue
                kind = fields.get(b"type")
                if self.wants is not None and kind is not None and not self.wants(kind.decode(errors="replace")):
                    done.append(msg_id)
                    continue
                wanted.append((msg_id, fields))
            if wanted and self.process_batch is not None:
                try:
                    await self.process_batch(rt, wanted)
                except Exception:  # noqa: BLE001 - nothing applied: entry by entry below
                    log.warning("%s consumer: batch of %s failed; applying its entries one by one", self.group,
                                len(wanted), exc_info=True)
                else:
                    done += [msg_id for msg_id, _ in wanted]
                    wanted = []
            for msg_id, fields in wanted:
                try:
                    await self.process(rt, msg_id, fields)
                except Exception as exc:  # noqa: BLE001 - leave it pending; it is claimed again later
                    failures = await rt.redis.hincrby(self.failures_key, msg_id, 1)
                    log.exception("%s consumer: event %s failed (%s/%s)", self.group, msg_id, failures, MAX_DELIVERIES)
                    if failures >= MAX_DELIVERIES:
                        await self.dead_letter(rt, msg_id, fields, repr(exc))
                    continue
                done.append(msg_id)
        finally:
            # One round trip for the batch's acknowledgements, not one per message: a crash before
            # it only redelivers messages whose effects are already committed (deduplicated).
            if done or trimmed:
                async with rt.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(EVENTS_STREAM, self.group, *done, *trimmed)
                    if done:
                        pipe.hdel(self.failures_key, *done)
                    await pipe.execute()
        return len(done)

    async def consume_once(self, rt: Runtime, *, consumer: str | None = None, block_ms: int | None = None,
                           claim_idle_ms: int = CLAIM_IDLE_MS, maintain: bool = True) -> int:
        """Process what is waiting: first messages stuck with dead consumers, then new ones. Returns
        how many messages were processed and acknowledged (duplicates included). `maintain=False`
        skips the group check and the reclaim (the loop does them every MAINTAIN_SECONDS)."""
        consumer = consumer or consumer_name()
        total = 0
        if maintain:
            total += await self._maintain(rt, consumer, claim_idle_ms)
        while True:
            resp = await rt.redis.xreadgroup(self.group, consumer, {EVENTS_STREAM: ">"}, count=BATCH, block=block_ms)
            entries = resp[0][1] if resp else []
            total += await self._handle_batch(rt, entries)
            if len(entries) < BATCH:
                return total
            block_ms = None  # only the first read waits

    async def _maintain(self, rt: Runtime, consumer: str, claim_idle_ms: int) -> int:
        """The group exists (a Redis that lost it gets it back); messages stuck with dead consumers
        are claimed and processed."""
        await self.ensure_group(rt.redis)
        total = 0
        start = "0-0"
        while True:
            start, claimed, *_ = await rt.redis.xautoclaim(EVENTS_STREAM, self.group, consumer, claim_idle_ms,
                                                           start_id=start, count=BATCH)
            total += await self._handle_batch(rt, claimed)
            if start in (b"0-0", "0-0"):
                return total

    async def loop(self, rt: Runtime) -> None:
        name = consumer_name()
        delay = 1.0
        maintained_at = None
        while True:
            try:
                # The group check and the reclaim every MAINTAIN_SECONDS, not on every pass: under
                # load a pass handles a few messages, and they were two round trips each time.
                now = asyncio.get_running_loop().time()
                maintain = maintained_at is None or now - maintained_at >= MAINTAIN_SECONDS
                await self.consume_once(rt, consumer=name, block_ms=5000, maintain=maintain)
                if maintain:
                    maintained_at = now
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis or Postgres down: back off and try again
                log.exception("%s consumer pass failed", self.group)
                maintained_at = None  # e.g. a Redis that lost the group: check it on the next pass
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
