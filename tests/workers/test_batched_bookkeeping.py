"""workers.main's ResilientWorker: jobs started together in one script, finished together in one
transaction, with arq's semantics kept: results as each function keeps them, a Retry re-queued
with its delay and run again with the next job_try, a finished job's keys gone (its id free again
when it keeps no result, a no-op while its result is kept)."""

from __future__ import annotations

import asyncio
import uuid

from arq import Retry
from arq.connections import RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import Job, JobStatus
from arq.worker import func

from workers.main import ResilientWorker


async def _ok(ctx, n: int) -> int:
    together = ctx["together"]  # the eight end in the same loop iteration, as a stamp batch's jobs do
    together["running"] += 1
    if together["running"] == 8:
        together["all"].set()
    await together["all"].wait()
    return n * 10


async def _flaky(ctx) -> int:
    if ctx["job_try"] == 1:
        raise Retry(defer=0.2)
    return ctx["job_try"]


async def _forgetful(ctx) -> str:
    return "done"


async def test_jobs_ending_together_finish_in_one_transaction_with_arqs_semantics(redis_url, monkeypatch):
    queue = f"test:queue:{uuid.uuid4().hex}"
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    batches: list[list[str]] = []
    real = ResilientWorker._finish_jobs

    async def recording(self, finishes):
        batches.append([f.job_id for f in finishes])
        return await real(self, finishes)

    monkeypatch.setattr(ResilientWorker, "_finish_jobs", recording)
    tag = uuid.uuid4().hex
    ok_ids = [f"ok:{tag}:{n}" for n in range(8)]
    for n, job_id in enumerate(ok_ids):
        await pool.enqueue_job("_ok", n, _job_id=job_id)
    await pool.enqueue_job("_flaky", _job_id=f"flaky:{tag}")
    await pool.enqueue_job("_forgetful", _job_id=f"forgetful:{tag}")
    worker = ResilientWorker(functions=[func(_ok, name="_ok"), func(_flaky, name="_flaky"),
                                        func(_forgetful, name="_forgetful", keep_result=0)],
                             redis_pool=pool, queue_name=queue, burst=True, poll_delay=0.05, max_jobs=20,
                             handle_signals=False, ctx={"together": {"running": 0, "all": asyncio.Event()}})
    try:
        await worker.main()
        # One transaction for the jobs that ended together (not one each).
        assert max(len(b) for b in batches) >= 8
        assert sorted(j for b in batches for j in b) == sorted(ok_ids + [f"flaky:{tag}"] * 2 + [f"forgetful:{tag}"])
        for n, job_id in enumerate(ok_ids):
            info = await Job(job_id, pool, _queue_name=queue).result_info()
            assert info.success and info.result == n * 10 and info.job_try == 1
        flaky = await Job(f"flaky:{tag}", pool, _queue_name=queue).result_info()
        assert flaky.success and flaky.result == 2 and flaky.job_try == 2  # retried once, with its job_try
        assert worker.jobs_retried == 1 and worker.jobs_complete == 10
        for job_id in ok_ids + [f"flaky:{tag}", f"forgetful:{tag}"]:
            assert not await pool.exists(job_key_prefix + job_id, retry_key_prefix + job_id,
                                         in_progress_key_prefix + job_id)
        assert await pool.zcard(queue) == 0
        # A kept result makes the id a no-op; no result kept: the id is free for the next request.
        assert await pool.enqueue_job("_ok", 1, _job_id=ok_ids[0]) is None
        assert not await pool.exists(result_key_prefix + f"forgetful:{tag}")
        again = await pool.enqueue_job("_forgetful", _job_id=f"forgetful:{tag}")
        assert again is not None and await again.status() == JobStatus.queued
    finally:
        await pool.delete(queue, *(result_key_prefix + j for j in ok_ids + [f"flaky:{tag}"]),
                          job_key_prefix + f"forgetful:{tag}")
        await pool.aclose()
