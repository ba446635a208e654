"""Coalescing of calls made close together into one batch call (DataLoader-style, for work that is
not a GraphQL field): the stamping worker's claims and finishes, and the worker's arq job finishes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")
R = TypeVar("R")


class Coalescer(Generic[I, R]):
    """DataLoader-style: `load(item)` calls made close together share one `run(items)` call, which
    answers a result per item in order. `run` runs in its own task (a copy of the first caller's
    context: its trace), so a caller that gives up does not stop the others' batch.

    At most `in_flight` batches run at once; what arrives meanwhile waits for the next one, which
    starts as soon as one ends. Under load the batches grow by themselves: with a fixed window
    only, arq refilling each freed slot at once made a stream of single-invoice "batches" (1.4
    invoices per claim in the stamping bench), and each paid a whole claim and finish."""

    def __init__(self, run: Callable[[list[I]], Awaitable[list[R]]], *, window: float,
                 max_size: int, in_flight: int = 1):
        self._run, self._window, self._max, self._in_flight = run, window, max_size, in_flight
        self._pending: list[tuple[I, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()

    async def load(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._pending.append((item, answer))
        if len(self._pending) >= self._max:
            self._dispatch()
        elif self._timer is None and len(self._tasks) < self._in_flight:
            self._timer = loop.call_later(self._window, self._dispatch)
        return await answer

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if len(self._tasks) >= self._in_flight:
            return  # the next batch starts when a running one ends (_done)
        batch, self._pending = self._pending[:self._max], self._pending[self._max:]
        if batch:
            task = asyncio.get_running_loop().create_task(self._answer(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._pending:
            self._dispatch()

    async def _answer(self, batch: list[tuple[I, asyncio.Future]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:  # every caller sees the batch's failure (arq retries its job)
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, answer), result in zip(batch, results, strict=True):
                if not answer.done():
                    answer.set_result(result)
