"""The arq side: jobs go through a real arq Worker (burst mode) and the crons do their part."""

from __future__ import annotations

import uuid
from datetime import timedelta

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker
from sqlalchemy import select, update

from subgraphs.invoice import models as m
from subgraphs.invoice import service
from workers import stamping


async def _run_worker(runtime) -> None:
    async def startup(ctx):
        ctx["runtime"] = runtime

    pool = await create_pool(RedisSettings.from_dsn(runtime.settings.redis_url))
    worker = Worker(functions=stamping.FUNCTIONS, redis_pool=pool, burst=True, on_startup=startup, poll_delay=0.05,
                    max_jobs=5, handle_signals=False)
    try:
        await worker.main()
    finally:
        await pool.aclose()


async def test_stamp_invoice_enqueues_a_job_the_worker_runs(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"], "via-arq")
    await _run_worker(runtime)
    got = await org.get(inv["id"])
    assert got["status"] == "STAMPED", got


async def test_sweep_reenqueues_invoices_stuck_in_stamping(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"], "lost")
    # Simulate a crash between commit and enqueue: drop the queued job, age the row.
    pool = ArqRedis(connection_pool=runtime.redis.connection_pool)
    await pool.delete("arq:queue", f"arq:job:{service.stamp_job_id(inv['id'], 'lost')}")
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(update(m.Invoice).where(m.Invoice.id == uuid.UUID(inv["id"]))
                              .values(updated_at=service.utcnow() - timedelta(minutes=10)))
    assert await stamping.sweep_stuck_stamping({"runtime": runtime}) >= 1
    await _run_worker(runtime)
    assert (await org.get(inv["id"]))["status"] == "STAMPED"


async def test_csd_expiring_is_announced_once(org, runtime):
    org_id = uuid.UUID(org.account.org_id)
    async with runtime.sessionmaker() as session:
        cert = await session.scalar(select(m.Certificate).where(m.Certificate.organization_id == org_id))
    soon = cert.valid_to - timedelta(days=10)
    assert await service.notify_expiring_csds(runtime, now=soon) >= 1
    assert await service.notify_expiring_csds(runtime, now=soon) == 0
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(select(m.outbox.c.payload).where(
            m.outbox.c.type == "invoice.csd_expiring", m.outbox.c.organization_id == org_id))).all()
    assert len(rows) == 1
    assert rows[0][0]["certificate_number"] == "30001000000500003416" and rows[0][0]["days_left"] == 10


async def test_demo_issuer_seed_is_idempotent(runtime):
    from subgraphs.invoice.demo import ensure_demo_issuer

    org_id = uuid.uuid4()
    assert await ensure_demo_issuer(runtime, org_id) is True
    assert await ensure_demo_issuer(runtime, org_id) is False
    async with runtime.sessionmaker() as session:
        issuer = await service.get_issuer(session, org_id)
        csd = await service.active_csd(session, org_id)
    assert issuer.rfc == "EKU9003173C9" and issuer.postal_code == "42501"
    assert csd.certificate_number == "30001000000500003416"
