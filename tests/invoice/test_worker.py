"""The arq side: jobs are queued from the outbox by the relay, run by a real arq Worker (burst
mode), and the sweep finds what a lost job left behind."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name, job_key_prefix
from arq.worker import Worker
from redis.asyncio import Redis
from sqlalchemy import select, update

from shared.config import SettingsError
from subgraphs.invoice import models as m
from subgraphs.invoice import service
from subgraphs.invoice.settings import load_invoice_settings
from tests.invoice.conftest import CANCEL, pac_env
from workers import stamping
from workers.relay import relay_schema


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


async def _relay(runtime) -> None:
    """Deliver the invoice outbox (what the relay loop does on NOTIFY)."""
    while await relay_schema(runtime, "invoice"):
        pass


async def _job_alive(runtime, job_id: str) -> bool:
    return bool(await runtime.redis.exists(job_key_prefix + job_id))


def _redis_down(runtime):
    """The same service with Redis unreachable (nothing listens on port 1)."""
    return dataclasses.replace(runtime, redis=Redis.from_url("redis://127.0.0.1:1/0"))


async def _undelivered(runtime, invoice_id: str, event_type: str) -> bool:
    async with runtime.sessionmaker() as session:
        return await session.scalar(select(m.outbox.c.delivered_at.is_(None)).where(
            m.outbox.c.aggregate_id == f"invoice:{invoice_id}", m.outbox.c.type == event_type))


async def test_a_stamp_request_is_queued_by_the_relay_from_its_outbox_event(org, runtime):
    inv = await org.create_invoice()
    assert (await org.stamp(inv["id"], "via-outbox"))["status"] == "STAMPING"
    job_id = service.stamp_job_id(inv["id"])
    assert not await _job_alive(runtime, job_id)  # the request itself queues nothing ...
    await _relay(runtime)
    assert await _job_alive(runtime, job_id)  # ... its committed event does
    assert not await _undelivered(runtime, inv["id"], "invoice.stamping_requested")
    await _run_worker(runtime)
    assert (await org.get(inv["id"]))["status"] == "STAMPED"


async def test_a_request_accepted_while_redis_is_down_reaches_the_worker_when_it_is_back(org, runtime):
    inv = await org.create_invoice()
    down = _redis_down(runtime)
    try:
        accepted = await service.request_stamp(down, uuid.UUID(org.account.org_id), uuid.uuid4(),
                                               uuid.UUID(inv["id"]), "redis-down")
        assert accepted.status == "STAMPING"
        assert await relay_schema(down, "invoice") == 0  # Redis still down: the row stays pending
    finally:
        await down.redis.aclose()
    assert await _undelivered(runtime, inv["id"], "invoice.stamping_requested")
    assert not await _job_alive(runtime, service.stamp_job_id(inv["id"]))
    await _relay(runtime)  # Redis is back
    assert await _job_alive(runtime, service.stamp_job_id(inv["id"]))
    await _run_worker(runtime)
    assert (await org.get(inv["id"]))["status"] == "STAMPED"


async def test_relaying_an_event_twice_queues_one_job(org, runtime):
    from shared.events import Event
    from workers.event_jobs import enqueue_event_jobs

    inv = await org.create_invoice()
    await org.stamp(inv["id"], "twice")
    async with runtime.sessionmaker() as session:
        row = (await session.execute(select(m.outbox).where(m.outbox.c.aggregate_id == f"invoice:{inv['id']}",
                                                            m.outbox.c.type == "invoice.stamping_requested"))).one()
    ev = Event(id=row.event_id, type=row.type, version=row.version, organization_id=row.organization_id,
               actor_id=row.actor_id, aggregate_id=row.aggregate_id, occurred_at=row.occurred_at, payload=row.payload)
    await runtime.redis.delete(job_key_prefix + service.stamp_job_id(inv["id"]))
    assert await enqueue_event_jobs(runtime.redis, [ev]) == 1
    assert await enqueue_event_jobs(runtime.redis, [ev, ev]) == 0  # a crash-and-redeliver changes nothing


async def test_sweep_requeues_an_invoice_whose_job_was_lost_and_leaves_live_jobs_alone(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"], "lost")
    await _relay(runtime)
    job_id = service.stamp_job_id(inv["id"])
    # The job is lost (Redis lost its data, or a worker died past arq's retries); the row ages.
    pool = ArqRedis(connection_pool=runtime.redis.connection_pool)
    await pool.zrem(default_queue_name, job_id)
    await pool.delete(job_key_prefix + job_id)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(update(m.Invoice).where(m.Invoice.id == uuid.UUID(inv["id"]))
                              .values(updated_at=service.utcnow() - timedelta(minutes=1)))
    assert await stamping.sweep_waiting({"runtime": runtime}) >= 1
    assert await _job_alive(runtime, job_id)
    assert await stamping.sweep_waiting({"runtime": runtime}) == 0  # its job is alive: nothing more
    await _run_worker(runtime)
    assert (await org.get(inv["id"]))["status"] == "STAMPED"


async def test_cancel_answers_at_once_even_when_the_pac_would_block(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"], "to-cancel")
    await _relay(runtime)
    await _run_worker(runtime)
    with pac_env(PAC_SANDBOX_LATENCY_MS="600000"):  # a PAC call would take ten minutes
        # The bound only catches a request that waits on the PAC; it is never close.
        out = (await asyncio.wait_for(org.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}), 60))["cancelInvoice"]
    assert out["userErrors"] == [] and out["invoice"]["status"] == "CANCELLING"
    got = await org.get(inv["id"])
    assert [h["toStatus"] for h in got["history"]][-1] == "CANCELLING"
    await _relay(runtime)
    assert await _job_alive(runtime, service.cancel_job_id(inv["id"]))
    await _run_worker(runtime)
    assert (await org.get(inv["id"]))["status"] == "CANCELLED"


async def test_a_pac_refusal_ends_the_cancellation_in_cancellation_failed(org, job_ctx, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"], "refused")
    assert await stamping.stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    await org.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None})

    class RefusingPac:
        async def cancel(self, *args):
            from sat.pac import PacError
            raise PacError("205", "UUID no encontrado en el SAT.")

    assert await stamping.cancel_invoice_job({**job_ctx, "pac": RefusingPac()}, inv["id"]) == "CANCELLATION_FAILED"
    got = await org.get(inv["id"])
    assert (got["status"], got["pacCode"]) == ("CANCELLATION_FAILED", "PAC_205")
    async with runtime.sessionmaker() as session:
        types = (await session.scalars(select(m.outbox.c.type).where(
            m.outbox.c.aggregate_id == f"invoice:{inv['id']}").order_by(m.outbox.c.id))).all()
    assert types[-1] == "invoice.cancellation_failed"
    # Still valid: it may be asked again, and this time the PAC cancels it.
    again = (await org.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert again["invoice"]["status"] == "CANCELLING"
    assert await stamping.cancel_invoice_job(job_ctx, inv["id"]) == "CANCELLED"


def test_an_unknown_pac_provider_refuses_to_start():
    with pytest.raises(SettingsError) as err:
        load_invoice_settings(pac_provider="finkok-typo")
    assert "PAC_PROVIDER" in str(err.value) and "sandbox" in str(err.value)
    assert load_invoice_settings(pac_provider=" Sandbox ").pac_provider == "sandbox"


async def test_the_worker_and_the_service_refuse_an_unknown_pac_provider(runtime, settings, monkeypatch):
    from subgraphs.invoice.app import create_app
    from tests.conftest import running_app

    monkeypatch.setenv("PAC_PROVIDER", "nope")
    with pytest.raises(SettingsError):
        await stamping.startup({"runtime": runtime})
    with pytest.raises(SettingsError):
        async with running_app(create_app(settings)):
            pass


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


async def test_a_pac_that_never_answers_is_a_transient_timeout(org, job_ctx, monkeypatch):
    from arq import Retry

    from subgraphs.invoice.service import common

    monkeypatch.setattr(common, "get_invoice_settings", lambda: load_invoice_settings(pac_timeout_seconds=0.01))

    class HungPac:
        async def stamp(self, xml):
            await asyncio.Event().wait()  # never answers

    inv = await org.create_invoice()
    await org.stamp(inv["id"], "hung")
    with pytest.raises(Retry):  # the job is freed and retried later, the invoice stays STAMPING
        await stamping.stamp_invoice_job({**job_ctx, "pac": HungPac()}, inv["id"])
    got = await org.get(inv["id"])
    assert (got["status"], got["pacCode"]) == ("STAMPING", "PAC_TIMEOUT")
    monkeypatch.undo()
    assert await stamping.stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
