"""Helpers of the fault suite: polling, client steps through the gateway, and what the database
and the sandbox PAC hold for the "nothing lost, nothing twice" checks."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
from redis.asyncio import Redis

from shared.config import to_plain_url
from shared.migrations import SERVICES
from tests.conftest import unique_email
from tests.gateway_flows import STAMP, create_invoice, new_issuer

# A killed worker's jobs are re-run once arq's claim on them lapses (job timeout + 10 s); the
# timeout still leaves a loaded machine room for a stamp (a timed-out job is cancelled midway).
WORKER_ENV = {"WORKER_JOB_TIMEOUT_SECONDS": "10", "PAC_SANDBOX_LATENCY_MS": "300"}


def wait_until(predicate, what: str, timeout: float = 30, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail saying `what` never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


async def wait_status(gateway, token, ids: list[str], status: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    query = "query($id: ID!) { invoice(id: $id) { status } }"
    while True:
        # While a backend recovers a read may fail: that is the fault under test, so ask again.
        got = [((await gateway.execute(query, {"id": i}, token=token)).data or {}).get("invoice") for i in ids]
        got = [g and g["status"] for g in got]
        if all(s == status for s in got):
            return
        assert asyncio.get_running_loop().time() < deadline, f"still {got}, expected all {status}"
        await asyncio.sleep(0.3)


async def count_pac_records(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return len([k async for k in redis.scan_iter("pac:sandbox:cfdi:*")])
    finally:
        await redis.aclose()


async def issue_and_request_stamps(gateway, mailbox, n: int, *, before_stamping=None) -> tuple[str, list[str]]:
    """A new issuer (signed up by the mailed link: the worker must be running for that) requests `n`
    stamps; `before_stamping()` runs once the issuer exists, e.g. to stop the worker first."""
    token, customer = await new_issuer(gateway, mailbox, customer_email=unique_email("cliente"))
    if before_stamping is not None:
        before_stamping()
    ids = [(await create_invoice(gateway, token, customer, price=f"{100 + i}.00"))["id"] for i in range(n)]
    for i in ids:
        r = await gateway.ok(STAMP, {"id": i, "k": f"k-{i}"}, token=token)
        assert r["stampInvoice"]["invoice"]["status"] == "STAMPING", r
    return token, ids


async def wait_outbox_drained(database_url: str, timeout: float = 30) -> None:
    """Every service's outbox delivered (the relay caught up after the fault)."""
    conn = await asyncpg.connect(to_plain_url(database_url))
    try:
        for _ in range(int(timeout / 0.1)):
            left = sum([await conn.fetchval(f"SELECT count(*) FROM {s}.outbox WHERE delivered_at IS NULL")
                        for s in SERVICES if await conn.fetchval("SELECT to_regclass($1)", f"{s}.outbox")])
            if left == 0:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{left} outbox rows still undelivered")
    finally:
        await conn.close()


async def stamping_record(database_url: str, redis_url: str, invoice_ids: list[str]) -> dict:
    """Per invoice: status, UUID, how many times it entered STAMPED and how many InvoiceStamped
    events it emitted; plus every UUID the sandbox PAC ever issued (one record per timbre)."""
    conn = await asyncpg.connect(to_plain_url(database_url))
    try:
        rows = await conn.fetch(
            """SELECT i.id::text AS id, i.status, i.uuid, i.series,
                      (SELECT count(*) FROM invoice.invoice_events e WHERE e.invoice_id = i.id AND e.to_status = 'STAMPED') AS stamped,
                      (SELECT count(*) FROM invoice.outbox o WHERE o.aggregate_id = 'invoice:' || i.id::text AND o.type = 'invoice.stamped') AS events,
                      (SELECT count(*) FROM invoice.outbox o WHERE o.aggregate_id = 'invoice:' || i.id::text AND o.delivered_at IS NULL) AS undelivered
               FROM invoice.invoices i WHERE i.id = ANY($1::uuid[])""", invoice_ids)
    finally:
        await conn.close()
    redis = Redis.from_url(redis_url)
    try:
        # Only this test's timbres: every test organization stamps with a series of its own.
        series = {f'Serie="{r["series"]}"' for r in rows}
        records = [json.loads(await redis.get(k)) async for k in redis.scan_iter("pac:sandbox:cfdi:*")]
        pac_uuids = sorted(r["uuid"] for r in records if any(s in r["xml"] for s in series))
    finally:
        await redis.aclose()
    return {"invoices": {r["id"]: dict(r) for r in rows}, "pac_uuids": pac_uuids}


def assert_each_stamped_once(record: dict, invoice_ids: list[str]) -> None:
    invoices = record["invoices"]
    assert sorted(invoices) == sorted(invoice_ids)
    for inv in invoices.values():
        assert (inv["status"], inv["stamped"], inv["events"], inv["undelivered"]) == ("STAMPED", 1, 1, 0), inv
    # One PAC record per stamp request, and it is the one we recorded: no second timbre anywhere.
    assert sorted(inv["uuid"] for inv in invoices.values()) == record["pac_uuids"]
