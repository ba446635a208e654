"""Jobs that follow from events: the relay queues them as it delivers the outbox rows that ask
for them, so work is queued from the same transaction as the state change (a request can never
be accepted while its job is lost). Each concern module declares its `EVENT_JOBS`
(event type -> job function, job id, args); the job id makes a re-delivery a no-op.

The request's traceparent, when it was traced, goes with the job as the `traceparent` keyword
(taken off again by the worker's job wrapper, workers/main.py), so the job joins its trace."""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.asyncio import Redis

from shared.events import Event
from workers import stamping

ROUTES = {**stamping.EVENT_JOBS}


async def enqueue_event_jobs(redis: Redis, events: list[Event]) -> int:
    """Queue the job each event asks for (raises on Redis trouble: the caller keeps the rows)."""
    arq = ArqRedis(connection_pool=redis.connection_pool)
    queued = 0
    for ev in events:
        route = ROUTES.get(ev.type)
        if route is None:
            continue
        name, job_id, args = route(ev)
        trace = {"traceparent": ev.traceparent} if ev.traceparent else {}
        if await arq.enqueue_job(name, *args, _job_id=job_id, **trace) is not None:
            queued += 1
    return queued
