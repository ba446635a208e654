"""The worker's relay and consumer loops come back by themselves if they ever crash or return."""

from __future__ import annotations

import asyncio

from workers.background import background_loop


async def test_a_crashed_background_loop_is_restarted():
    runs = []
    again = asyncio.Event()

    async def flaky(ctx) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("redis went away")  # what an unabsorbed outage looks like
        if len(runs) == 2:
            return  # a loop that ends on its own is as bad as one that crashed
        again.set()
        await asyncio.Event().wait()

    start, stop = background_loop("flaky", flaky)
    ctx: dict = {}
    await start(ctx)
    try:
        await asyncio.wait_for(again.wait(), 10)
        assert len(runs) == 3
    finally:
        await stop(ctx)
    assert ctx["flaky"].done()
