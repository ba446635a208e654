"""The stamping worker killed (SIGKILL) in the middle of a burst, and in the one window that could
cost a second timbre: after the PAC answered, before our database recorded it. After a restart
every stamp request ends STAMPED exactly once, with one UUID and one PAC record."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from shared.config import to_plain_url
from tests.faults.helpers import (WORKER_ENV, assert_each_stamped_once, count_pac_records, issue_and_request_stamps,
                                  stamping_record, wait_outbox_drained, wait_status)
from redis.asyncio import Redis


async def in_flight_stamps(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return len([k async for k in redis.scan_iter("arq:in-progress:stamp:*")])
    finally:
        await redis.aclose()


async def test_worker_killed_mid_burst_stamps_each_invoice_once(full_stack, gateway, redis_server, mailbox):
    slow_pac = {**WORKER_ENV, "PAC_SANDBOX_LATENCY_MS": "1500"}  # requests are still in flight at the kill

    def slow_worker():
        full_stack.stop("worker")
        full_stack.start_worker(slow_pac)

    token, ids = await issue_and_request_stamps(gateway, mailbox, 8, before_stamping=slow_worker)
    # Kill it with jobs in flight: stamping jobs claimed and waiting on the (slow) PAC. arq runs
    # them concurrently, so waiting for a first PAC record would often see the whole burst done.
    while not await in_flight_stamps(redis_server.url):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    full_stack.kill("worker")
    assert await count_pac_records(redis_server.url) < len(ids), "the burst ended before the kill"
    full_stack.start_worker(WORKER_ENV)

    try:
        await wait_status(gateway, token, ids, "STAMPED")
    except AssertionError as exc:  # say what the restarted worker did
        raise AssertionError(f"{exc}\n--- worker log ---\n{full_stack.log('worker', 6000)}") from None
    await wait_outbox_drained(full_stack.env["DATABASE_URL"])
    assert_each_stamped_once(await stamping_record(full_stack.env["DATABASE_URL"], redis_server.url, ids), ids)


async def test_worker_killed_after_the_pac_answered_recovers_the_same_timbre(full_stack, gateway, redis_server, mailbox):
    token, (invoice_id,) = await issue_and_request_stamps(gateway, mailbox, 1,
                                                          before_stamping=lambda: full_stack.stop("worker"))
    db = await asyncpg.connect(to_plain_url(full_stack.env["DATABASE_URL"]))
    try:
        # Hold the invoice outbox: the worker gets the PAC's answer, then blocks on writing the
        # InvoiceStamped event, inside the transaction that would record the timbre.
        tx = db.transaction()
        await tx.start()
        await db.execute("LOCK TABLE invoice.outbox IN SHARE MODE")
        full_stack.start_worker(WORKER_ENV)
        while await count_pac_records(redis_server.url) < 1:
            await asyncio.sleep(0.05)
        while not await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'invoice.outbox'::regclass"):
            await asyncio.sleep(0.05)
        full_stack.kill("worker")  # the PAC has stamped; our database never recorded it
        await tx.rollback()
        status = await db.fetchval("SELECT status FROM invoice.invoices WHERE id = $1", uuid.UUID(invoice_id))
        assert status == "STAMPING"
    finally:
        await db.close()

    full_stack.start_worker(WORKER_ENV)
    await wait_status(gateway, token, [invoice_id], "STAMPED")
    await wait_outbox_drained(full_stack.env["DATABASE_URL"])
    record = await stamping_record(full_stack.env["DATABASE_URL"], redis_server.url, [invoice_id])
    assert_each_stamped_once(record, [invoice_id])  # the same timbre, never a second PAC request that stamped
    history = await gateway.ok("query($id: ID!) { invoice(id: $id) { history { toStatus reason } } }",
                               {"id": invoice_id}, token=token)
    assert {"toStatus": "STAMPED", "reason": "Timbre recuperado (ya timbrado)"} in history["invoice"]["history"]
