"""Expense jobs: the event consumer that keeps the member/role projection (shared/members.py) that
approval decisions read (applying a membership event is idempotent, so redelivery needs no
bookkeeping), and OCR of uploaded receipt photos (a job per receipt, a sweep for lost jobs)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from arq.cron import cron
from arq.worker import func

from shared.db import transaction
from shared.events import Event
from shared.members import MEMBERSHIP_EVENTS, apply_membership_event
from shared.runtime import Runtime
from subgraphs.expense import service
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


CONSUMER = StreamConsumer("expense", _process, wants=MEMBERSHIP_EVENTS.__contains__)

async def ocr_receipt(ctx, receipt_id: str) -> str:
    return await service.run_ocr(ctx["runtime"], uuid.UUID(receipt_id))


async def requeue_pending_ocr(ctx) -> int:
    """Safety net: photos still PENDING a while after upload (the enqueue after commit was lost)."""
    ids = await service.pending_ocr(ctx["runtime"], timedelta(minutes=2))
    for receipt_id in ids:
        await service.enqueue_ocr(ctx["runtime"], receipt_id)
    return len(ids)


_start, _stop = background_loop("expense-consumer", lambda ctx: CONSUMER.loop(ctx["runtime"]))
# No per-job timeout: arq claims every job for the longest function timeout + 10 s, so one long
# timeout here would keep a killed worker's stamping jobs claimed that long too. OCR runs within
# the worker's job_timeout (WORKER_JOB_TIMEOUT_SECONDS, 120 s by default).
FUNCTIONS = [func(ocr_receipt, max_tries=3)]
CRON_JOBS = [cron(requeue_pending_ocr, second={30})]
STARTUP = [_start]
SHUTDOWN = [_stop]
