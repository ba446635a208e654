"""Customers (Receptor): the receivers an organization invoices, with their usual products."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import PlainRow, plain_rows, plain_select, transaction
from shared.errors import InputError, UserError
from shared.runtime import Runtime
from shared.validation import email_problem
from subgraphs.invoice import models as m
from sat.cfdi import catalogs
from subgraphs.invoice.service.common import utcnow
from subgraphs.invoice.service.issuer import party_problems


def _clean_customer(data: dict) -> dict:
    out = {k: v for k, v in data.items() if v is not None}
    if "rfc" in out:
        out["rfc"] = out["rfc"].strip().upper()
    if "legal_name" in out:
        out["legal_name"] = out["legal_name"].strip().upper()
    if "email" in out:
        out["email"] = out["email"].strip().lower() or None
    return out


def _check_customer(data: dict) -> None:
    errors = party_problems(data)

    def add(code: str, message: str, *path: str | int) -> None:
        errors.append(UserError(field=["input", *(str(p) for p in path)], code=code, message=message))

    if data.get("cfdi_use") and not catalogs.contains("c_UsoCFDI", data["cfdi_use"]):
        add("INVALID_CFDI_USE", "El uso de CFDI no está en el catálogo c_UsoCFDI.", "cfdiUse")
    if data.get("email") and (problem := email_problem(data["email"])):
        add("INVALID_EMAIL", problem, "email")
    for i, p in enumerate(data.get("products") or []):
        if not catalogs.contains("c_ClaveProdServ", p.get("product_code")):
            add("INVALID_PRODUCT_CODE", "La clave de producto no está en c_ClaveProdServ.", "products", i, "productCode")
        if not catalogs.contains("c_ClaveUnidad", p.get("unit_code")):
            add("INVALID_UNIT_CODE", "La clave de unidad no está en c_ClaveUnidad.", "products", i, "unitCode")
    if errors:
        raise InputError(errors)


async def create_customer(rt: Runtime, org: uuid.UUID, data: dict) -> m.Customer:
    data = _clean_customer(data)
    data.setdefault("cfdi_use", "G03")
    _check_customer(data)
    async with transaction(rt.sessionmaker) as session:
        row = m.Customer(organization_id=org, **{k: v for k, v in data.items()})
        session.add(row)
        await session.flush()
        return row


async def update_customer(rt: Runtime, org: uuid.UUID, customer_id: uuid.UUID, data: dict) -> m.Customer:
    data = _clean_customer(data)
    async with transaction(rt.sessionmaker) as session:
        row = await session.get(m.Customer, customer_id, with_for_update=True)
        if row is None or row.organization_id != org or row.deleted_at is not None:
            raise InputError.single("NOT_FOUND", "Cliente no encontrado.", ["id"])
        merged = {k: getattr(row, k) for k in ("rfc", "legal_name", "tax_regime", "postal_code", "cfdi_use", "email",
                                                "products")}
        merged.update(data)
        _check_customer(merged)
        for k, v in data.items():
            setattr(row, k, v)
        return row


async def delete_customer(rt: Runtime, org: uuid.UUID, customer_id: uuid.UUID) -> None:
    async with transaction(rt.sessionmaker) as session:
        row = await session.get(m.Customer, customer_id, with_for_update=True)
        if row is None or row.organization_id != org or row.deleted_at is not None:
            raise InputError.single("NOT_FOUND", "Cliente no encontrado.", ["id"])
        row.deleted_at = utcnow()


async def customers_page(session: AsyncSession, org: uuid.UUID, *, search: str | None, after: list | None,
                         limit: int) -> list[m.Customer]:
    q = select(m.Customer).where(m.Customer.organization_id == org, m.Customer.deleted_at.is_(None))
    if search:
        like = f"%{search.strip()}%"
        q = q.where(or_(m.Customer.legal_name.ilike(like), m.Customer.rfc.ilike(like), m.Customer.email.ilike(like)))
    if after:
        q = q.where(or_(m.Customer.legal_name > after[0],
                        and_(m.Customer.legal_name == after[0], m.Customer.id > after[1])))
    q = q.order_by(m.Customer.legal_name, m.Customer.id).limit(limit)
    return list((await session.scalars(q)).all())


_BY_IDS = plain_select(m.Customer.__table__, json_columns=("products",))  # built once; `where` copies


async def customers_by_ids(session: AsyncSession, org: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, PlainRow]:
    """For the loader (reads only): plain rows, their `products` decoded only when shown."""
    rows = await plain_rows(session, _BY_IDS.where(m.Customer.organization_id == org, m.Customer.id.in_(ids)))
    return {r.id: r for r in rows}
