"""Long-running loops a worker keeps beside its jobs (the outbox relay, the event consumer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RESTART_FIRST, RESTART_MAX = 0.5, 30.0


async def keep_running(name: str, loop: Callable[[], Awaitable[None]], *, first: float = RESTART_FIRST,
                       most: float = RESTART_MAX) -> None:
    """Run `loop()` for ever: if it ever returns or raises (a Redis or Postgres outage it did not
    absorb, a bug), log it and start it again after a growing pause, instead of leaving the worker
    alive but silently without its relay or consumer."""
    delay = first
    while True:
        try:
            await loop()
            log.error("background loop %s returned; restarting in %.1f s", name, delay)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - whatever it was, the loop must come back
            log.exception("background loop %s crashed; restarting in %.1f s", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, most)


def background_loop(name: str, loop: Callable[[dict], Awaitable[None]]):
    """STARTUP/SHUTDOWN hooks that keep `loop(ctx)` running as a task for the worker's lifetime."""

    async def start(ctx) -> None:
        ctx[name] = asyncio.create_task(keep_running(name, lambda: loop(ctx)), name=name)

    async def stop(ctx) -> None:
        task = ctx.get(name)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    return start, stop
