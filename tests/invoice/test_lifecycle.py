"""The lifecycle table: every allowed move emits its event and writes its history row; every
other move is refused before anything is written. The GraphQL enum is the same enum."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from subgraphs.invoice import models as m
from subgraphs.invoice.lifecycle import CANCELLABLE, EDITABLE, PAYABLE, TRANSITIONS, VALID, IllegalTransition, Status, event_for
from subgraphs.invoice.schema import schema
from subgraphs.invoice.service.common import record_transition

ALL_MOVES = list(itertools.product(Status, Status))
ALLOWED = [move for move in ALL_MOVES if move in TRANSITIONS]
REFUSED = [move for move in ALL_MOVES if move not in TRANSITIONS]

# What each event needs beyond the invoice reference.
EVENT_FIELDS = {
    "invoice.stamping_requested": {"idempotency_key": "k"},
    "invoice.stamped": {"uuid": "U", "stamped_at": datetime.now(timezone.utc), "xml_path": "/x", "pdf_path": "/p"},
    "invoice.stamp_failed": {"code": "C", "message": "M"},
    "invoice.cancellation_requested": {"uuid": "U", "reason": "02"},
    "invoice.cancelled": {"uuid": "U", "reason": "02"},
    "invoice.cancellation_rejected": {"uuid": "U"},
    "invoice.cancellation_failed": {"uuid": "U", "code": "C", "message": "M"},
}


def test_the_table_is_the_one_the_code_reads():
    assert len(ALLOWED) == 13 and len(ALLOWED) + len(REFUSED) == len(Status) ** 2
    assert EDITABLE == {Status.DRAFT, Status.STAMP_FAILED}
    assert CANCELLABLE == {Status.STAMPED, Status.CANCELLATION_REJECTED, Status.CANCELLATION_FAILED}
    assert PAYABLE < VALID and Status.CANCELLED not in VALID and Status.STAMPING not in VALID
    # Every status is reachable from DRAFT, and only CANCELLED is final.
    reachable, frontier = {Status.DRAFT}, [Status.DRAFT]
    while frontier:
        here = frontier.pop()
        for (a, b) in TRANSITIONS:
            if a is here and b not in reachable:
                reachable.add(b)
                frontier.append(b)
    assert reachable == set(Status)
    assert {a for a, _ in TRANSITIONS} == set(Status) - {Status.CANCELLED}


def test_the_graphql_enum_is_the_lifecycle_enum():
    enum = schema.get_type_by_name("InvoiceStatus")
    assert [v.name for v in enum.values] == [s.value for s in Status]


@pytest.mark.parametrize("from_status,to_status", REFUSED, ids=lambda s: s.value)
def test_refused_moves_raise(from_status, to_status):
    with pytest.raises(IllegalTransition):
        event_for(from_status, to_status)


async def _row_in(session, org, status: Status) -> m.Invoice:
    org_id = uuid.UUID(org.account.org_id)
    inv = await session.scalar(select(m.Invoice).where(m.Invoice.organization_id == org_id))
    inv.status = status.value
    return inv


async def _counts(session, inv) -> tuple[int, int]:
    history = await session.scalar(select(func.count()).select_from(m.InvoiceEvent).where(
        m.InvoiceEvent.invoice_id == inv.id))
    events = await session.scalar(select(func.count()).select_from(m.outbox).where(
        m.outbox.c.aggregate_id == f"invoice:{inv.id}"))
    return history, events


async def test_every_move_through_record_transition(org, runtime):
    await org.create_invoice()
    for from_status, to_status in ALL_MOVES:
        async with runtime.sessionmaker() as session, session.begin():
            inv = await _row_in(session, org, from_status)
            before = await _counts(session, inv)
            expected = TRANSITIONS.get((from_status, to_status), IllegalTransition)
            if expected is IllegalTransition:
                with pytest.raises(IllegalTransition):
                    await record_transition(session, inv, to_status, None, "prueba")
                assert inv.status == from_status.value
                assert await _counts(session, inv) == before, (from_status, to_status)
            else:
                fields = EVENT_FIELDS[expected.event_type] if expected else {}
                await record_transition(session, inv, to_status, None, "prueba", **fields)
                await session.flush()
                assert inv.status == to_status.value
                history, events = await _counts(session, inv)
                assert history == before[0] + 1
                assert events == before[1] + (1 if expected else 0), (from_status, to_status)
                if expected:
                    last = await session.scalar(select(m.outbox.c.type).where(
                        m.outbox.c.aggregate_id == f"invoice:{inv.id}").order_by(m.outbox.c.id.desc()).limit(1))
                    assert last == expected.event_type
            await session.rollback()
