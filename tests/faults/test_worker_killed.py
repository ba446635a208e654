"""The stamping worker killed (SIGKILL) in the middle of a burst, and in the one window that could
cost a second timbre: after the PAC answered, before our database recorded it. After a restart
every stamp request ends STAMPED exactly once, with one UUID and one PAC record."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from redis.asyncio import Redis

from shared.config import to_plain_url
from tests.conftest import unique_email
from tests.faults.conftest import assert_each_stamped_once, stamping_record
from tests.gateway_flows import STAMP, create_invoice, new_issuer

# A killed worker's jobs are re-run once arq's claim on them lapses (job timeout + 10 s).
WORKER_ENV = {"WORKER_JOB_TIMEOUT_SECONDS": "3", "PAC_SANDBOX_LATENCY_MS": "300"}


async def _wait_status(gateway, token, ids: list[str], status: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    query = "query($id: ID!) { invoice(id: $id) { status } }"
    while True:
        got = [(await gateway.ok(query, {"id": i}, token=token))["invoice"]["status"] for i in ids]
        if all(s == status for s in got):
            return
        assert asyncio.get_running_loop().time() < deadline, f"still {got}, expected all {status}"
        await asyncio.sleep(0.3)


async def _count_pac_records(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return len([k async for k in redis.scan_iter("pac:sandbox:cfdi:*")])
    finally:
        await redis.aclose()


async def _issue(gateway, n: int) -> tuple[str, list[str]]:
    token, customer = await new_issuer(gateway, customer_email=unique_email("cliente"))
    ids = [(await create_invoice(gateway, token, customer, price=f"{100 + i}.00"))["id"] for i in range(n)]
    for i in ids:
        r = await gateway.ok(STAMP, {"id": i, "k": f"k-{i}"}, token=token)
        assert r["stampInvoice"]["invoice"]["status"] == "STAMPING", r
    return token, ids


async def test_worker_killed_mid_burst_stamps_each_invoice_once(full_stack, gateway, redis_server):
    full_stack.stop("worker")
    full_stack.start_worker(WORKER_ENV)
    token, ids = await _issue(gateway, 8)
    # Some stamped, some not: kill it with jobs in flight.
    while await _count_pac_records(redis_server.url) < 2:
        await asyncio.sleep(0.05)
    full_stack.kill("worker")
    assert await _count_pac_records(redis_server.url) < len(ids), "the burst ended before the kill"
    full_stack.start_worker(WORKER_ENV)

    await _wait_status(gateway, token, ids, "STAMPED")
    await _wait_outbox_drained(full_stack.env["DATABASE_URL"], ids)
    assert_each_stamped_once(await stamping_record(full_stack.env["DATABASE_URL"], redis_server.url, ids), ids)


async def _wait_outbox_drained(database_url: str, ids: list[str], timeout: float = 30) -> None:
    conn = await asyncpg.connect(to_plain_url(database_url))
    try:
        for _ in range(int(timeout / 0.1)):
            left = await conn.fetchval("SELECT count(*) FROM invoice.outbox WHERE delivered_at IS NULL")
            if left == 0:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{left} outbox rows still undelivered")
    finally:
        await conn.close()


async def test_worker_killed_after_the_pac_answered_recovers_the_same_timbre(full_stack, gateway, redis_server):
    full_stack.stop("worker")
    token, (invoice_id,) = await _issue(gateway, 1)
    db = await asyncpg.connect(to_plain_url(full_stack.env["DATABASE_URL"]))
    try:
        # Hold the invoice outbox: the worker gets the PAC's answer, then blocks on writing the
        # InvoiceStamped event, inside the transaction that would record the timbre.
        tx = db.transaction()
        await tx.start()
        await db.execute("LOCK TABLE invoice.outbox IN SHARE MODE")
        full_stack.start_worker(WORKER_ENV)
        while await _count_pac_records(redis_server.url) < 1:
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
    await _wait_status(gateway, token, [invoice_id], "STAMPED")
    await _wait_outbox_drained(full_stack.env["DATABASE_URL"], [invoice_id])
    record = await stamping_record(full_stack.env["DATABASE_URL"], redis_server.url, [invoice_id])
    assert_each_stamped_once(record, [invoice_id])  # the same timbre, never a second PAC request that stamped
    history = await gateway.ok("query($id: ID!) { invoice(id: $id) { history { toStatus reason } } }",
                               {"id": invoice_id}, token=token)
    assert {"toStatus": "STAMPED", "reason": "Timbre recuperado (ya timbrado)"} in history["invoice"]["history"]
