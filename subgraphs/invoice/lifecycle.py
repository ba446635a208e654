"""The lifecycle of an invoice: its statuses, the moves allowed between them and the event each
move emits. The one table `record_transition` enforces and the GraphQL enum reuses.

    DRAFT ──stamp──▶ STAMPING ──PAC──▶ STAMPED ──cancel──▶ CANCELLING ──PAC──▶ CANCELLED
      ▲                 │                 ▲                    │      └──▶ CANCELLATION_PENDING ──receiver──▶ CANCELLED
      └── STAMP_FAILED ◀┘                 │                    │                                  └──▶ CANCELLATION_REJECTED
                                          └ CANCELLATION_FAILED◀┘ (PAC refused: still valid, may be asked again)
"""

from __future__ import annotations

from enum import Enum

from shared.events import (
    EventPayload, InvoiceCancellationFailed, InvoiceCancellationRejected, InvoiceCancellationRequested,
    InvoiceCancelled, InvoiceStamped, InvoiceStampFailed, InvoiceStampingRequested,
)


class Status(str, Enum):
    DRAFT = "DRAFT"
    STAMPING = "STAMPING"
    STAMPED = "STAMPED"
    STAMP_FAILED = "STAMP_FAILED"
    CANCELLING = "CANCELLING"
    CANCELLATION_PENDING = "CANCELLATION_PENDING"
    CANCELLED = "CANCELLED"
    CANCELLATION_REJECTED = "CANCELLATION_REJECTED"
    CANCELLATION_FAILED = "CANCELLATION_FAILED"


S = Status

# (from, to) -> the event the move emits (None: the history row is the only record).
TRANSITIONS: dict[tuple[Status, Status], type[EventPayload] | None] = {
    (S.DRAFT, S.STAMPING): InvoiceStampingRequested,
    (S.STAMP_FAILED, S.STAMPING): InvoiceStampingRequested,
    (S.STAMPING, S.STAMPED): InvoiceStamped,
    (S.STAMPING, S.STAMP_FAILED): InvoiceStampFailed,
    (S.STAMPED, S.CANCELLING): InvoiceCancellationRequested,
    (S.CANCELLATION_REJECTED, S.CANCELLING): InvoiceCancellationRequested,
    (S.CANCELLATION_FAILED, S.CANCELLING): InvoiceCancellationRequested,
    (S.CANCELLING, S.CANCELLED): InvoiceCancelled,
    (S.CANCELLING, S.CANCELLATION_PENDING): None,  # the receiver must accept; nothing new happened yet
    (S.CANCELLING, S.CANCELLATION_REJECTED): InvoiceCancellationRejected,
    (S.CANCELLING, S.CANCELLATION_FAILED): InvoiceCancellationFailed,
    (S.CANCELLATION_PENDING, S.CANCELLED): InvoiceCancelled,
    (S.CANCELLATION_PENDING, S.CANCELLATION_REJECTED): InvoiceCancellationRejected,
}

# A draft can be edited (and asked to stamp) only here.
EDITABLE = frozenset({S.DRAFT, S.STAMP_FAILED})
# Stamped and not cancelled: the CFDI is valid before SAT ("vigente"), so it can be paid,
# replaced or related, and counts in balances.
VALID = frozenset({S.STAMPED, S.CANCELLING, S.CANCELLATION_PENDING, S.CANCELLATION_REJECTED, S.CANCELLATION_FAILED})
# Valid and with no cancellation in flight: may be paid by a payment complement.
PAYABLE = VALID - {S.CANCELLING, S.CANCELLATION_PENDING}
# Where a cancellation may be asked (again).
CANCELLABLE = frozenset(f for f, t in TRANSITIONS if t is S.CANCELLING)


class IllegalTransition(Exception):
    """A bug, never client input: use cases check the status before asking to move."""

    def __init__(self, from_status: str, to_status: str):
        super().__init__(f"invoice cannot go from {from_status} to {to_status}")
        self.from_status, self.to_status = from_status, to_status


def event_for(from_status: str, to_status: str) -> type[EventPayload] | None:
    """The event the move emits; IllegalTransition when the table does not allow it."""
    key = (Status(from_status), Status(to_status))
    if key not in TRANSITIONS:
        raise IllegalTransition(from_status, to_status)
    return TRANSITIONS[key]
