"""Reads: invoices by id, UUID or page (filters, keyset cursor), their history, the dashboard."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import PlainRow, plain_rows, plain_select
from shared.runtime import Runtime
from shared.validation import INT32_MAX
from subgraphs.invoice import models as m
from sat.cfdi.totals import round_money
from subgraphs.invoice.lifecycle import Status
from subgraphs.invoice.service.common import utcnow


async def invoices_by_ids(session: AsyncSession, org: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, m.Invoice]:
    rows = await session.scalars(select(m.Invoice).where(m.Invoice.organization_id == org, m.Invoice.id.in_(ids)))
    return {r.id: r for r in rows}


async def invoice_by_uuid(session: AsyncSession, org: uuid.UUID, value: str) -> m.Invoice | None:
    return await session.scalar(select(m.Invoice).where(m.Invoice.organization_id == org,
                                                        m.Invoice.uuid == value.strip().upper()))


# Built once (statements are immutable; each request adds its filters to a copy).
_PAGE = plain_select(m.Invoice.__table__, json_columns=("document", "issues"))


async def invoices_page(session: AsyncSession, org: uuid.UUID, *, filters: dict, after: list | None,
                        limit: int) -> list[PlainRow]:
    """A page of invoices as `PlainRow`s: a list page only reads them (no ORM identity work), and
    one that shows no draft field (the dashboard) never decodes the 2 JSON documents per row."""
    q = _PAGE.where(m.Invoice.organization_id == org)
    if filters.get("status"):
        q = q.where(m.Invoice.status == filters["status"])
    if filters.get("customer_id"):
        q = q.where(m.Invoice.customer_id == filters["customer_id"])
    if filters.get("type"):
        q = q.where(m.Invoice.voucher_type == filters["type"])
    if filters.get("date_from"):
        q = q.where(m.Invoice.created_at >= filters["date_from"])
    if filters.get("date_to"):
        q = q.where(m.Invoice.created_at < filters["date_to"])
    if filters.get("search"):
        s = filters["search"].strip()
        like = f"%{s}%"
        conds = [m.Invoice.customer_name.ilike(like), m.Invoice.customer_rfc.ilike(like), m.Invoice.uuid.ilike(like)]
        if s.isascii() and s.isdigit() and int(s) <= INT32_MAX:  # a folio is a 32-bit integer column
            conds.append(m.Invoice.folio == int(s))
        q = q.where(or_(*conds))
    if after:
        ts, last_id = after  # typed by decode_cursor
        q = q.where(or_(m.Invoice.created_at < ts, and_(m.Invoice.created_at == ts, m.Invoice.id < last_id)))
    q = q.order_by(m.Invoice.created_at.desc(), m.Invoice.id.desc()).limit(limit)
    return await plain_rows(session, q)


async def history(session: AsyncSession, invoice_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[m.InvoiceEvent]]:
    rows = await session.scalars(select(m.InvoiceEvent).where(m.InvoiceEvent.invoice_id.in_(invoice_ids))
                                 .order_by(m.InvoiceEvent.created_at, m.InvoiceEvent.id))
    out: dict[uuid.UUID, list[m.InvoiceEvent]] = {i: [] for i in invoice_ids}
    for r in rows:
        out[r.invoice_id].append(r)
    return out


async def dashboard(session: AsyncSession, org: uuid.UUID, year: int) -> list[tuple[int, str, int, Decimal]]:
    """(month, status, count, total in MXN) for invoices created in `year`."""
    month = func.extract("month", func.timezone("America/Mexico_City", m.Invoice.created_at))
    mxn = func.sum(m.Invoice.total * func.coalesce(m.Invoice.exchange_rate, 1))
    # A range on created_at (not extract(year)) so the (organization_id, created_at) index serves it.
    mexico = ZoneInfo("America/Mexico_City")
    start, end = datetime(year, 1, 1, tzinfo=mexico), datetime(year + 1, 1, 1, tzinfo=mexico)
    q = (select(month.label("month"), m.Invoice.status, func.count(), mxn)
         .where(m.Invoice.organization_id == org, m.Invoice.created_at >= start, m.Invoice.created_at < end)
         .group_by(text("1"), m.Invoice.status).order_by(text("1"), m.Invoice.status))
    return [(int(r[0]), r[1], int(r[2]), round_money(Decimal(r[3] or 0), 2)) for r in (await session.execute(q)).all()]


async def waiting(rt: Runtime, status: Status, older_than: timedelta) -> list[uuid.UUID]:
    """Invoices in `status` (STAMPING, CANCELLING) untouched for `older_than`: the sweep's candidates."""
    async with rt.sessionmaker() as session:
        return list((await session.scalars(select(m.Invoice.id).where(
            m.Invoice.status == status.value, m.Invoice.updated_at < utcnow() - older_than))).all())
