"""Redis restarted in the middle of the flow: nothing lost, nothing acted on twice.

Events A and B are relayed (marked delivered: they now live only in the stream), Redis restarts,
event C is written while Redis is down; afterwards every event yields exactly one in-app
notification, even when the stream hands an event out again."""

from __future__ import annotations

import signal
import uuid

from sqlalchemy import func, select

from shared import embedded
from shared.bus import EVENTS_STREAM, stream_fields
from shared.runtime import build_runtime
from subgraphs.notification.models import Notification
from tests.events.helpers import emit_auth, invoice_stamped
from workers.notifications import consume_once
from workers.relay import relay_once


async def _drain(rt) -> None:
    for _ in range(10):
        if await consume_once(rt, block_ms=50) == 0:
            return


async def _relay_until_done(rt) -> None:
    for _ in range(5):  # the first command after a restart may meet a stale pooled connection
        await relay_once(rt)


async def test_redis_restart_mid_flow_loses_nothing_and_duplicates_nothing(settings, tmp_path):
    proc, url = embedded.start_redis(workdir=tmp_path, persistent=True)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    rt = build_runtime("redis-restart-test", settings.model_copy(update={"redis_url": url}))
    user, org = uuid.uuid4(), uuid.uuid4()
    try:
        a = await emit_auth(rt, invoice_stamped(created_by=user), organization_id=org)
        b = await emit_auth(rt, invoice_stamped(created_by=user), organization_id=org)
        await _relay_until_done(rt)

        proc.send_signal(signal.SIGTERM)  # a restart, as an operator or the OS would do it
        proc.wait(10)
        c = await emit_auth(rt, invoice_stamped(created_by=user), organization_id=org)
        await relay_once(rt)  # fails: Redis is down; C stays in the outbox
        proc, _ = embedded.start_redis(port=port, workdir=tmp_path, persistent=True)

        await _relay_until_done(rt)
        await _drain(rt)
        # The stream hands A out again (at-least-once): the consumer must not act twice.
        await rt.redis.xadd(EVENTS_STREAM, stream_fields(a))
        await _drain(rt)

        async with rt.sessionmaker() as s:
            rows = (await s.execute(select(Notification.event_id, func.count()).where(Notification.user_id == user)
                                    .group_by(Notification.event_id))).all()
        assert dict(rows) == {a.id: 1, b.id: 1, c.id: 1}
    finally:
        await rt.close()
        proc.kill()
        proc.wait(5)
