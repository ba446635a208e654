"""PostgreSQL restarted, then killed (SIGKILL), while invoices are being stamped: the client is told
to retry while the database is away, the stack comes back without a hand on it, and every stamp
request ends STAMPED once with one UUID and one PAC record, the outbox drained."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.helpers import (WORKER_ENV, assert_each_stamped_once, issue_and_request_stamps, stamping_record,
                                  wait_outbox_drained, wait_status)


@pytest.mark.parametrize("fault", ["restart", "kill"])
async def test_stamping_rides_out_postgres_going_away(fault, full_stack, gateway, redis_server, pg_server, mailbox):
    full_stack.stop("worker")
    full_stack.start_worker(WORKER_ENV)
    token, ids = await issue_and_request_stamps(gateway, mailbox, 6)
    pg_server.stop() if fault == "restart" else pg_server.kill()

    r = await gateway.execute("query($id: ID!) { invoice(id: $id) { status } }", {"id": ids[0]}, token=token)
    assert r.errors and r.data in (None, {"invoice": None}), r  # not a silent empty answer
    await asyncio.sleep(1)  # the worker meets the outage mid-burst
    pg_server.start()

    await wait_status(gateway, token, ids, "STAMPED")
    await wait_outbox_drained(full_stack.env["DATABASE_URL"])
    assert_each_stamped_once(await stamping_record(full_stack.env["DATABASE_URL"], redis_server.url, ids), ids)
