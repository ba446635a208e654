"""Auth housekeeping: expired sign-ups, e-mail tokens and refresh tokens are purged every hour
(`subgraphs.auth.service.purge_expired`; deleting is idempotent, so several workers may run it)."""

from __future__ import annotations

import logging

from arq.cron import cron

from subgraphs.auth import service

log = logging.getLogger(__name__)


async def purge_expired_auth_rows(ctx) -> dict[str, int]:
    counts = await service.purge_expired(ctx["runtime"])
    if any(counts.values()):
        log.info("purged expired auth rows %s", counts)
    return counts


CRON_JOBS = [cron(purge_expired_auth_rows, minute={17}, second={0}, run_at_startup=True)]
