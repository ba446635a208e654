"""Jobs that follow from events: the relay queues them as it delivers the outbox rows that ask
for them, so work is queued from the same transaction as the state change (a request can never
be accepted while its job is lost). Each concern module declares its `EVENT_JOBS`
(event type -> job function, job id, args); the job id makes a re-delivery a no-op.

The request's traceparent, when it was traced, goes with the job as the `traceparent` keyword
(taken off again by the worker's job wrapper, workers/main.py), so the job joins its trace.

A batch of events is queued in one round trip: a Lua script does, per job, what arq's
`enqueue_job` does with WATCH/EXISTS/MULTI (three round trips per job): skip it when its job or
result key exists, else store the job and add it to the queue, atomically; then, if anything was
queued, it wakes the workers (`wake_channel`). The job is serialized by arq's own `serialize_job`,
so workers read it as any other arq job."""

from __future__ import annotations

from arq.constants import default_queue_name, expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared.events import Event
from workers import stamping

ROUTES = {**stamping.EVENT_JOBS}

def wake_channel(queue_name: str) -> str:
    """Where workers of `queue_name` listen (workers/main.py) to poll at once when jobs were queued
    instead of at their next poll; polling stays the safety net (a lost message costs only that)."""
    return f"{queue_name}:wake"


# KEYS: queue, then (job key, result key) per job; ARGV: score, expires ms, wake channel, then
# (job, job id) per job.
_ENQUEUE = """
local queued = 0
for i = 1, (#KEYS - 1) / 2 do
  if redis.call('EXISTS', KEYS[2 * i], KEYS[2 * i + 1]) == 0 then
    redis.call('PSETEX', KEYS[2 * i], ARGV[2], ARGV[2 * i + 2])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2 * i + 3])
    queued = queued + 1
  end
end
if queued > 0 then
  redis.call('PUBLISH', ARGV[3], queued)
end
return queued
"""


async def enqueue_event_jobs(redis: Redis, events: list[Event]) -> int:
    """Queue the job each event asks for (raises on Redis trouble: the caller keeps the rows);
    returns how many were queued (a job already queued, running or kept is not)."""
    now = timestamp_ms()
    keys: list[str] = [default_queue_name]
    argv: list = [now, expires_extra_ms, wake_channel(default_queue_name)]
    for ev in events:
        route = ROUTES.get(ev.type)
        if route is None:
            continue
        name, job_id, args = route(ev)
        trace = {"traceparent": ev.traceparent} if ev.traceparent else {}
        keys += [job_key_prefix + job_id, result_key_prefix + job_id]
        argv += [serialize_job(name, args, trace, None, now), job_id]
    if len(keys) == 1:
        return 0
    return int(await redis.eval(_ENQUEUE, len(keys), *keys, *argv))
