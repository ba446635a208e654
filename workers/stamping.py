"""Stamping and cancellation jobs: the slow, external part of invoicing (the PAC).

- `stamp_invoice_job(ctx, invoice_id)`: enqueued after `stampInvoice` commits (job id
  `stamp:{invoice_id}:{idempotency_key}`, so arq dedupes). Idempotent: an invoice no longer in
  STAMPING is left alone; a PAC "already stamped" answer recovers the timbre; `FOR UPDATE SKIP
  LOCKED` keeps two workers off one invoice; transient PAC errors retry with backoff, permanent
  ones end in STAMP_FAILED.
- `sweep_stuck_stamping` (cron, every minute): re-enqueues invoices left in STAMPING, so a crash
  between the commit and the enqueue loses nothing.
- `poll_cancellation_job` / `poll_cancellations` (cron): asks the PAC about cancellations waiting
  for the receiver's answer.
- `notify_expiring_csds` (cron, daily): CsdExpiring once per certificate, 30 days before expiry.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from arq import Retry, cron

from subgraphs.invoice import service

log = logging.getLogger(__name__)

MAX_TRIES = 5


def _backoff(job_try: int) -> int:
    return min(300, 5 * 2 ** (job_try - 1))  # 5, 10, 20, 40 s ...


async def stamp_invoice_job(ctx, invoice_id: str) -> str:
    job_try = int(ctx.get("job_try") or 1)
    outcome = await service.stamp_invoice(ctx["runtime"], uuid.UUID(str(invoice_id)), attempt=job_try,
                                          max_attempts=MAX_TRIES, pac=ctx.get("pac"))
    if outcome.retry:
        log.warning("PAC transient error, retrying", extra={"invoice_id": str(invoice_id), "job_try": job_try})
        raise Retry(defer=_backoff(job_try))
    return outcome.status


async def sweep_stuck_stamping(ctx) -> int:
    rt = ctx["runtime"]
    stuck = await service.stuck_stamping(rt)
    minute = datetime.now(timezone.utc).strftime("%Y%m%d%H%M")
    for invoice_id, key in stuck:
        await service.enqueue_stamp(rt, invoice_id, key, job_id=f"{service.stamp_job_id(invoice_id, key)}:sweep:{minute}")
    return len(stuck)


async def poll_cancellation_job(ctx, invoice_id: str) -> str:
    return await service.poll_cancellation(ctx["runtime"], uuid.UUID(str(invoice_id)), pac=ctx.get("pac"))


async def poll_cancellations(ctx) -> int:
    ids = await service.pending_cancellations(ctx["runtime"])
    for invoice_id in ids:
        try:
            await service.poll_cancellation(ctx["runtime"], invoice_id, pac=ctx.get("pac"))
        except Exception:  # noqa: BLE001 - one bad answer must not stop the others
            log.exception("cancellation poll failed", extra={"invoice_id": str(invoice_id)})
    return len(ids)


async def notify_expiring_csds(ctx) -> int:
    return await service.notify_expiring_csds(ctx["runtime"])


FUNCTIONS = [stamp_invoice_job, poll_cancellation_job]
CRON_JOBS = [
    cron(sweep_stuck_stamping, second=30, run_at_startup=True),
    cron(poll_cancellations, minute=set(range(0, 60, 5)), second=0),
    cron(notify_expiring_csds, hour=13, minute=0, second=0, run_at_startup=True),
]
