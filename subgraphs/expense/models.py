"""Tables of the `expense` schema: expenses with their audit trail, categories, reports, the
approval policy, the organization's fiscal profile (for supplier CFDIs), receipts, and the
member/role projection of auth events."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, DateTime, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import service_base
from shared.members import members_table
from shared.outbox import outbox_table

Base = service_base("expense")
outbox = outbox_table(Base.metadata)
members = members_table(Base.metadata)

MONEY = Numeric(18, 2)
RATE = Numeric(18, 6)


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _org() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), index=True)


class FiscalProfile(Base):
    """The organization as receiver of supplier CFDIs: its RFC must be the CFDI's Receptor/@Rfc.
    Kept here (set by an admin) because expense never reads the invoice service's issuer table."""

    __tablename__ = "fiscal_profiles"
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    rfc: Mapped[str] = mapped_column(String(13))
    legal_name: Mapped[str] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class Category(Base):
    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org()
    name: Mapped[str] = mapped_column(String(120))
    sat_hint: Mapped[str | None] = mapped_column(String(8))  # c_ClaveProdServ group usually billed
    limit_mxn: Mapped[Decimal | None] = mapped_column(MONEY)
    limit_action: Mapped[str] = mapped_column(String(10), server_default="FLAG")
    created_at: Mapped[datetime] = _created()


class ApprovalPolicy(Base):
    __tablename__ = "approval_policies"
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_org_created", "organization_id", text("created_at DESC"), text("id DESC")),)
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    submitter_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()


class Expense(Base):
    __tablename__ = "expenses"
    __table_args__ = (
        Index("ix_expenses_org_created", "organization_id", text("created_at DESC"), text("id DESC")),
        # One expense per supplier CFDI within an organization (CFDI_DUPLICATE).
        Index("uq_expenses_org_cfdi_uuid", "organization_id", "cfdi_uuid", unique=True,
              postgresql_where=text("cfdi_uuid IS NOT NULL")),
    )
    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    submitter_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    report_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("reports.id", ondelete="SET NULL"), index=True)
    status: Mapped[str] = mapped_column(String(20), server_default="DRAFT")
    round: Mapped[int] = mapped_column(Integer, server_default=text("0"))  # +1 per submission
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    exchange_rate: Mapped[Decimal | None] = mapped_column(RATE)  # MXN per unit; NULL for MXN
    amount_mxn: Mapped[Decimal] = mapped_column(MONEY)
    expense_date: Mapped[date] = mapped_column(Date)
    category_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    merchant_name: Mapped[str | None] = mapped_column(String(300))
    merchant_rfc: Mapped[str | None] = mapped_column(String(13))
    description: Mapped[str] = mapped_column(Text, server_default="")
    payment_method: Mapped[str] = mapped_column(String(20))
    project_tag: Mapped[str | None] = mapped_column(String(60))
    # From the supplier's CFDI, when there is one.
    subtotal: Mapped[Decimal | None] = mapped_column(MONEY)
    iva_transferred: Mapped[Decimal | None] = mapped_column(MONEY)
    isr_withheld: Mapped[Decimal | None] = mapped_column(MONEY)
    iva_withheld: Mapped[Decimal | None] = mapped_column(MONEY)
    cfdi_uuid: Mapped[str | None] = mapped_column(String(36))
    cfdi_payment_form: Mapped[str | None] = mapped_column(String(2))  # c_FormaPago
    cfdi_payment_method: Mapped[str | None] = mapped_column(String(3))  # c_MetodoPago: PUE / PPD
    cfdi_xml: Mapped[str | None] = mapped_column(Text)
    # SAT's answer about the CFDI (subgraphs/expense/sat_check.py SatState) and when it was asked.
    cfdi_sat_status: Mapped[str | None] = mapped_column(String(20))
    cfdi_sat_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deductibility_reasons: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    policy_flags: Mapped[list[dict[str, str]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    approval_chain: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())


class AuditEntry(Base):
    """Who did what to an expense, when, and why. Approvals of the current round are the APPROVE*
    entries whose `round` equals the expense's."""

    __tablename__ = "audit_entries"
    id: Mapped[uuid.UUID] = _id()
    expense_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("expenses.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    actor_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    round: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class Receipt(Base):
    """A receipt file in the object store; `content_type` is what the bytes turned out to be."""

    __tablename__ = "receipts"
    id: Mapped[uuid.UUID] = _id()
    expense_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("expenses.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    declared_type: Mapped[str] = mapped_column(String(80))
    declared_size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(80))
    size: Mapped[int | None] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(300))
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # OCR of photos: PENDING -> DONE | FAILED | UNAVAILABLE (engine not installed); NULL: not a photo.
    ocr_status: Mapped[str | None] = mapped_column(String(20))
    ocr_suggestions: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_by: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _created()
