"""A job that meets a backend outage is retried by arq instead of failed; any other error fails."""

from __future__ import annotations

import asyncpg
import pytest
from arq import Retry
from sqlalchemy.exc import OperationalError

from workers.outage import is_outage, retrying_on_outage


async def _boom(ctx, exc):
    raise exc


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"),
    OperationalError("SELECT 1", {}, asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
    OperationalError("SELECT 1", {}, asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")),
])
async def test_an_outage_becomes_a_retry_with_backoff(exc):
    job = retrying_on_outage(_boom)
    with pytest.raises(Retry) as got:
        await job.coroutine({"job_try": 2}, exc)
    assert got.value.defer_score == 4000  # 2 ** job_try seconds
    assert job.name == "_boom"


@pytest.mark.parametrize("exc", [ValueError("bad input"),
                                 OperationalError("SELECT 1", {}, asyncpg.exceptions.UniqueViolationError("dup"))])
async def test_other_errors_still_fail_the_job(exc):
    assert not is_outage(exc)
    with pytest.raises(type(exc)):
        await retrying_on_outage(_boom).coroutine({"job_try": 1}, exc)
