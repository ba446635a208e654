"""Tables of the `invoice` schema: issuer profile, CSDs, series, customers, invoices, history."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, Numeric, String, Text, UniqueConstraint, func, text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import service_base
from shared.outbox import outbox_table

Base = service_base("invoice")
outbox = outbox_table(Base.metadata)

MONEY = Numeric(18, 6)


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class IssuerProfile(Base):
    """The organization as CFDI issuer (Emisor); one per organization."""

    __tablename__ = "issuers"
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    rfc: Mapped[str] = mapped_column(String(13))
    legal_name: Mapped[str] = mapped_column(String(300))
    tax_regime: Mapped[str] = mapped_column(String(3))
    postal_code: Mapped[str] = mapped_column(String(5))  # LugarExpedicion
    default_series: Mapped[str] = mapped_column(String(25), default="A")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class Series(Base):
    """A folio sequence: `next_folio` is taken with UPDATE ... RETURNING, so two creations never share one."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("organization_id", "code"),)
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    code: Mapped[str] = mapped_column(String(25))
    next_folio: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = _created()


class Certificate(Base):
    """A CSD. The private key is stored unencrypted-PKCS#8-DER sealed with the KEK (never the password)."""

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("organization_id", "certificate_number"),
        # At most one active CSD per organization, enforced by the database.
        Index("uq_certificates_one_active", "organization_id", unique=True, postgresql_where=text("active")),
    )
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    certificate_number: Mapped[str] = mapped_column(String(20))
    rfc: Mapped[str] = mapped_column(String(13))
    legal_name: Mapped[str] = mapped_column(String(300))
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    kek_id: Mapped[str] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    expiry_notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _created()


class Customer(Base):
    """A receiver (Receptor)."""

    __tablename__ = "customers"
    __table_args__ = (Index("ix_customers_org_name", "organization_id", "legal_name", "id"),)
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    rfc: Mapped[str] = mapped_column(String(13))
    legal_name: Mapped[str] = mapped_column(String(300))
    tax_regime: Mapped[str] = mapped_column(String(3))
    postal_code: Mapped[str] = mapped_column(String(5))
    cfdi_use: Mapped[str] = mapped_column(String(4), default="G03")
    email: Mapped[str | None] = mapped_column(String(320))
    products: Mapped[list] = mapped_column(JSONB, default=list)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("organization_id", "series", "folio"),
        Index("ix_invoices_org_created", "organization_id", "created_at", "id"),
        Index("ix_invoices_uuid", "uuid"),
        Index("ix_invoices_status", "status"),
    )
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    voucher_type: Mapped[str] = mapped_column(String(1))  # I, E, P
    status: Mapped[str] = mapped_column(String(30), default="DRAFT")
    series: Mapped[str] = mapped_column(String(25))
    folio: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("customers.id"))
    customer_rfc: Mapped[str] = mapped_column(String(13))
    customer_name: Mapped[str] = mapped_column(String(300))
    customer_email: Mapped[str | None] = mapped_column(String(320))
    currency: Mapped[str] = mapped_column(String(3), default="MXN")
    exchange_rate: Mapped[Decimal | None] = mapped_column(MONEY)
    subtotal: Mapped[Decimal] = mapped_column(MONEY, default=0)
    discount: Mapped[Decimal | None] = mapped_column(MONEY)
    total_transferred: Mapped[Decimal | None] = mapped_column(MONEY)
    total_withheld: Mapped[Decimal | None] = mapped_column(MONEY)
    total: Mapped[Decimal] = mapped_column(MONEY, default=0)
    document: Mapped[dict] = mapped_column(JSONB)  # the draft as entered (normalised), rebuilt at stamping
    issues: Mapped[list] = mapped_column(JSONB, default=list)
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))  # Fecha, fixed when stamping is asked
    stamp_idempotency_key: Mapped[str | None] = mapped_column(String(200))
    uuid: Mapped[str | None] = mapped_column(String(36))
    stamped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pac_certificate_number: Mapped[str | None] = mapped_column(String(20))
    xml: Mapped[str | None] = mapped_column(Text)
    stamp_attempts: Mapped[int] = mapped_column(Integer, default=0)
    pac_code: Mapped[str | None] = mapped_column(String(60))
    pac_message: Mapped[str | None] = mapped_column(Text)
    cancellation_reason: Mapped[str | None] = mapped_column(String(2))
    replacement_uuid: Mapped[str | None] = mapped_column(String(36))
    cancellation_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class InvoiceEvent(Base):
    """Every status transition: who, when, from, to, why."""

    __tablename__ = "invoice_events"
    id: Mapped[uuid.UUID] = _id()
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    from_status: Mapped[str | None] = mapped_column(String(30))
    to_status: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class PacAccount(Base):
    """One PAC account of an organization, in its order of preference (position 0 stamps first).
    Credentials are sealed with the KEK, bound to the organization and provider (pac/accounts.py)."""

    __tablename__ = "pac_accounts"
    __table_args__ = (UniqueConstraint("organization_id", "provider", name="uq_pac_accounts_org_provider"),
                      UniqueConstraint("organization_id", "position", name="uq_pac_accounts_org_position"))
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    position: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(20))
    username_hint: Mapped[str] = mapped_column(String(40))  # shown back to the user, never the secret
    account_sealed: Mapped[str] = mapped_column(Text)
    kek_id: Mapped[str] = mapped_column(String(40))
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _created()
