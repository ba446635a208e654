"""Jobs that meet a backend outage are retried, not failed.

arq retries a job only when it raises `Retry`; any other exception fails it for good. A stamping
or e-mail job that runs while PostgreSQL restarts (or Redis blips) fails with a connection error
that says nothing about the job itself, so it is turned into a `Retry` with a growing delay: the
work resumes seconds after the backend is back instead of waiting for a sweep."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging

import asyncpg
from arq import Retry
from arq.worker import Function, func
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

_OUTAGES = (
    OSError,  # refused, reset, unreachable
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, "the database system is starting up"
    RedisConnectionError,
    RedisTimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """True if `exc` (or what it wraps: SQLAlchemy's `.orig`, the cause chain) is a backend that
    could not be reached, rather than a problem with the job."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _OUTAGES):
            return True
        if getattr(exc, "connection_invalidated", False):  # SQLAlchemy: the connection died under us
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def retry_delay(job_try: int) -> int:
    return min(2 ** job_try, 30)


def retrying_on_outage(job):
    """Wrap an arq job (coroutine or `func(...)`) so an outage becomes `Retry` instead of a failure."""
    fn = job if isinstance(job, Function) else func(job)

    @functools.wraps(fn.coroutine)
    async def run(ctx, *args, **kwargs):
        try:
            return await fn.coroutine(ctx, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only outages are turned into retries
            if isinstance(exc, Retry) or not is_outage(exc):
                raise
            delay = retry_delay(int(ctx.get("job_try") or 1))
            log.warning("job %s: backend unavailable (%s); retrying in %s s", fn.name, type(exc).__name__, delay)
            raise Retry(defer=delay) from exc

    return dataclasses.replace(fn, coroutine=run)
