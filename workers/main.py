"""arq worker: every background job of the platform, one module per concern.

Run with `python -m workers.main`. Each concern module exposes `FUNCTIONS` (job functions),
optionally `CRON_JOBS`, `STARTUP` and `SHUTDOWN` hooks taking the arq ctx.

The worker outlives Redis: at start it waits for Redis (backoff, logged) instead of giving up after
arq's five tries, and a Redis that goes away while it runs (restart, crash, network) is ridden out:
the failed poll is logged and retried with backoff, jobs already running finish, and nothing is
lost (arq keeps the queue in Redis; our jobs are idempotent). `arq workers.main.WorkerSettings`
still runs the same jobs, without that resilience.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os

from arq.connections import RedisSettings, create_pool, log_redis_info
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms, to_ms
from arq.worker import Function, Worker, get_kwargs
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from shared.config import get_settings
from shared.logs import configure_logging
from shared.runtime import build_runtime
from shared.telemetry import job_span, setup_tracing, tracing_enabled
from shared.coalesce import Coalescer
from workers import auth, expense, notifications, relay, stamping
from workers.event_jobs import wake_channel
from workers.outage import retrying_on_outage

log = logging.getLogger("workers.main")

# Concern modules; each owns its jobs. One worker process runs them all.
MODULES = (relay, stamping, notifications, expense, auth)

# What "Redis is not there right now" looks like from redis-py (LOADING after a restart included:
# BusyLoadingError is a ConnectionError).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0

# KEYS: queue, then each job's in-progress key; ARGV: now (ms), in-progress timeout (ms), job ids.
# Per job, what arq's start_jobs checks: not in progress, still queued, due; then marks it in
# progress. Atomic (a script runs alone), so two workers never both start one job.
_START = """
local started = {}
for i = 2, #KEYS do
  local job_id = ARGV[i + 1]
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local score = redis.call('ZSCORE', KEYS[1], job_id)
    if score and tonumber(score) <= tonumber(ARGV[1]) then
      redis.call('PSETEX', KEYS[i], ARGV[2], '1')
      table.insert(started, job_id)
      table.insert(started, score)
    end
  end
end
return started
"""


async def startup(ctx) -> None:
    settings = get_settings()
    configure_logging("worker", settings.log_level)
    setup_tracing("worker")  # before the runtime's engine exists: its statements are traced too
    ctx["runtime"] = build_runtime("worker", settings)
    for mod in MODULES:
        for hook in getattr(mod, "STARTUP", []):
            await hook(ctx)


async def shutdown(ctx) -> None:
    for mod in MODULES:
        for hook in getattr(mod, "SHUTDOWN", []):
            await hook(ctx)
    await ctx["runtime"].close()


def traced(fn: Function) -> Function:
    """The job in a span that continues the trace of the request that queued it: the relay passes
    the request's `traceparent` as a keyword (workers/event_jobs.py), taken off here so job
    functions never see it. Accepted (and dropped) with tracing off too: a job queued by a worker
    that traced must still run on one that does not."""

    @functools.wraps(fn.coroutine)
    async def run(ctx, *args, traceparent: str | None = None, **kwargs):
        if not tracing_enabled():
            return await fn.coroutine(ctx, *args, **kwargs)
        with job_span(fn.name, traceparent, {"messaging.system": "arq", "messaging.message.id": str(ctx.get("job_id")),
                                             "arq.job_try": int(ctx.get("job_try") or 1)}):
            return await fn.coroutine(ctx, *args, **kwargs)

    return dataclasses.replace(fn, coroutine=run)


class WorkerSettings:
    functions = [traced(retrying_on_outage(f)) for m in MODULES for f in getattr(m, "FUNCTIONS", [])]
    cron_jobs = [c for m in MODULES for c in getattr(m, "CRON_JOBS", [])]
    on_startup = startup
    on_shutdown = shutdown
    # Jobs running at once. Stamping jobs in flight together are sealed, finished and evented in
    # batches (service/stamp_batch.py), so more slots mean bigger batches and less CPU per stamp:
    # with 2 workers on 2 cores, 20 slots gave 127 stamps/s, 60 gave 175-205 (bench/RESULTS-stamping.md).
    max_jobs = int(os.environ.get("WORKER_MAX_JOBS", "60"))
    # How often the queue is polled (arq's default is 0.5 s) when no wake-up comes: jobs the relay
    # queues wake the workers at once (ResilientWorker._listen_for_wakeups); polling catches the
    # rest (retries coming due, crons, a lost wake-up). An idle poll is one Redis round trip.
    poll_delay = float(os.environ.get("WORKER_POLL_SECONDS", "0.1"))
    # Also how long a job whose worker was killed stays claimed before another worker re-runs it
    # (arq keeps it "in progress" for job_timeout + 10 s); the fault suite shortens it.
    job_timeout = int(os.environ.get("WORKER_JOB_TIMEOUT_SECONDS", "120"))
    health_check_interval = 10
    # Read at import (arq needs it before startup); REDIS_URL is validated again by get_settings().
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@dataclasses.dataclass(frozen=True)
class _Finish:
    """The arguments of one arq `finish_job` call."""
    job_id: str
    finish: bool
    result_data: bytes | None
    result_timeout_s: float | None
    keep_result_forever: bool
    incr_score: int | None
    keep_in_progress: float | None


class ResilientWorker(Worker):
    """arq's Worker, waiting for Redis at start and riding out Redis outages while it runs."""

    _backoff = BACKOFF_FIRST

    async def _wait_for_backoff(self, what: str, exc: BaseException) -> None:
        log.warning("redis no disponible (%s: %s); reintento en %.1f s", what, exc.__class__.__name__,
                    self._backoff, extra={"event": "redis_unavailable"})
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    async def main(self) -> None:
        while self._pool is None:
            try:
                self._pool = await create_pool(
                    dataclasses.replace(self.redis_settings, conn_retries=0),
                    job_deserializer=self.job_deserializer, job_serializer=self.job_serializer,
                    default_queue_name=self.queue_name, expires_extra_ms=self.expires_extra_ms)
            except REDIS_DOWN as exc:
                await self._wait_for_backoff("esperando a Redis para arrancar", exc)
        self._backoff = BACKOFF_FIRST
        # arq 0.28's Worker.main, with the pause between polls cut short by a wake-up.
        log.info("Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions))
        await log_redis_info(self.pool, log.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        self._woken = asyncio.Event()
        listener = asyncio.ensure_future(self._listen_for_wakeups())
        try:
            while True:
                self._woken.clear()  # before the poll: a wake-up during it is not lost
                await self._poll_iteration()
                if self.burst:
                    if 0 <= self.max_burst_jobs <= self._jobs_started():
                        await asyncio.gather(*self.tasks.values())
                        return
                    if await self.pool.zcard(self.queue_name) == 0:
                        await asyncio.gather(*self.tasks.values())
                        return
                try:
                    await asyncio.wait_for(self._woken.wait(), self.poll_delay_s)
                except TimeoutError:
                    pass
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    _woken: asyncio.Event | None = None

    async def _listen_for_wakeups(self) -> None:
        """Poll at once when the relay queued jobs (workers/event_jobs.py publishes on the queue's `wake_channel`)
        instead of at the next poll: a request's job used to wait half a poll interval on average
        before starting. The poll interval stays the safety net: a message lost while Redis is away
        (or this subscription reconnecting) costs only that wait."""
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(wake_channel(self.queue_name))
                    async for message in pubsub.listen():
                        if message.get("type") == "message" and self._woken is not None:
                            self._woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: polling goes on; subscribe again
                log.debug("wake-up subscription lost: %r", exc)
                await asyncio.sleep(BACKOFF_MAX)

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            await self._wait_for_backoff("sondeo de trabajos", exc)
        else:
            if self._backoff != BACKOFF_FIRST:
                log.info("redis disponible de nuevo", extra={"event": "redis_back"})
                self._backoff = BACKOFF_FIRST

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, claiming the jobs of all the slots free at that moment in one round
        trip (`_START`: the same checks and in-progress mark as arq's WATCH/EXISTS/ZSCORE/MULTI,
        four round trips per job). As arq's, it waits for a slot when all are busy and goes on
        through the ids it was given, so a finishing job's slot is refilled at once. A slot is
        counted (counter + semaphore) before Redis is asked; when Redis fails there, every slot
        counted for the batch is given back (otherwise after `max_jobs` outages the worker would
        stop taking jobs)."""
        pending = [j.decode() for j in job_ids]
        while pending:
            ids: list[str] = []
            while pending and (not ids or not self.sem.locked()):
                await self.sem.acquire()  # the first of a batch waits for a slot, as arq's does
                if self.job_counter >= self.max_jobs:
                    # arq's semaphore has max_jobs + 1 permits: with every slot busy this acquire
                    # does not wait, and returning here left freed slots idle until the next poll
                    # (poll_delay, 0.5 s: stamping's batches of 20 ran ~0.1 s in every 0.5 s).
                    self.sem.release()
                    if ids:
                        break
                    await self._slot_freed()
                    continue
                self.job_counter += 1
                ids.append(pending.pop(0))
            if not ids:
                return
            try:
                started = await self.pool.eval(
                    _START, len(ids) + 1, self.queue_name, *(in_progress_key_prefix + i for i in ids),
                    timestamp_ms(), int(self.in_progress_timeout_s * 1000), *ids)
            except BaseException:
                for _ in ids:
                    self._release_sem_dec_counter_on_complete()
                raise
            scores = {started[k].decode(): int(float(started[k + 1])) for k in range(0, len(started), 2)}
            for job_id in ids:
                if job_id not in scores:  # running elsewhere, finished, or deferred again
                    self._release_sem_dec_counter_on_complete()
                    continue
                t = self.loop.create_task(self.run_job(job_id, scores[job_id]))
                t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
                self.tasks[job_id] = t

    _finishing: Coalescer | None = None

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None, result_timeout_s: float | None,
                         keep_result_forever: bool, incr_score: int | None, keep_in_progress: float | None) -> None:
        """arq's finish_job, the finishes of the jobs ending together in ONE transaction (MULTI/EXEC)
        instead of one each: a stamp batch's jobs (up to 50) end in the same loop iteration. The
        same commands per job as arq's (in-progress mark dropped, result kept as the function says,
        retry/job keys and queue entry removed, or the score moved for a Retry); while one
        transaction is on its way, the finishes arriving meanwhile wait for the next (Coalescer).
        When Redis fails every job of the transaction sees the error, as each would alone."""
        if self._finishing is None:
            self._finishing = Coalescer(self._finish_jobs, window=0, max_size=max(1, self.max_jobs))
        await self._finishing.load(_Finish(job_id, finish, result_data, result_timeout_s, keep_result_forever,
                                           incr_score, keep_in_progress))

    async def _finish_jobs(self, finishes: list[_Finish]) -> list[None]:
        async with self.pool.pipeline(transaction=True) as tr:
            for f in finishes:  # arq 0.28's Worker.finish_job, job by job
                delete_keys = []
                in_progress_key = in_progress_key_prefix + f.job_id
                if f.keep_in_progress is None:
                    delete_keys.append(in_progress_key)
                else:
                    tr.pexpire(in_progress_key, to_ms(f.keep_in_progress))
                if f.finish:
                    if f.result_data:
                        expire = None if f.keep_result_forever else f.result_timeout_s
                        tr.set(result_key_prefix + f.job_id, f.result_data, px=to_ms(expire))
                    delete_keys += [retry_key_prefix + f.job_id, job_key_prefix + f.job_id]
                    tr.zrem(abort_jobs_ss, f.job_id)
                    tr.zrem(self.queue_name, f.job_id)
                elif f.incr_score:
                    tr.zincrby(self.queue_name, f.incr_score, f.job_id)
                if delete_keys:
                    tr.delete(*delete_keys)
            await tr.execute()
        return [None] * len(finishes)

    _freed: asyncio.Event | None = None

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        if self._freed is not None:
            self._freed.set()

    async def _slot_freed(self) -> None:
        """Until a running job ends (its slot is given back)."""
        self._freed = self._freed or asyncio.Event()
        self._freed.clear()
        await self._freed.wait()

    async def close(self) -> None:
        try:
            await super().close()
        except REDIS_DOWN as exc:  # stopping while Redis is down: still run our shutdown hooks
            log.warning("redis no disponible al detener el worker: %s", exc.__class__.__name__)
            if self.on_shutdown:
                await self.on_shutdown(self.ctx)
            await self.pool.close(close_connection_pool=True)
            self._pool = None


def main() -> None:
    configure_logging("worker", os.environ.get("LOG_LEVEL", "INFO"))
    ResilientWorker(**get_kwargs(WorkerSettings)).run()


if __name__ == "__main__":
    main()
