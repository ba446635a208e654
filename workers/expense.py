"""Expense's event consumer: keeps the member/role projection (shared/members.py) that approval
decisions read. Applying a membership event is idempotent, so redelivery needs no bookkeeping."""

from __future__ import annotations

import logging

from shared.db import transaction
from shared.events import Event
from shared.members import MEMBERSHIP_EVENTS, apply_membership_event
from shared.runtime import Runtime
from subgraphs.expense.models import members
from workers.background import background_loop
from workers.consumer import StreamConsumer

log = logging.getLogger(__name__)


async def _process(rt: Runtime, msg_id: bytes, fields: dict) -> None:
    try:
        event = Event.model_validate_json(fields.get(b"event"))
    except Exception:  # noqa: BLE001 - a malformed entry can never succeed
        await CONSUMER.dead_letter(rt, msg_id, fields, "unreadable")
        return
    if event.type in MEMBERSHIP_EVENTS:
        async with transaction(rt.sessionmaker) as session:
            await apply_membership_event(session, members, event)


CONSUMER = StreamConsumer("expense", _process)

_start, _stop = background_loop("expense-consumer", lambda ctx: CONSUMER.loop(ctx["runtime"]))
STARTUP = [_start]
SHUTDOWN = [_stop]
