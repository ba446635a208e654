"""The worker's expense consumer keeps the role projection approvals read, from the real stream."""

from __future__ import annotations

import uuid

from shared.bus import EVENTS_STREAM, stream_fields
from shared.events import MemberJoined, MemberRoleChanged, make_event
from shared.members import role_of
from subgraphs.expense.models import members
from workers.expense import CONSUMER


async def test_membership_events_on_the_stream_reach_the_projection(runtime):
    org, user = uuid.uuid4(), uuid.uuid4()
    await CONSUMER.consume_once(runtime)  # drain what earlier tests left
    for payload in (MemberJoined(user_id=user, role="MEMBER"),
                    MemberRoleChanged(user_id=user, old_role="MEMBER", new_role="OWNER")):
        await runtime.redis.xadd(EVENTS_STREAM, stream_fields(make_event(payload, organization_id=org, actor_id=None)))
    await runtime.redis.xadd(EVENTS_STREAM, {"event": "not json"})
    assert await CONSUMER.consume_once(runtime) == 3
    async with runtime.sessionmaker() as s:
        assert await role_of(s, members, org, user) == "OWNER"
    dead = await runtime.redis.xrange(CONSUMER.dead_letter_stream)
    assert any(f[b"event"] == b"not json" for _, f in dead)
