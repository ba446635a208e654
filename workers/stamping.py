"""Stamping and cancellation jobs: the slow, external part of invoicing (the PAC).

How work gets here: `stampInvoice` / `cancelInvoice` commit a status change with its event
(`invoice.stamping_requested` / `invoice.cancellation_requested`); the relay, delivering that
outbox row, queues the job named in EVENT_JOBS with one job id per invoice (arq refuses a second
while one is queued, deferred or running). A row stays undelivered until Redis took the job, so
an accepted request reaches a worker within seconds of Redis being back.

- `stamp_invoice_job(ctx, invoice_id)`: idempotent (an invoice no longer in STAMPING is left
  alone; a PAC "already stamped" answer recovers the timbre; `FOR UPDATE SKIP LOCKED` keeps two
  workers off one invoice); transient PAC errors retry with backoff, permanent ones STAMP_FAILED.
  The jobs running at once in this process are stamped in batches (service/stamp_batch.py: one
  claim, one sealing hop, one finish for many invoices), each job answering for its own invoice.
- `cancel_invoice_job(ctx, invoice_id)`: the same for CANCELLING.
- `sweep_waiting` (every SWEEP_SECONDS): the safety net. Re-queues invoices left in STAMPING or
  CANCELLING (a job lost with Redis' data, a worker killed past arq's retries); a no-op for
  invoices whose job is alive.
- `poll_cancellations` (cron): asks the PAC about cancellations waiting for the receiver.
- `notify_expiring_csds` (cron, daily): CsdExpiring once per certificate, 30 days before expiry.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from arq import Retry, cron
from arq.connections import ArqRedis
from arq.worker import func

from shared.events import Event, InvoiceCancellationRequested, InvoiceStampingRequested
from subgraphs.invoice import service
from subgraphs.invoice.lifecycle import Status
from sat.pac import get_pac
from subgraphs.invoice.service.stamping import warm_up
from subgraphs.invoice.settings import load_invoice_settings

log = logging.getLogger(__name__)

MAX_TRIES = 5
SWEEP_SECONDS = 5
# Older than this, an invoice still STAMPING / CANCELLING may have lost its job: longer than the
# relay needs to queue one (its pass runs on NOTIFY and every 2 s).
SWEEP_AFTER = timedelta(seconds=10)


def _pacs(ctx) -> dict:
    """The PACs a job hands the service: `pac` replaces every PAC (a test's ctx injects one);
    `default_pac` is the worker's configured provider, used only for organizations that listed no
    PAC account of their own (passing it as `pac` made every organization's accounts unused)."""
    return {"pac": ctx.get("pac"), "default_pac": ctx.get("default_pac")}


def _backoff(job_try: int) -> int:
    return min(300, 5 * 2 ** (job_try - 1))  # 5, 10, 20, 40 s ...


async def stamp_invoice_job(ctx, invoice_id: str) -> str:
    job_try = int(ctx.get("job_try") or 1)
    outcome = await service.stamp_invoice(ctx["runtime"], uuid.UUID(str(invoice_id)), attempt=job_try,
                                          max_attempts=MAX_TRIES, **_pacs(ctx))
    if outcome.retry:
        log.warning("PAC transient error, retrying", extra={"invoice_id": str(invoice_id), "job_try": job_try})
        raise Retry(defer=_backoff(job_try))
    return outcome.status


async def cancel_invoice_job(ctx, invoice_id: str) -> str:
    job_try = int(ctx.get("job_try") or 1)
    status, retry = await service.run_cancellation(ctx["runtime"], uuid.UUID(str(invoice_id)), attempt=job_try,
                                                   max_attempts=MAX_TRIES, **_pacs(ctx))
    if retry:
        log.warning("PAC transient error on cancel, retrying", extra={"invoice_id": str(invoice_id), "job_try": job_try})
        raise Retry(defer=_backoff(job_try))
    return status


# Which job an event asks for: event type -> (job function, job id, args). Read by the relay.
JobRequest = tuple[str, str, tuple]
EVENT_JOBS: dict[str, Callable[[Event], JobRequest]] = {
    InvoiceStampingRequested.event_type: lambda ev: (
        "stamp_invoice_job", service.stamp_job_id(ev.payload["invoice_id"]), (str(ev.payload["invoice_id"]),)),
    InvoiceCancellationRequested.event_type: lambda ev: (
        "cancel_invoice_job", service.cancel_job_id(ev.payload["invoice_id"]), (str(ev.payload["invoice_id"]),)),
}

_SWEPT = ((Status.STAMPING, "stamp_invoice_job", service.stamp_job_id),
          (Status.CANCELLING, "cancel_invoice_job", service.cancel_job_id))


async def sweep_waiting(ctx, older_than: timedelta = SWEEP_AFTER) -> int:
    """Re-queue invoices waiting on a job that may be gone; returns how many jobs were queued."""
    rt = ctx["runtime"]
    arq = ArqRedis(connection_pool=rt.redis.connection_pool)
    queued = 0
    for status, job, job_id in _SWEPT:
        for invoice_id in await service.waiting(rt, status, older_than):
            if await arq.enqueue_job(job, str(invoice_id), _job_id=job_id(invoice_id)) is not None:
                log.warning("sweep re-queued %s for invoice %s", job, invoice_id)
                queued += 1
    return queued


async def poll_cancellation_job(ctx, invoice_id: str) -> str:
    return await service.poll_cancellation(ctx["runtime"], uuid.UUID(str(invoice_id)), **_pacs(ctx))


async def poll_cancellations(ctx) -> int:
    ids = await service.pending_cancellations(ctx["runtime"])
    for invoice_id in ids:
        try:
            await service.poll_cancellation(ctx["runtime"], invoice_id, **_pacs(ctx))
        except Exception:  # noqa: BLE001 - one bad answer must not stop the others
            log.exception("cancellation poll failed", extra={"invoice_id": str(invoice_id)})
    return len(ids)


async def notify_expiring_csds(ctx) -> int:
    return await service.notify_expiring_csds(ctx["runtime"])


async def startup(ctx) -> None:
    """Refuse to start with an unknown PAC_PROVIDER (SettingsError), before taking any job; load
    what sealing needs (catalogs, XSD) now rather than inside the first stamps."""
    ctx["default_pac"] = get_pac(ctx["runtime"].redis, load_invoice_settings())
    await asyncio.to_thread(warm_up)


# keep_result=0: a finished job leaves no result behind, so its id is free for the next request.
FUNCTIONS = [func(stamp_invoice_job, keep_result=0), func(cancel_invoice_job, keep_result=0), poll_cancellation_job]
CRON_JOBS = [
    cron(sweep_waiting, second=set(range(0, 60, SWEEP_SECONDS)), run_at_startup=True),
    cron(poll_cancellations, minute=set(range(0, 60, 5)), second=0),
    cron(notify_expiring_csds, hour=13, minute=0, second=0, run_at_startup=True),
]
STARTUP = [startup]
