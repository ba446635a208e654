"""The worker's stamping, many invoices at once: the per-stamp database work coalesced.

Concurrently running stamping jobs of one process (arq runs up to `max_jobs` at a time) hand
their invoice to the event loop's `StampBatcher`, which gathers what arrives within a few
milliseconds (at most MAX_BATCH) and, for the whole batch:

1. claims in ONE statement: row locks (SKIP LOCKED), attempts counted, invoice + issuer + active
   CSD read, commit; the organizations' PAC accounts in one more query when a job needs them;
   then builds the CFDIs and seals them all in ONE hop to a thread;
2. (each job, in its own task and trace) asks the PAC: the jobs' calls run concurrently;
3. finishes in ONE conditional UPDATE per outcome shape (still STAMPING for the same request,
   the history rows in the same statement), the events in ONE multi-row outbox insert with one
   relay wake-up, commit; then the live pushes in one Redis round trip.

Exactly once is what it was for one invoice (service/stamping.py, `stamp_invoice`): the claim's
lock keeps two claims off one row while they count the attempt, and the finishing UPDATE's
condition records an outcome only once, whatever batch or process the other run is in. An
invoice not claimable (locked elsewhere, gone) answers BUSY_OR_MISSING, one no longer STAMPING its
status, as before. Payment complements (P) take the one-transaction path (`stamp_alone`): their
locks must be held from building the complement until the timbre is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
import weakref
from dataclasses import dataclass

from sqlalchemy import and_, any_, bindparam, func, select, text, union_all, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from shared.coalesce import Coalescer
from shared.db import transaction
from shared.outbox import emit_many
from shared.runtime import Runtime
from shared.telemetry import current_traceparent
from sat.pac import get_pac
from sat.pac.accounts import PacAccount
from subgraphs.invoice import models as m
from subgraphs.invoice.lifecycle import Status, event_for
from subgraphs.invoice.pac_accounts import account_rows, accounts_pac, open_accounts
from subgraphs.invoice.service import stamping as one
from subgraphs.invoice.service.common import invoice_ref, publish_statuses, utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 50
# How long a batch waits for more invoices after the first: jobs started together (arq starts
# every free slot at once) arrive within one loop iteration; a little more catches stragglers.
WINDOW_SECONDS = 0.002


@dataclass(frozen=True)
class _Ask:
    invoice_id: uuid.UUID
    attempt: int
    max_attempts: int
    own_accounts: bool  # read the organization's PAC accounts (no PAC injected)


@dataclass
class _Claim:
    """The claim's answer to one job: done already (`outcome`), the one-transaction path
    (`alone`), or a claimed invoice with its sealed CFDI (or the failure that refused it)."""
    outcome: one.StampOutcome | None = None
    alone: bool = False
    inv: m.Invoice | None = None
    may_retry: bool = False
    xml: bytes | None = None
    failure: one._Attempt | None = None
    accounts: list[PacAccount] | Exception | None = None  # the organization's own, when read


@dataclass(frozen=True)
class _Done:
    inv: m.Invoice
    key: str | None
    attempt: one._Attempt
    traceparent: str | None  # the job's, for its event (the batch runs in the first job's context)


class StampBatcher:
    """Stamps invoices for concurrent callers, a batch at a time (module docstring)."""

    def __init__(self, rt: Runtime, *, window: float = WINDOW_SECONDS, max_size: int = MAX_BATCH):
        self.rt = rt
        # One claim and one finish in flight per process: arrivals meanwhile wait for the next batch.
        self._claims = Coalescer(self._claim, window=window, max_size=max_size, in_flight=1)
        self._finishes = Coalescer(self._finish, window=window, max_size=max_size, in_flight=1)

    async def stamp(self, invoice_id: uuid.UUID, *, attempt: int = 1, max_attempts: int = 5, pac=None,
                    default_pac=None) -> one.StampOutcome:
        injected = pac is not None
        claim = await self._claims.load(_Ask(invoice_id, attempt, max_attempts, not injected))
        if claim.outcome is not None:
            return claim.outcome
        if claim.alone:
            return await one.stamp_alone(self.rt, invoice_id, attempt=attempt, max_attempts=max_attempts, pac=pac,
                                         default_pac=default_pac)
        inv = claim.inv
        outcome = claim.failure
        if isinstance(claim.accounts, Exception):
            raise claim.accounts  # as when this job opened them itself: the job fails, arq retries
        if outcome is None:
            if claim.accounts:
                chosen, own = accounts_pac(claim.accounts, self.rt.redis, csd=None), True
            else:
                chosen, own = pac or default_pac or get_pac(self.rt.redis), False
            try:
                outcome = await one._ask(inv, claim.xml, chosen, own, inv.stamp_idempotency_key,
                                         may_retry=claim.may_retry)
            finally:
                if own:
                    await chosen.aclose()
        return await self._finishes.load(_Done(inv, inv.stamp_idempotency_key, outcome, current_traceparent()))

    # --- 1. claim and seal ------------------------------------------------------------------

    async def _claim(self, asks: list[_Ask]) -> list[_Claim]:
        ids = list(dict.fromkeys(a.invoice_id for a in asks))
        async with transaction(self.rt.sessionmaker) as session:
            rows = {inv.id: (inv, issuer, csd) for inv, issuer, csd in
                    (await session.execute(_claiming_statement(), {"ids": ids})).all()}
            orgs = list({rows[a.invoice_id][0].organization_id for a in asks if a.own_accounts and a.invoice_id in rows})
            grouped = await account_rows(session, orgs) if orgs else {}
        accounts: dict[uuid.UUID, list[PacAccount] | Exception] = {}
        for org, org_rows in grouped.items():  # opened once per organization and batch
            try:
                accounts[org] = open_accounts(self.rt, org_rows)
            except Exception as exc:  # noqa: BLE001 - that organization's jobs fail, not the batch
                accounts[org] = exc
        answers: list[_Claim] = []
        taken: set[uuid.UUID] = set()
        to_seal: list[tuple[_Claim, m.IssuerProfile | None, m.Certificate | None]] = []
        for a in asks:
            found = rows.get(a.invoice_id)
            if found is None or a.invoice_id in taken:  # locked elsewhere, gone, or this batch's twin
                answers.append(_Claim(outcome=one.StampOutcome("BUSY_OR_MISSING")))
                continue
            taken.add(a.invoice_id)
            inv, issuer, csd_row = found
            if inv.voucher_type == "P" and inv.status == Status.STAMPING:
                answers.append(_Claim(alone=True))
                continue
            if inv.status != Status.STAMPING:
                answers.append(_Claim(outcome=one.StampOutcome(inv.status, invoice=inv)))
                continue
            claim = _Claim(inv=inv, accounts=accounts.get(inv.organization_id) if a.own_accounts else None,
                           may_retry=a.attempt < a.max_attempts and inv.stamp_attempts < one.MAX_TOTAL_ATTEMPTS)
            # Not a payment complement: building the CFDI reads nothing more, so it is built in
            # the sealing thread, off the event loop.
            to_seal.append((claim, issuer, csd_row))
            answers.append(claim)
        log.debug("stamp batch claimed", extra={"asked": len(asks), "claimed": len(rows), "sealing": len(to_seal)})
        if to_seal:
            sealed = await asyncio.to_thread(_seal_all, self.rt, to_seal, utcnow())
            for (claim, _, _), xml in zip(to_seal, sealed, strict=True):
                if isinstance(xml, one._Attempt):
                    claim.failure = xml
                else:
                    claim.xml = xml
        return answers

    # --- 3. finish --------------------------------------------------------------------------

    async def _finish(self, done: list[_Done]) -> list[one.StampOutcome]:
        answers: list[one.StampOutcome | None] = [None] * len(done)
        first: dict[uuid.UUID, int] = {}
        shapes: dict[tuple, list[int]] = {}
        changes = []
        for i, d in enumerate(done):
            to, why, values = one._changes(d.attempt)
            changes.append((to, why, values))
            if d.inv.id in first:  # two runs of one invoice in one batch: the first records
                continue
            first[d.inv.id] = i
            shapes.setdefault((to, tuple(values)), []).append(i)
        recorded: dict[int, object] = {}
        async with transaction(self.rt.sessionmaker) as session:
            for (to, columns), members in shapes.items():
                params = {"ids": [done[i].inv.id for i in members], "keys": [done[i].key for i in members],
                          "h_ids": [uuid.uuid4() for _ in members], "h_whys": [changes[i][1] for i in members],
                          **{f"v_{c}": [changes[i][2][c] for i in members] for c in columns}}
                if to is not None:
                    params["to"] = to.value
                result = await session.execute(_finishing_many(columns, to), params)
                by_id = {row.id: row for row in result}
                recorded.update((i, by_id[done[i].inv.id]) for i in members if done[i].inv.id in by_id)
            missing = [i for i in range(len(done)) if i not in recorded]
            if missing:  # recorded by another run: answer with the status it left
                status = dict((await session.execute(
                    select(one._invoices.c.id, one._invoices.c.status)
                    .where(one._invoices.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(postgresql.UUID)))),
                    {"ids": list({done[i].inv.id for i in missing})})).all())
                for i in missing:
                    answers[i] = one.StampOutcome(status.get(done[i].inv.id) or "BUSY_OR_MISSING")
            events: dict[str | None, list] = {}  # by the jobs' traceparents (one group while tracing is off)
            for i, row in recorded.items():
                inv, (to, _, values) = done[i].inv, changes[i]
                for name, value in values.items():
                    setattr(inv, name, value)
                if to is not None:
                    inv.status = to.value
                    payload_cls = event_for(Status.STAMPING, to)
                    if payload_cls is not None:
                        events.setdefault(done[i].traceparent, []).append(
                            (payload_cls(**invoice_ref(row), **one._event_fields(self.rt, inv, to)),
                             row.organization_id, None, f"invoice:{row.id}"))
                answers[i] = one.StampOutcome(inv.status, retry=to is None, invoice=inv)
            for traceparent, specs in events.items():
                await emit_many(session, m.outbox, specs, traceparent=traceparent)
        await publish_statuses(self.rt, [done[i].inv for i in recorded if changes[i][0] is not None])
        return answers


def _seal_all(rt: Runtime, to_seal: list[tuple[_Claim, m.IssuerProfile | None, m.Certificate | None]],
              now) -> list[bytes | one._Attempt]:
    """Build and seal every claimed CFDI (blocking CPU: run in one thread hop for the batch)."""
    out: list[bytes | one._Attempt] = []
    for claim, issuer, csd_row in to_seal:
        prepared = one._prepare_plain(claim.inv, issuer, csd_row)
        out.append(one._Attempt(failure=prepared) if isinstance(prepared, tuple)
                   else one._seal(rt, claim.inv, prepared, now))
    return out


@functools.cache
def _claiming_statement():
    """ONE statement claiming a batch: lock every listed invoice that no one else holds (SKIP
    LOCKED), count an attempt on those STAMPING (not payment complements: their own path claims
    them), and read each locked invoice (as counted) with its issuer and active CSD."""
    inv = one._invoices
    ids = bindparam("ids", type_=postgresql.ARRAY(postgresql.UUID(as_uuid=True)))
    locked = select(inv).where(inv.c.id == any_(ids)).with_for_update(skip_locked=True).cte("locked")
    ours = and_(locked.c.status == Status.STAMPING.value, locked.c.voucher_type != "P")
    counted = (update(inv).where(inv.c.id == locked.c.id, ours)
               .values(stamp_attempts=func.coalesce(inv.c.stamp_attempts, 0) + 1)
               .returning(*inv.c).cte("counted"))
    claimed = union_all(select(counted), select(locked).where(~ours)).cte("claimed")
    claimed_inv = aliased(m.Invoice, claimed)
    return (select(claimed_inv, m.IssuerProfile, m.Certificate)
            .outerjoin(m.IssuerProfile, m.IssuerProfile.organization_id == claimed_inv.organization_id)
            .outerjoin(m.Certificate, and_(m.Certificate.organization_id == claimed_inv.organization_id,
                                           m.Certificate.active.is_(True))))


@functools.cache
def _finishing_many(columns: tuple[str, ...], to: Status | None):
    """The finish for many invoices: the conditional UPDATE (still STAMPING for the same request)
    over unnest()ed arrays (ids, keys, and each of `columns` as v_<column>), with a history row per
    updated invoice (h_ids, h_whys) when the status moves `to`. Returns the invoice reference of
    each updated row."""
    dialect = postgresql.dialect()

    def array(name: str, sql_type) -> str:
        return f"CAST(:{name} AS {sql_type.compile(dialect=dialect)}[])"

    inv, hist = one._invoices, one._history
    arrays = [array("ids", inv.c.id.type), array("keys", inv.c.stamp_idempotency_key.type),
              array("h_ids", hist.c.id.type), array("h_whys", hist.c.reason.type),
              *(array(f"v_{c}", inv.c[c].type) for c in columns)]
    sets = [f"{c} = v.{c}" for c in columns] + ["updated_at = now()"]
    if to is not None:
        sets.append("status = CAST(:to AS VARCHAR)")
    sql = (f"WITH v AS (SELECT * FROM unnest({', '.join(arrays)}) AS v(f_id, f_key, h_id, h_why, {', '.join(columns)})), "
           f"finished AS (UPDATE {inv.fullname} AS i SET {', '.join(sets)} FROM v "
           f"WHERE i.id = v.f_id AND i.status = '{Status.STAMPING.value}' "
           f"AND i.stamp_idempotency_key IS NOT DISTINCT FROM v.f_key "
           f"RETURNING {', '.join(f'i.{c}' for c in one._REF_COLUMNS)})")
    if to is not None:
        sql += (f", history AS (INSERT INTO {hist.fullname} (id, invoice_id, organization_id, actor_id, from_status, "
                f"to_status, reason) SELECT v.h_id, f.id, f.organization_id, NULL, '{Status.STAMPING.value}', "
                f"CAST(:to AS VARCHAR), v.h_why FROM finished AS f JOIN v ON v.f_id = f.id)")
    return text(sql + " SELECT * FROM finished")


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, StampBatcher]] = weakref.WeakKeyDictionary()


def batcher_for(rt: Runtime) -> StampBatcher:
    """The running event loop's batcher for `rt` (one per worker process in practice)."""
    per_loop = _batchers.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(id(rt))
    if found is None or found.rt is not rt:
        found = per_loop[id(rt)] = StampBatcher(rt)
    return found
