"""Long-running loops a worker keeps beside its jobs (the outbox relay, the event consumer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def background_loop(name: str, loop: Callable[[dict], Awaitable[None]]):
    """STARTUP/SHUTDOWN hooks that run `loop(ctx)` as a task for the worker's lifetime."""

    async def start(ctx) -> None:
        ctx[name] = asyncio.create_task(loop(ctx), name=name)

    async def stop(ctx) -> None:
        task = ctx.get(name)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    return start, stop
