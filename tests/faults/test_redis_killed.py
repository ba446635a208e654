"""Redis killed hard (SIGKILL) while events flow: the worker stays up, delivery resumes when Redis
is back, and every e-mail those events owe is sent exactly once, the outbox drained."""

from __future__ import annotations

import asyncio
import signal

from tests.conftest import unique_email
from tests.faults.helpers import WORKER_ENV, wait_outbox_drained
from tests.faults.test_mail_down import SIGN_UP, _mail_rows
from tests.gateway_flows import PASSWORD


async def test_redis_sigkilled_mid_flow_loses_and_duplicates_no_mail(full_stack, gateway, mailbox, redis_server):
    full_stack.stop("worker")
    full_stack.start_worker(WORKER_ENV)
    addresses = [unique_email("redis-kill") for _ in range(4)]
    for address in addresses:
        r = await gateway.ok(SIGN_UP, {"i": {"email": address, "password": PASSWORD, "fullName": "Ana Redis",
                                             "organizationName": "Redis SA"}})
        assert r["signUp"]["userErrors"] == []
    redis_server.stop(signal.SIGKILL)  # whatever was in flight: relayed or not, queued or sending
    await asyncio.sleep(1)  # the worker's loops and jobs meet the outage
    assert full_stack.procs["worker"].poll() is None, full_stack.log("worker")
    redis_server.start()

    for address in addresses:
        await mailbox.wait_for(address, timeout=60)
    await wait_outbox_drained(full_stack.env["DATABASE_URL"])
    rows = await _mail_rows(full_stack.env["DATABASE_URL"], addresses)
    assert sorted((r["to_address"], r["status"]) for r in rows) == sorted((a, "sent") for a in addresses)
    assert all(len(mailbox.to(a)) == 1 for a in addresses)
    assert full_stack.procs["worker"].poll() is None
