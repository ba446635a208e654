"""Domain events: one typed payload class per event type, validated when emitted and when read.

The envelope (`Event`) is what travels: outbox row -> Redis stream/pub-sub -> consumers. Payload
shapes are declared here once so producer and consumer agree; `parse_event` refuses unknown types
or payloads that do not match.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class EventPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    category: ClassVar[str] = "general"  # preference bucket for notifications


_REGISTRY: dict[str, type[EventPayload]] = {}


def event(event_type: str, *, version: int = 1, category: str = "general"):
    def register(cls: type[EventPayload]) -> type[EventPayload]:
        cls.event_type, cls.version, cls.category = event_type, version, category
        _REGISTRY[event_type] = cls
        return cls

    return register


class Event(BaseModel):
    """The envelope every event travels in."""

    model_config = ConfigDict(frozen=True)
    id: uuid.UUID
    type: str
    version: int
    organization_id: uuid.UUID | None
    actor_id: uuid.UUID | None
    aggregate_id: str | None = None  # ordering is kept per aggregate
    occurred_at: datetime
    payload: dict[str, Any]
    # The producing request's W3C traceparent (shared.telemetry), read from the outbox row by the
    # relay for the job it queues. Never serialized: not part of what travels on streams.
    traceparent: str | None = Field(default=None, exclude=True)

    def typed_payload(self) -> EventPayload:
        return payload_class(self.type).model_validate(self.payload)


class UnknownEventType(KeyError):
    pass


def payload_class(event_type: str) -> type[EventPayload]:
    try:
        return _REGISTRY[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def make_event(
    payload: EventPayload,
    *,
    organization_id: uuid.UUID | None,
    actor_id: uuid.UUID | None,
    aggregate_id: str | None = None,
) -> Event:
    return Event(
        id=uuid.uuid4(),
        type=payload.event_type,
        version=payload.version,
        organization_id=organization_id,
        actor_id=actor_id,
        aggregate_id=aggregate_id,
        occurred_at=datetime.now(timezone.utc),
        payload=payload.model_dump(mode="json"),
    )


def parse_event(data: dict[str, Any] | str | bytes) -> Event:
    ev = Event.model_validate_json(data) if isinstance(data, (str, bytes)) else Event.model_validate(data)
    ev.typed_payload()  # validates the payload shape against its declared class
    return ev


# --- auth ---------------------------------------------------------------------------------------

# Single-use links (verification, reset, invitation) never travel in events: an event names the
# row the link is for (`*_ref`, `request_id`, `invitation_id`) and the notification worker asks the
# auth service to mint the link at send time (subgraphs/auth/internal.py), so only the e-mail
# actually sent ever holds a working token.

@event("auth.sign_up_requested", category="security")
class SignUpRequested(EventPayload):
    """Someone signed up with `email`; the account exists once the mailed link is opened."""
    sign_up_id: uuid.UUID
    email: str
    full_name: str
    locale: str


@event("auth.user_registered", category="account")
class UserRegistered(EventPayload):
    """An account was created (its address is confirmed by then)."""
    user_id: uuid.UUID
    email: str
    full_name: str
    locale: str


@event("auth.email_verification_requested", category="security")
class EmailVerificationRequested(EventPayload):
    user_id: uuid.UUID
    email: str
    full_name: str
    locale: str
    verification_ref: uuid.UUID


@event("auth.password_reset_requested", category="security")
class PasswordResetRequested(EventPayload):
    """Emitted for every request, account or not (no enumeration): auth decides at send time."""
    request_id: uuid.UUID
    email: str


@event("auth.password_changed", category="security")
class PasswordChanged(EventPayload):
    user_id: uuid.UUID
    email: str


@event("auth.member_invited", category="account")
class MemberInvited(EventPayload):
    invitation_id: uuid.UUID
    email: str
    role: str
    organization_name: str
    invited_by_name: str


@event("auth.member_joined", category="account")
class MemberJoined(EventPayload):
    user_id: uuid.UUID
    role: str


@event("auth.member_role_changed", category="account")
class MemberRoleChanged(EventPayload):
    user_id: uuid.UUID
    old_role: str
    new_role: str


@event("auth.member_removed", category="account")
class MemberRemoved(EventPayload):
    user_id: uuid.UUID


@event("auth.mfa_enabled", category="security")
class MfaEnabled(EventPayload):
    user_id: uuid.UUID
    email: str


@event("auth.mfa_disabled", category="security")
class MfaDisabled(EventPayload):
    user_id: uuid.UUID
    email: str


@event("auth.api_key_created", category="security")
class ApiKeyCreated(EventPayload):
    api_key_id: uuid.UUID
    name: str
    permissions: list[str]


@event("auth.api_key_revoked", category="security")
class ApiKeyRevoked(EventPayload):
    api_key_id: uuid.UUID


@event("auth.profile_updated", category="account")
class ProfileUpdated(EventPayload):
    user_id: uuid.UUID
    email: str
    full_name: str
    locale: str


# --- invoice ------------------------------------------------------------------------------------
# Document paths are relative to the invoice service (`Settings.invoice_service_url`) and carry an
# expiring HMAC signature, so a consumer can fetch the XML/PDF without reading invoice tables.

class _InvoiceRef(EventPayload):
    invoice_id: uuid.UUID
    series: str | None = None
    folio: int | None = None
    invoice_type: str  # I, E, P
    total: Decimal
    currency: str
    customer_name: str
    customer_rfc: str
    customer_email: str | None = None
    created_by: uuid.UUID | None = None


@event("invoice.stamping_requested", category="invoicing")
class InvoiceStampingRequested(_InvoiceRef):
    idempotency_key: str


@event("invoice.stamped", category="invoicing")
class InvoiceStamped(_InvoiceRef):
    uuid: str
    stamped_at: datetime
    xml_path: str
    pdf_path: str


@event("invoice.stamp_failed", category="invoicing")
class InvoiceStampFailed(_InvoiceRef):
    code: str
    message: str


@event("invoice.cancellation_requested", category="invoicing")
class InvoiceCancellationRequested(_InvoiceRef):
    uuid: str
    reason: str
    replacement_uuid: str | None = None


@event("invoice.cancelled", category="invoicing")
class InvoiceCancelled(_InvoiceRef):
    uuid: str
    reason: str


@event("invoice.cancellation_rejected", category="invoicing")
class InvoiceCancellationRejected(_InvoiceRef):
    uuid: str


@event("invoice.cancellation_failed", category="invoicing")
class InvoiceCancellationFailed(_InvoiceRef):
    """The PAC refused the cancellation request (the CFDI stays valid; it may be asked again)."""

    uuid: str
    code: str
    message: str


@event("invoice.csd_expiring", category="security")
class CsdExpiring(EventPayload):
    certificate_number: str
    rfc: str
    valid_to: datetime
    days_left: int


# --- expense ------------------------------------------------------------------------------------
# `next_approval` says who may act next (a permission, and a role when the step names one), so the
# notification service can find those members in its own projection of auth's memberships.

class NextApproval(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    permission: str
    role: str | None = None


class _ExpenseRef(EventPayload):
    expense_id: uuid.UUID
    submitter_id: uuid.UUID
    amount: Decimal
    currency: str
    amount_mxn: Decimal
    merchant_name: str | None = None
    description: str = ""
    comment: str | None = None


@event("expense.submitted", category="expenses")
class ExpenseSubmitted(_ExpenseRef):
    next_approval: NextApproval


@event("expense.approved", category="expenses")
class ExpenseApproved(_ExpenseRef):
    approver_id: uuid.UUID
    fully_approved: bool  # False: an intermediate step; next_approval names the following one
    next_approval: NextApproval | None = None


@event("expense.rejected", category="expenses")
class ExpenseRejected(_ExpenseRef):
    approver_id: uuid.UUID
    reason: str


@event("expense.reimbursed", category="expenses")
class ExpenseReimbursed(_ExpenseRef):
    pass


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

