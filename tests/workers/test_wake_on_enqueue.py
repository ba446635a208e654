"""Jobs the relay queues wake the workers at once (a PUBLISH from the enqueue script, a
subscription in every worker) instead of waiting for their next poll; polling stays the safety net."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from arq.connections import RedisSettings, create_pool
from arq.constants import default_queue_name, job_key_prefix
from arq.worker import func

from shared.events import Event
from workers.event_jobs import enqueue_event_jobs, wake_channel
from workers.main import ResilientWorker


def _stamping_requested() -> Event:
    return Event(id=uuid.uuid4(), type="invoice.stamping_requested", version=1, organization_id=uuid.uuid4(),
                 actor_id=None, aggregate_id=None, occurred_at=datetime.now(timezone.utc),
                 payload={"invoice_id": str(uuid.uuid4())})


async def _next_message(pubsub, timeout: float):
    try:
        async with asyncio.timeout(timeout):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    return message["data"]
    except TimeoutError:
        return None


async def test_queuing_jobs_publishes_a_wake_up_and_queuing_nothing_does_not(redis_url):
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    ev = _stamping_requested()
    try:
        async with pool.pubsub() as pubsub:
            await pubsub.subscribe(wake_channel(default_queue_name))
            assert await enqueue_event_jobs(pool, [ev]) == 1
            assert await _next_message(pubsub, 5) == b"1"
            assert await enqueue_event_jobs(pool, [ev]) == 0  # already queued: no job, no wake-up
            assert await _next_message(pubsub, 0.5) is None
    finally:
        job_ids = [j.decode() for j in await pool.zrange(default_queue_name, 0, -1)]
        ours = [j for j in job_ids if ev.payload["invoice_id"] in j]
        if ours:
            await pool.zrem(default_queue_name, *ours)
            await pool.delete(*(job_key_prefix + j for j in ours))
        await pool.aclose()


async def _noted(ctx) -> None:
    ctx["ran"].set()


async def test_a_worker_starts_a_job_on_a_wake_up_without_waiting_for_its_poll(redis_url):
    """Polling every 60 s: a job queued after the first poll would wait a minute; the wake-up
    published on the queue's channel starts it at once."""
    queue = f"test:queue:{uuid.uuid4().hex}"
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    ran = asyncio.Event()
    worker = ResilientWorker(functions=[func(_noted, name="_noted")], redis_pool=pool, queue_name=queue,
                             poll_delay=60, handle_signals=False, ctx={"ran": ran})
    main = asyncio.ensure_future(worker.main())
    try:
        for _ in range(250):  # until the worker has polled once and subscribed
            if (await pool.pubsub_numsub(wake_channel(queue)))[0][1] >= 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the worker never subscribed to its wake-up channel")
        await pool.enqueue_job("_noted")  # arq's own enqueue: no wake-up yet
        await asyncio.sleep(0.3)
        assert not ran.is_set()  # it waits for its (60 s) poll
        await pool.publish(wake_channel(queue), "1")
        await asyncio.wait_for(ran.wait(), 5)
    finally:
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        await worker.close()
        await pool.delete(queue)
