"""The worker's stamping in batches (service/stamp_batch.py): concurrent jobs share one claim, one
sealing hop and one finish, and each still gets its own outcome, exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from arq import Retry
from sqlalchemy import event, select

from sat.pac import PacError
from sat.pac.sandbox import SandboxPac
from subgraphs.invoice import models as m
from subgraphs.invoice.service.stamp_batch import StampBatcher
from workers.stamping import stamp_invoice_job


async def _requested(org, n: int) -> list[str]:
    created = await asyncio.gather(*[org.create_invoice() for _ in range(n)])
    ids = [c["id"] for c in created]
    await asyncio.gather(*[org.stamp(i, f"k-{i}") for i in ids])
    return ids


async def _recorded(runtime, ids: list[str]) -> tuple[Counter, Counter]:
    """Per invoice: STAMPED / STAMP_FAILED transitions, and stamped / stamp_failed events."""
    aggregates = [f"invoice:{i}" for i in ids]
    async with runtime.sessionmaker() as session:
        moves = Counter(tuple(r) for r in (await session.execute(
            select(m.InvoiceEvent.invoice_id, m.InvoiceEvent.to_status)
            .where(m.InvoiceEvent.invoice_id.in_([uuid.UUID(i) for i in ids]),
                   m.InvoiceEvent.to_status.in_(["STAMPED", "STAMP_FAILED"])))).all())
        events = Counter(tuple(r) for r in (await session.execute(
            select(m.outbox.c.aggregate_id, m.outbox.c.type)
            .where(m.outbox.c.aggregate_id.in_(aggregates),
                   m.outbox.c.type.in_(["invoice.stamped", "invoice.stamp_failed"])))).all())
    return moves, events


async def test_concurrent_jobs_are_stamped_once_each_with_their_own_timbre(org, runtime):
    ids = await _requested(org, 8)
    results = await asyncio.gather(*[stamp_invoice_job({"runtime": runtime, "job_try": 1}, i) for i in ids])
    assert results == ["STAMPED"] * 8
    got = [await org.get(i) for i in ids]
    assert len({g["uuid"] for g in got}) == 8 and all(g["uuid"] for g in got)
    assert all([h["toStatus"] for h in g["history"]] == ["DRAFT", "STAMPING", "STAMPED"] for g in got)
    moves, events = await _recorded(runtime, ids)
    assert moves == Counter({(uuid.UUID(i), "STAMPED"): 1 for i in ids})
    assert events == Counter({(f"invoice:{i}", "invoice.stamped"): 1 for i in ids})
    # Again: nothing is claimed, nothing recorded.
    assert await asyncio.gather(*[stamp_invoice_job({"runtime": runtime, "job_try": 1}, i) for i in ids]) == ["STAMPED"] * 8
    assert await _recorded(runtime, ids) == (moves, events)


class _Refusing(SandboxPac):
    """The sandbox, refusing (permanently or transiently) the one CFDI it is given for."""

    def __init__(self, redis, error: PacError):
        super().__init__(redis)
        self.error = error

    async def stamp(self, xml, **kw):
        raise self.error


async def test_each_job_of_a_batch_gets_its_own_outcome(org, runtime):
    ids = await _requested(org, 5)
    refused, flaky = ids[0], ids[1]
    pacs = {refused: _Refusing(runtime.redis, PacError("CFDI40999", "Rechazado por el PAC.")),
            flaky: _Refusing(runtime.redis, PacError("PAC_UNAVAILABLE", "No disponible.", transient=True))}
    batcher = StampBatcher(runtime, window=60, max_size=len(ids))  # one batch: all five, by size
    outcomes = await asyncio.gather(*[batcher.stamp(uuid.UUID(i), pac=pacs.get(i, SandboxPac(runtime.redis)))
                                      for i in ids])
    assert [(o.status, o.retry) for o in outcomes] == [("STAMP_FAILED", False), ("STAMPING", True)] + [("STAMPED", False)] * 3
    failed, waiting = await org.get(refused), await org.get(flaky)
    assert (failed["status"], failed["pacCode"]) == ("STAMP_FAILED", "CFDI40999")
    assert (waiting["status"], waiting["pacCode"]) == ("STAMPING", "PAC_UNAVAILABLE")
    moves, events = await _recorded(runtime, ids)
    assert moves == Counter({(uuid.UUID(refused), "STAMP_FAILED"): 1,
                             **{(uuid.UUID(i), "STAMPED"): 1 for i in ids[2:]}})
    assert events == Counter({(f"invoice:{refused}", "invoice.stamp_failed"): 1,
                              **{(f"invoice:{i}", "invoice.stamped"): 1 for i in ids[2:]}})
    # The transient one is a job retry, as before; its next try stamps it.
    with pytest.raises(Retry):
        await stamp_invoice_job({"runtime": runtime, "job_try": 1, "pac": pacs[flaky]}, flaky)
    assert await stamp_invoice_job({"runtime": runtime, "job_try": 2}, flaky) == "STAMPED"
    async with runtime.sessionmaker() as session:
        attempts = await session.scalar(select(m.Invoice.stamp_attempts).where(m.Invoice.id == uuid.UUID(flaky)))
    assert attempts == 3  # every claim counted once


class _Gated(SandboxPac):
    """The sandbox, holding every answer until released."""

    def __init__(self, redis, expected: int):
        super().__init__(redis)
        self.expected, self.entered, self.all_in, self.release = expected, 0, asyncio.Event(), asyncio.Event()

    async def stamp(self, xml, **kw):
        self.entered += 1
        if self.entered == self.expected:
            self.all_in.set()
        await self.release.wait()
        return await super().stamp(xml, **kw)


async def test_two_batchers_over_the_same_invoices_stamp_each_once(org, runtime):
    ids = await _requested(org, 6)
    one, other = StampBatcher(runtime), StampBatcher(runtime)
    # Side by side: the other finds them locked, or claims them after and records nothing.
    outcomes = await asyncio.gather(*[b.stamp(uuid.UUID(i)) for i in ids[:3] for b in (one, other)])
    assert {o.status for o in outcomes} <= {"STAMPED", "BUSY_OR_MISSING"}
    assert all("STAMPED" in (outcomes[k].status, outcomes[k + 1].status) for k in range(0, 6, 2)), outcomes
    # Overlapping (a killed worker's job run again): both claim, both ask the PAC, and only the
    # first finish records; the other answers with what it found.
    gated = _Gated(runtime.redis, expected=3)
    slow = [asyncio.create_task(one.stamp(uuid.UUID(i), pac=gated)) for i in ids[3:]]
    await asyncio.wait_for(gated.all_in.wait(), 30)
    fast = await asyncio.gather(*[other.stamp(uuid.UUID(i)) for i in ids[3:]])
    gated.release.set()
    assert [o.status for o in fast] == ["STAMPED"] * 3
    assert [(o.status, o.retry) for o in await asyncio.gather(*slow)] == [("STAMPED", False)] * 3
    moves, events = await _recorded(runtime, ids)
    assert moves == Counter({(uuid.UUID(i), "STAMPED"): 1 for i in ids})
    assert events == Counter({(f"invoice:{i}", "invoice.stamped"): 1 for i in ids})
    assert len({(await org.get(i))["uuid"] for i in ids}) == 6


async def test_the_same_invoice_twice_in_one_batch_is_stamped_once(org, runtime):
    [inv] = await _requested(org, 1)
    batcher = StampBatcher(runtime, window=0.05, max_size=3)  # the claim fills by size
    outcomes = await asyncio.gather(*[batcher.stamp(uuid.UUID(inv)) for _ in range(3)])
    assert sorted(o.status for o in outcomes) == ["BUSY_OR_MISSING", "BUSY_OR_MISSING", "STAMPED"]
    moves, events = await _recorded(runtime, [inv])
    assert sum(moves.values()) == 1 and sum(events.values()) == 1


async def test_a_batch_costs_the_same_statements_whatever_its_size(new_org, runtime):
    org = await new_org()
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    async def stamp_batch(n: int) -> list[str]:
        ids = await _requested(org, n)
        batcher = StampBatcher(runtime, window=60, max_size=n)  # claims and finishes of all n, by size
        statements.clear()
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
        try:
            outcomes = await asyncio.gather(*[batcher.stamp(uuid.UUID(i)) for i in ids])
        finally:
            event.remove(runtime.engine.sync_engine, "before_cursor_execute", count)
        assert [o.status for o in outcomes] == ["STAMPED"] * n
        _, events = await _recorded(runtime, ids)
        assert events == Counter({(f"invoice:{i}", "invoice.stamped"): 1 for i in ids})
        return list(statements)

    small, big = await stamp_batch(2), await stamp_batch(7)
    assert len(small) == len(big), (small, big)
    assert len(big) <= 5, big  # claim, PAC accounts, finish, outbox (+ at most one more)


async def test_an_organization_whose_pac_accounts_cannot_be_opened_fails_only_its_own_jobs(new_org, runtime):
    from sqlalchemy import update

    from tests.invoice.test_pac_accounts import SET

    broken, fine = await new_org(), await new_org()
    out = (await broken.ok(SET, {"a": [{"provider": "SWSAPIEN", "token": "t" * 40}]}))["setPacAccounts"]
    assert out["userErrors"] == []
    [bad] = await _requested(broken, 1)
    good = await _requested(fine, 2)
    async with runtime.sessionmaker() as session, session.begin():
        org_id = await session.scalar(select(m.Invoice.organization_id).where(m.Invoice.id == uuid.UUID(bad)))
        await session.execute(update(m.PacAccount).where(m.PacAccount.organization_id == org_id)
                              .values(account_sealed="not-a-sealed-value"))
    batcher = StampBatcher(runtime)  # one claim for the three: they ask in the same loop iteration
    results = await asyncio.gather(*[batcher.stamp(uuid.UUID(i)) for i in [bad, *good]], return_exceptions=True)
    assert isinstance(results[0], Exception), results[0]
    assert [r.status for r in results[1:]] == ["STAMPED", "STAMPED"]
    assert (await broken.get(bad))["status"] == "STAMPING"  # left to the job's retries, as before


async def test_arrivals_while_a_batch_runs_go_together_into_the_next_one():
    """The batcher's coalescing under load: with one batch in flight, whatever arrives meanwhile
    waits and leaves as one batch when it ends (a fixed window alone gave single-item batches as
    arq refilled each freed slot), and nobody waits longer than that."""
    import asyncio

    from shared.coalesce import Coalescer

    release, batches = asyncio.Event(), []

    async def run(items):
        batches.append(list(items))
        if len(batches) == 1:
            await release.wait()
        return [i * 10 for i in items]

    coalescer = Coalescer(run, window=0.001, max_size=4, in_flight=1)
    first = asyncio.create_task(coalescer.load(0))
    while not batches:
        await asyncio.sleep(0.001)
    rest = [asyncio.create_task(coalescer.load(i)) for i in range(1, 7)]
    await asyncio.sleep(0.02)
    assert batches == [[0]]  # nothing starts while the first batch runs
    release.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50, 60]
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]  # the waiting ones together, at most max_size each


async def test_a_batch_builds_its_cfdis_off_the_event_loop(org, runtime, monkeypatch):
    """The drafts' validation and totals of a whole batch (CPU, up to 50 invoices) run in the
    sealing thread, never on the worker's event loop where every other job runs."""
    import threading

    from subgraphs.invoice.service import stamping

    seen: list[int] = []
    real = stamping._prepare_plain

    def recording(inv, issuer, csd_row):
        seen.append(threading.get_ident())
        return real(inv, issuer, csd_row)

    monkeypatch.setattr(stamping, "_prepare_plain", recording)
    ids = await _requested(org, 3)
    assert await asyncio.gather(*[stamp_invoice_job({"runtime": runtime, "job_try": 1}, i) for i in ids]) == ["STAMPED"] * 3
    assert len(seen) == 3 and threading.get_ident() not in seen
