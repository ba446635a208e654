"""Tables of the `notification` schema: who can be reached (a projection of auth events), the in-app
inbox, preferences, outgoing e-mail with its delivery state, and consumer bookkeeping."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import service_base
from shared.members import members_table
from shared.outbox import outbox_table

Base = service_base("notification")
outbox = outbox_table(Base.metadata)
members = members_table(Base.metadata)  # who may be told what by role (auth membership events)


QUEUED, SENT, FAILED_PERMANENT = "queued", "sent", "failed_permanent"


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Recipient(Base):
    """Who a user is, as far as notifications care: kept from auth.user_registered /
    auth.profile_updated events so this service never reads auth's tables."""

    __tablename__ = "recipients"
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    full_name: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(10), server_default="es-MX")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class Notification(Base):
    """One in-app inbox entry. (event_id, user_id) is unique so a redelivered event adds nothing."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "user_id"),
        # The inbox query: newest first within one user's view of one organization.
        Index("ix_notifications_inbox", "organization_id", "user_id", text("created_at DESC"), text("id DESC")),
        Index("ix_notifications_unread", "organization_id", "user_id",
              postgresql_where=text("read_at IS NULL AND archived_at IS NULL")),
    )
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(String(120))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class Preference(Base):
    """A user's own choice for one category and channel within one organization."""

    __tablename__ = "preferences"
    __table_args__ = (UniqueConstraint("user_id", "organization_id", "category", "channel"),)
    id: Mapped[uuid.UUID] = _id()
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    category: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class OrganizationDefault(Base):
    """What members of an organization get when they have not chosen themselves."""

    __tablename__ = "organization_defaults"
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    category: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)


class OrganizationSettings(Base):
    __tablename__ = "organization_settings"
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    send_cfdi_to_customer: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class EmailMessage(Base):
    """One e-mail to send. The idempotency key (event(s) + recipient + template) is unique, so however
    often an event is redelivered or a job retried, one message exists and is sent at most once.
    A digest (several invoice status mails of one consumer batch to one recipient, decisions.outgoing)
    tells about several events: `event_ids` lists them all, `event_id` is the first."""

    __tablename__ = "email_messages"
    id: Mapped[uuid.UUID] = _id()
    idempotency_key: Mapped[str] = mapped_column(String(500), unique=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    event_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID(as_uuid=True)), server_default=text("'{}'::uuid[]"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # None: not a user (customer, invitee)
    to_address: Mapped[str] = mapped_column(String(320))
    locale: Mapped[str] = mapped_column(String(10))
    template: Mapped[str] = mapped_column(String(60))
    context: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # [{"path": "/documents/...", "filename": "...", "content_type": "..."}], fetched at send time.
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    status: Mapped[str] = mapped_column(String(20), server_default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


Index("ix_email_messages_queued", EmailMessage.created_at, postgresql_where=text("status = 'queued'"))


class ProcessedEvent(Base):
    """Consumer dedupe: written in the same transaction as the event's effects."""

    __tablename__ = "processed_events"
    consumer: Mapped[str] = mapped_column(String(60), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(120))
    processed_at: Mapped[datetime] = _created()
