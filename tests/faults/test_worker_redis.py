"""The worker waits for Redis at start and rides out Redis going away (restart or SIGKILL) while
it runs: it never exits, and takes jobs again as soon as Redis is back."""

from __future__ import annotations

import asyncio
import signal

from arq.connections import RedisSettings, create_pool

from tests.faults.helpers import wait_until


async def _run_job(redis_url: str, name: str, timeout: float = 30):
    """Enqueue `name` through arq like any producer, and wait for the worker's result."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        job = await pool.enqueue_job(name)
        return await job.result(timeout=timeout, poll_delay=0.1)
    finally:
        await pool.aclose()


def _alive(stack, name: str) -> bool:
    return stack.procs[name].poll() is None


async def test_worker_waits_for_redis_then_rides_out_restarts_and_kills(fault_stack, redis_server):
    fault_stack.start_worker()
    # Redis is not there yet: the worker keeps waiting (arq alone gives up after five tries).
    wait_until(lambda: fault_stack.log("worker", 100_000).count("esperando a Redis") >= 4 or not _alive(fault_stack, "worker"),
               "the worker waiting for Redis", timeout=60)
    assert _alive(fault_stack, "worker"), fault_stack.log("worker")
    redis_server.start()
    assert await _run_job(redis_server.url, "relay_outbox") == 0

    for sig in (signal.SIGTERM, signal.SIGKILL):  # an orderly restart, then a crash
        before = fault_stack.log("worker", 1_000_000).count("redis no disponible")
        redis_server.stop(sig)
        wait_until(lambda: fault_stack.log("worker", 1_000_000).count("redis no disponible") > before
                   or not _alive(fault_stack, "worker"), "the worker noticing Redis is gone")
        await asyncio.sleep(1)  # a few failed polls while Redis is away
        assert _alive(fault_stack, "worker"), fault_stack.log("worker")
        redis_server.start()
        assert await _run_job(redis_server.url, "relay_outbox") == 0
    assert _alive(fault_stack, "worker")
