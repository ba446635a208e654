"""Expense use cases: one function per thing a user can do, each in one transaction that also
writes the audit entry and the outbox event. Every query is scoped to the caller's organization;
roles come from this service's projection of auth's membership events, read in the transaction."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.crypto import signed_path
from shared.db import transaction
from shared.errors import ForbiddenError, InputError, NotFoundError, UserError
from shared.events import ExpenseApproved, ExpenseReimbursed, ExpenseRejected, ExpenseSubmitted, NextApproval
from shared.members import role_of
from shared.object_store import ObjectStoreError, receipts_store
from shared.outbox import emit
from shared.permissions import ALL_PERMISSIONS, ROLE_PERMISSIONS, ROLES, Permission as P
from shared.runtime import Runtime
from shared.tokens import Principal
from subgraphs.expense import approval as ap
from subgraphs.expense import models as m
from subgraphs.expense.receipts import ReceiptRefused, check_receipt, normalize_declared_type
from subgraphs.expense.sat_check import SatState, ask_sat
from subgraphs.expense.supplier_cfdi import CfdiRefused, SupplierCfdi, read_supplier_cfdi
from sat.cfdi import parse_cfdi
from sat.cfdi.catalogs import contains as in_catalog
from sat.cfdi.rfc import valid_rfc

log = logging.getLogger(__name__)

PAYMENT_METHODS = ("CASH", "COMPANY_CARD", "PERSONAL_CARD", "TRANSFER", "OTHER")
MAX_COMMENT = 2000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _err(code: str, message: str, *path: str) -> InputError:
    return InputError([UserError(field=list(path) or None, code=code, message=message)])


def require(principal: Principal, perm: P) -> None:
    if not principal.has(perm.value):
        raise ForbiddenError(extensions={"missingPermissions": [perm.value]})


def can_read_all(principal: Principal) -> bool:
    return principal.has(P.EXPENSE_READ.value)


async def _expense(session: AsyncSession, principal: Principal, expense_id: uuid.UUID, *, lock: bool = False) -> m.Expense:
    """The expense if the caller may see it; another organization's looks exactly like a missing one."""
    q = select(m.Expense).where(m.Expense.id == expense_id, m.Expense.organization_id == principal.organization_id)
    row = (await session.execute(q.with_for_update() if lock else q)).scalar_one_or_none()
    if row is None or not (row.submitter_id == principal.user_id or can_read_all(principal)
                           or principal.has(P.EXPENSE_APPROVE.value)):
        raise NotFoundError("Gasto no encontrado.")
    return row


def _audit(session: AsyncSession, e: m.Expense, actor: uuid.UUID, action: str, from_status: str | None,
           comment: str | None = None) -> None:
    session.add(m.AuditEntry(expense_id=e.id, organization_id=e.organization_id, actor_id=actor, action=action,
                             from_status=from_status, to_status=e.status, round=e.round, comment=comment))


# --- input --------------------------------------------------------------------------------------

@dataclass
class ExpenseData:
    amount: Decimal | None = None
    currency: str | None = None
    exchange_rate: Decimal | None = None
    expense_date: date | None = None
    category_id: uuid.UUID | None = None
    merchant_name: str | None = None
    merchant_rfc: str | None = None
    description: str | None = None
    payment_method: str | None = None
    project_tag: str | None = None


async def _check_data(session: AsyncSession, org: uuid.UUID, d: ExpenseData, *, creating: bool) -> None:
    errors: list[UserError] = []

    def bad(field: str, code: str, message: str) -> None:
        errors.append(UserError(field=["input", field], code=code, message=message))

    if creating:
        for f, name in (("amount", "El monto"), ("expense_date", "La fecha"), ("payment_method", "La forma de pago")):
            if getattr(d, f) is None:
                bad(_camel(f), "REQUIRED", f"{name} es obligatorio.")
    if d.amount is not None:
        if not d.amount.is_finite() or d.amount <= 0 or d.amount > Decimal("999999999999"):
            bad("amount", "INVALID_AMOUNT", "El monto debe ser mayor que cero.")
        elif d.amount != d.amount.quantize(ap.CENT):
            bad("amount", "INVALID_AMOUNT", "El monto admite a lo más dos decimales.")
    currency = d.currency or ("MXN" if creating else None)
    if currency is not None:
        if not in_catalog("c_Moneda", currency) or currency == "XXX":
            bad("currency", "INVALID_CURRENCY", "Moneda no válida (catálogo c_Moneda del SAT).")
        elif currency != "MXN" and (d.exchange_rate is None or not d.exchange_rate.is_finite() or d.exchange_rate <= 0):
            bad("exchangeRate", "EXCHANGE_RATE_REQUIRED", "Indica el tipo de cambio a MXN para gastos en otra moneda.")
    if d.payment_method is not None and d.payment_method not in PAYMENT_METHODS:
        bad("paymentMethod", "INVALID_PAYMENT_METHOD", "Forma de pago no válida.")
    if d.merchant_rfc and not valid_rfc(d.merchant_rfc):
        bad("merchantRfc", "INVALID_RFC", "El RFC del comercio no es válido.")
    if d.description is not None and len(d.description) > MAX_COMMENT:
        bad("description", "TOO_LONG", f"La descripción admite a lo más {MAX_COMMENT} caracteres.")
    if d.project_tag is not None and len(d.project_tag) > 60:
        bad("projectTag", "TOO_LONG", "La etiqueta de proyecto admite a lo más 60 caracteres.")
    if d.category_id is not None and await _category(session, org, d.category_id) is None:
        bad("categoryId", "UNKNOWN_CATEGORY", "La categoría no existe en tu organización.")
    if errors:
        raise InputError(errors)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _apply(e: m.Expense, d: ExpenseData) -> None:
    for f in ("amount", "currency", "exchange_rate", "expense_date", "category_id", "merchant_name", "description",
              "payment_method", "project_tag"):
        value = getattr(d, f)
        if value is not None:
            setattr(e, f, value)
    if d.merchant_rfc is not None:
        e.merchant_rfc = d.merchant_rfc.strip().upper() or None
    if e.currency == "MXN":
        e.exchange_rate = None
    e.amount_mxn = ap.amount_in_mxn(e.amount, e.currency, e.exchange_rate)


async def create_expense(rt: Runtime, principal: Principal, d: ExpenseData) -> m.Expense:
    require(principal, P.EXPENSE_SUBMIT)
    async with transaction(rt.sessionmaker) as session:
        await _check_data(session, principal.organization_id, d, creating=True)
        e = m.Expense(organization_id=principal.organization_id, submitter_id=principal.user_id, status="DRAFT",
                      round=0, currency="MXN", description="")
        _apply(e, d)
        session.add(e)
        await session.flush()
        _audit(session, e, principal.user_id, "CREATE", None)
        return e


async def update_expense(rt: Runtime, principal: Principal, expense_id: uuid.UUID, d: ExpenseData) -> m.Expense:
    require(principal, P.EXPENSE_SUBMIT)
    async with transaction(rt.sessionmaker) as session:
        e = await _own_editable(session, principal, expense_id)
        if e.cfdi_uuid and any(v is not None for v in (d.amount, d.currency, d.exchange_rate, d.expense_date,
                                                        d.merchant_name, d.merchant_rfc)):
            raise _err("CFDI_LOCKED", "El monto, la fecha y el comercio vienen del CFDI y no se editan a mano.", "input")
        await _check_data(session, principal.organization_id, d, creating=False)
        if d.currency is not None and d.currency != "MXN" and d.exchange_rate is None:
            raise _err("EXCHANGE_RATE_REQUIRED", "Indica el tipo de cambio a MXN.", "input", "exchangeRate")
        _apply(e, d)
        _audit(session, e, principal.user_id, "UPDATE", e.status)
        return e


async def _own_editable(session: AsyncSession, principal: Principal, expense_id: uuid.UUID) -> m.Expense:
    e = await _expense(session, principal, expense_id, lock=True)
    if e.submitter_id != principal.user_id:
        raise ForbiddenError("Solo quien registró el gasto puede modificarlo.")
    if ap.Status(e.status) not in ap.EDITABLE:
        raise _err("NOT_EDITABLE", f"Un gasto {ap.STATUS_NAMES[ap.Status(e.status)]} ya no se modifica.", "id")
    return e


# --- workflow -----------------------------------------------------------------------------------

def _next_approval(step: ap.Step | None) -> NextApproval | None:
    return None if step is None else NextApproval(permission=step.permission, role=step.role)


def _ref(e: m.Expense, comment: str | None) -> dict[str, Any]:
    return dict(expense_id=e.id, submitter_id=e.submitter_id, amount=e.amount, currency=e.currency,
                amount_mxn=e.amount_mxn, merchant_name=e.merchant_name, description=e.description or "", comment=comment)


def _comment(comment: str | None, field: str = "comment") -> str | None:
    comment = (comment or "").strip() or None
    if comment and len(comment) > MAX_COMMENT:
        raise _err("TOO_LONG", f"El comentario admite a lo más {MAX_COMMENT} caracteres.", field)
    return comment


async def _category_limit(session: AsyncSession, e: m.Expense) -> ap.CategoryLimit | None:
    if e.category_id is None:
        return None
    c = await session.get(m.Category, e.category_id)
    return None if c is None else ap.CategoryLimit(c.name, c.limit_mxn, ap.LimitAction(c.limit_action))


async def _submit(session: AsyncSession, principal: Principal, e: m.Expense, comment: str | None) -> None:
    if e.submitter_id != principal.user_id:
        raise ForbiddenError("Solo quien registró el gasto puede enviarlo.")
    try:
        new_status = ap.transition(ap.Status(e.status), ap.Action.SUBMIT)
    except ap.TransitionError as exc:
        raise _err("INVALID_TRANSITION", str(exc), "id") from None
    limits = ap.check_category_limit(await _category_limit(session, e), e.amount_mxn)
    if limits.blocked:
        raise _err(limits.blocked.code, limits.blocked.message, "id")
    policy = await approval_policy(session, principal.organization_id)
    submitter_role = await role_of(session, m.members, principal.organization_id, principal.user_id)
    chain = ap.required_chain(policy, e.amount_mxn, e.category_id, submitter_role)
    old = e.status
    e.status, e.round = new_status.value, e.round + 1
    e.approval_chain = ap.chain_to_json(chain)
    e.policy_flags = [{"code": f.code, "message": f.message} for f in limits.flags]
    _audit(session, e, principal.user_id, ap.Action.SUBMIT.value, old, comment)
    await emit(session, m.outbox, ExpenseSubmitted(**_ref(e, comment), next_approval=_next_approval(chain[0])),
               organization_id=e.organization_id, actor_id=principal.user_id, aggregate_id=str(e.id))


async def submit_expense(rt: Runtime, principal: Principal, expense_id: uuid.UUID, comment: str | None) -> m.Expense:
    require(principal, P.EXPENSE_SUBMIT)
    comment = _comment(comment)
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id, lock=True)
        await _submit(session, principal, e, comment)
        return e


async def approvals_this_round(session: AsyncSession, expenses: Sequence[m.Expense]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Who approved each expense in its current round, in order (one query for the batch)."""
    out: dict[uuid.UUID, list[uuid.UUID]] = {e.id: [] for e in expenses}
    if not expenses:
        return out
    rounds = {e.id: e.round for e in expenses}
    rows = await session.execute(
        select(m.AuditEntry.expense_id, m.AuditEntry.actor_id, m.AuditEntry.round)
        .where(m.AuditEntry.expense_id.in_(list(rounds)),
               m.AuditEntry.action.in_([ap.Action.APPROVE.value, ap.Action.APPROVE_STEP.value]))
        .order_by(m.AuditEntry.created_at, m.AuditEntry.id))
    for expense_id, actor, rnd in rows:
        if rnd == rounds[expense_id]:
            out[expense_id].append(actor)
    return out


async def _approver(session: AsyncSession, principal: Principal) -> ap.Approver:
    role = await role_of(session, m.members, principal.organization_id, principal.user_id)
    return ap.Approver(principal.user_id, role, frozenset(principal.permissions))


async def _decide(session: AsyncSession, principal: Principal, e: m.Expense) -> tuple[tuple[ap.Step, ...], list[uuid.UUID]]:
    if ap.Status(e.status) != ap.Status.SUBMITTED:
        raise _err("INVALID_TRANSITION", f"El gasto está {ap.STATUS_NAMES[ap.Status(e.status)]}, no pendiente de aprobación.", "id")
    chain = ap.chain_from_json(e.approval_chain)
    done = (await approvals_this_round(session, [e]))[e.id]
    refusal = ap.approval_refusal(chain, done, await _approver(session, principal), e.submitter_id)
    if refusal:
        raise _err(refusal.code, refusal.message, "id")
    return chain, done


async def approve_expense(rt: Runtime, principal: Principal, expense_id: uuid.UUID, comment: str | None) -> m.Expense:
    require(principal, P.EXPENSE_APPROVE)
    comment = _comment(comment)
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id, lock=True)
        chain, done = await _decide(session, principal, e)
        action = ap.approve_action(chain, done)
        old, e.status = e.status, ap.transition(ap.Status(e.status), action).value
        _audit(session, e, principal.user_id, action.value, old, comment)
        following = ap.next_step(chain, [*done, principal.user_id])
        await emit(session, m.outbox, ExpenseApproved(**_ref(e, comment), approver_id=principal.user_id,
                                                      fully_approved=action == ap.Action.APPROVE,
                                                      next_approval=_next_approval(following)),
                   organization_id=e.organization_id, actor_id=principal.user_id, aggregate_id=str(e.id))
        return e


async def reject_expense(rt: Runtime, principal: Principal, expense_id: uuid.UUID, reason: str) -> m.Expense:
    require(principal, P.EXPENSE_APPROVE)
    reason = _comment(reason, "reason")
    if not reason:
        raise _err("REASON_REQUIRED", "Indica el motivo del rechazo.", "reason")
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id, lock=True)
        await _decide(session, principal, e)
        old, e.status = e.status, ap.transition(ap.Status(e.status), ap.Action.REJECT).value
        _audit(session, e, principal.user_id, ap.Action.REJECT.value, old, reason)
        await emit(session, m.outbox, ExpenseRejected(**_ref(e, None), approver_id=principal.user_id, reason=reason),
                   organization_id=e.organization_id, actor_id=principal.user_id, aggregate_id=str(e.id))
        return e


async def reimburse_expense(rt: Runtime, principal: Principal, expense_id: uuid.UUID, comment: str | None) -> m.Expense:
    require(principal, P.EXPENSE_APPROVE)
    comment = _comment(comment)
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id, lock=True)
        if e.submitter_id == principal.user_id:
            raise _err("SELF_APPROVAL", "No puedes registrar el reembolso de tus propios gastos.", "id")
        try:
            new_status = ap.transition(ap.Status(e.status), ap.Action.REIMBURSE)
        except ap.TransitionError as exc:
            raise _err("INVALID_TRANSITION", str(exc), "id") from None
        old, e.status = e.status, new_status.value
        _audit(session, e, principal.user_id, ap.Action.REIMBURSE.value, old, comment)
        await emit(session, m.outbox, ExpenseReimbursed(**_ref(e, comment)),
                   organization_id=e.organization_id, actor_id=principal.user_id, aggregate_id=str(e.id))
        return e


# --- queries ------------------------------------------------------------------------------------

def _newest_first(q, model, after):
    """Keyset page after the cursor's (created_at, id), newest first."""
    if after:
        ts, last_id = after
        q = q.where(or_(model.created_at < ts, and_(model.created_at == ts, model.id < last_id)))
    return q.order_by(model.created_at.desc(), model.id.desc())


async def list_expenses(session: AsyncSession, principal: Principal, filters: dict[str, Any], limit: int,
                        after) -> list[m.Expense]:
    if not (principal.has(P.EXPENSE_SUBMIT.value) or can_read_all(principal)):
        raise ForbiddenError(extensions={"missingPermissions": [P.EXPENSE_READ.value]})
    q = select(m.Expense).where(m.Expense.organization_id == principal.organization_id)
    if not can_read_all(principal) or filters.get("mine"):
        q = q.where(m.Expense.submitter_id == principal.user_id)
    for key, column in (("status", m.Expense.status), ("category_id", m.Expense.category_id),
                        ("submitter_id", m.Expense.submitter_id), ("report_id", m.Expense.report_id),
                        ("project_tag", m.Expense.project_tag)):
        if filters.get(key) is not None:
            q = q.where(column == filters[key])
    if filters.get("date_from"):
        q = q.where(m.Expense.expense_date >= filters["date_from"])
    if filters.get("date_to"):
        q = q.where(m.Expense.expense_date <= filters["date_to"])
    return list((await session.scalars(_newest_first(q, m.Expense, after).limit(limit))).all())


async def get_expense(session: AsyncSession, principal: Principal, expense_id: uuid.UUID) -> m.Expense:
    if not (principal.has(P.EXPENSE_SUBMIT.value) or can_read_all(principal) or principal.has(P.EXPENSE_APPROVE.value)):
        raise ForbiddenError(extensions={"missingPermissions": [P.EXPENSE_READ.value]})
    return await _expense(session, principal, expense_id)


async def pending_approvals(session: AsyncSession, principal: Principal, user_id: uuid.UUID, limit: int,
                            after) -> list[m.Expense]:
    """Submitted expenses whose next step `user_id` may take. The queue is filtered in Python
    (the rule needs the chain, the round's approvals and the role), one page at a time."""
    if user_id != principal.user_id and not can_read_all(principal):
        raise ForbiddenError(extensions={"missingPermissions": [P.EXPENSE_READ.value]})
    role = await role_of(session, m.members, principal.organization_id, user_id)
    if user_id == principal.user_id:
        perms = frozenset(principal.permissions)
    else:
        perms = frozenset(p.value for p in ROLE_PERMISSIONS.get(role or "", frozenset()))
    approver = ap.Approver(user_id, role, perms)
    out: list[m.Expense] = []
    cursor = after
    while len(out) < limit:
        q = select(m.Expense).where(m.Expense.organization_id == principal.organization_id,
                                    m.Expense.status == ap.Status.SUBMITTED.value, m.Expense.submitter_id != user_id)
        batch = list((await session.scalars(_newest_first(q, m.Expense, cursor).limit(200))).all())
        if not batch:
            break
        done = await approvals_this_round(session, batch)
        for e in batch:
            if ap.approval_refusal(ap.chain_from_json(e.approval_chain), done[e.id], approver, e.submitter_id) is None:
                out.append(e)
        cursor = (batch[-1].created_at, batch[-1].id)
        if len(batch) < 200:
            break
    return out[:limit]


async def _grouped(session: AsyncSession, model, parent, ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    """Children of many parents in one query, oldest first: the body of every list-field loader."""
    out: dict[uuid.UUID, list] = {i: [] for i in ids}
    for row in await session.scalars(select(model).where(parent.in_(ids)).order_by(model.created_at, model.id)):
        out[getattr(row, parent.key)].append(row)
    return out


async def history(session: AsyncSession, expense_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[m.AuditEntry]]:
    return await _grouped(session, m.AuditEntry, m.AuditEntry.expense_id, expense_ids)


# --- categories, policy, fiscal profile ---------------------------------------------------------

async def _category(session: AsyncSession, org: uuid.UUID, category_id: uuid.UUID) -> m.Category | None:
    c = await session.get(m.Category, category_id)
    return c if c is not None and c.organization_id == org else None


async def categories_by_ids(session: AsyncSession, org: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, m.Category]:
    rows = await session.scalars(select(m.Category).where(m.Category.organization_id == org, m.Category.id.in_(ids)))
    return {c.id: c for c in rows}


async def list_categories(session: AsyncSession, principal: Principal) -> list[m.Category]:
    return list((await session.scalars(select(m.Category).where(m.Category.organization_id == principal.organization_id)
                                       .order_by(m.Category.name))).all())


async def create_category(rt: Runtime, principal: Principal, *, name: str, sat_hint: str | None,
                          limit_mxn: Decimal | None, limit_action: str) -> m.Category:
    require(principal, P.ORG_MANAGE)
    name = (name or "").strip()
    errors = []
    if not name or len(name) > 120:
        errors.append(UserError(field=["input", "name"], code="REQUIRED", message="El nombre es obligatorio (máx. 120)."))
    if sat_hint and not in_catalog("c_ClaveProdServ", sat_hint):
        errors.append(UserError(field=["input", "satHint"], code="UNKNOWN_PRODUCT_CODE",
                                message="La clave no está en el catálogo c_ClaveProdServ del SAT."))
    if limit_mxn is not None and (not limit_mxn.is_finite() or limit_mxn <= 0):
        errors.append(UserError(field=["input", "limitMxn"], code="INVALID_AMOUNT", message="El límite debe ser positivo."))
    if errors:
        raise InputError(errors)
    try:
        async with transaction(rt.sessionmaker) as session:
            c = m.Category(organization_id=principal.organization_id, name=name, sat_hint=sat_hint or None,
                           limit_mxn=limit_mxn, limit_action=limit_action)
            session.add(c)
            await session.flush()
            return c
    except IntegrityError:
        raise _err("DUPLICATE_CATEGORY", "Ya existe una categoría con ese nombre.", "input", "name") from None


async def approval_policy(session: AsyncSession, org: uuid.UUID) -> ap.Policy:
    row = await session.get(m.ApprovalPolicy, org)
    return ap.Policy.from_json(row.rules if row else None)


async def update_approval_policy(rt: Runtime, principal: Principal, policy: ap.Policy) -> ap.Policy:
    require(principal, P.ORG_MANAGE)
    problems = ap.policy_problems(policy, ROLES, ALL_PERMISSIONS)
    if problems:
        raise InputError([UserError(field=p.field, code=p.code, message=p.message) for p in problems])
    async with transaction(rt.sessionmaker) as session:
        known = await categories_by_ids(session, principal.organization_id,
                                        [c for s in policy.steps for c in s.categories])
        for i, s in enumerate(policy.steps):
            if set(s.categories) - set(known):
                raise _err("UNKNOWN_CATEGORY", "La categoría no existe en tu organización.", "input", "steps", str(i),
                           "categoryIds")
        row = await session.get(m.ApprovalPolicy, principal.organization_id, with_for_update=True)
        if row is None:
            session.add(m.ApprovalPolicy(organization_id=principal.organization_id, rules=policy.to_json(),
                                         updated_by=principal.user_id))
        else:
            row.rules, row.updated_by = policy.to_json(), principal.user_id
        return policy


async def fiscal_profile(session: AsyncSession, org: uuid.UUID) -> m.FiscalProfile | None:
    return await session.get(m.FiscalProfile, org)


async def set_fiscal_profile(rt: Runtime, principal: Principal, rfc: str, legal_name: str) -> m.FiscalProfile:
    require(principal, P.ORG_MANAGE)
    rfc = (rfc or "").strip().upper()
    if not valid_rfc(rfc):
        raise _err("INVALID_RFC", "El RFC no es válido.", "input", "rfc")
    if not (legal_name or "").strip():
        raise _err("REQUIRED", "La razón social es obligatoria.", "input", "legalName")
    async with transaction(rt.sessionmaker) as session:
        row = await session.get(m.FiscalProfile, principal.organization_id, with_for_update=True)
        if row is None:
            row = m.FiscalProfile(organization_id=principal.organization_id)
            session.add(row)
        row.rfc, row.legal_name = rfc, legal_name.strip()
        return row


# --- reports ------------------------------------------------------------------------------------

async def create_report(rt: Runtime, principal: Principal, title: str, expense_ids: list[uuid.UUID]) -> m.Report:
    require(principal, P.EXPENSE_SUBMIT)
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise _err("REQUIRED", "El título es obligatorio (máx. 200 caracteres).", "input", "title")
    async with transaction(rt.sessionmaker) as session:
        report = m.Report(organization_id=principal.organization_id, submitter_id=principal.user_id, title=title)
        session.add(report)
        await session.flush()
        for i, expense_id in enumerate(expense_ids):
            try:
                e = await _own_editable(session, principal, expense_id)
            except (NotFoundError, ForbiddenError, InputError):
                raise _err("INVALID_EXPENSE", "Solo se agrupan tus gastos en borrador o rechazados.", "input",
                           "expenseIds", str(i)) from None
            e.report_id = report.id
        return report


async def submit_report(rt: Runtime, principal: Principal, report_id: uuid.UUID, comment: str | None) -> m.Report:
    """Submit every draft or rejected expense of the report together: all or none."""
    require(principal, P.EXPENSE_SUBMIT)
    comment = _comment(comment)
    async with transaction(rt.sessionmaker) as session:
        report = await session.get(m.Report, report_id)
        if report is None or report.organization_id != principal.organization_id or report.submitter_id != principal.user_id:
            raise NotFoundError("Informe no encontrado.")
        expenses = (await session.scalars(select(m.Expense).where(m.Expense.report_id == report.id)
                                          .order_by(m.Expense.created_at).with_for_update())).all()
        pending = [e for e in expenses if ap.Status(e.status) in ap.EDITABLE]
        if not pending:
            raise _err("NOTHING_TO_SUBMIT", "El informe no tiene gastos por enviar.", "id")
        for e in pending:
            await _submit(session, principal, e, comment)
        return report


async def list_reports(session: AsyncSession, principal: Principal, limit: int, after) -> list[m.Report]:
    if not (principal.has(P.EXPENSE_SUBMIT.value) or can_read_all(principal)):
        raise ForbiddenError(extensions={"missingPermissions": [P.EXPENSE_READ.value]})
    q = select(m.Report).where(m.Report.organization_id == principal.organization_id)
    if not can_read_all(principal):
        q = q.where(m.Report.submitter_id == principal.user_id)
    return list((await session.scalars(_newest_first(q, m.Report, after).limit(limit))).all())


async def report_expenses(session: AsyncSession, report_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[m.Expense]]:
    return await _grouped(session, m.Expense, m.Expense.report_id, report_ids)


def report_status(statuses: Sequence[str]) -> str:
    """A report is as far along as its least advanced expense."""
    order = [s.value for s in (ap.Status.DRAFT, ap.Status.REJECTED, ap.Status.SUBMITTED, ap.Status.APPROVED,
                               ap.Status.REIMBURSED)]
    return min(statuses, key=order.index) if statuses else ap.Status.DRAFT.value


# --- supplier CFDI ------------------------------------------------------------------------------

def _cfdi_error(exc: CfdiRefused) -> InputError:
    return InputError([UserError(field=["xml"], code=exc.code, message=str(exc))])


def _fill_from_cfdi(e: m.Expense, c: SupplierCfdi, xml: str) -> None:
    e.amount, e.currency, e.exchange_rate = c.total, c.currency, c.exchange_rate
    e.amount_mxn = ap.amount_in_mxn(c.total, c.currency, c.exchange_rate)
    e.expense_date, e.merchant_rfc, e.merchant_name = c.issued_on, c.merchant_rfc, c.merchant_name
    e.subtotal, e.iva_transferred, e.isr_withheld, e.iva_withheld = c.subtotal, c.iva_transferred, c.isr_withheld, c.iva_withheld
    e.cfdi_uuid, e.cfdi_payment_form, e.cfdi_payment_method = c.uuid, c.payment_form, c.payment_method
    e.cfdi_xml, e.deductibility_reasons = xml, list(c.deductibility_reasons)


async def _read_cfdi(session: AsyncSession, org: uuid.UUID, xml: str) -> SupplierCfdi:
    profile = await fiscal_profile(session, org)
    try:
        # RSA verification and the cadena's XSLT are CPU work: never on the event loop.
        c = await asyncio.to_thread(read_supplier_cfdi, xml.encode("utf-8"), profile.rfc if profile else None)
    except CfdiRefused as exc:
        raise _cfdi_error(exc) from None
    dup = await session.scalar(select(func.count()).select_from(m.Expense).where(
        m.Expense.organization_id == org, m.Expense.cfdi_uuid == c.uuid))
    if dup:
        raise _cfdi_error(CfdiRefused("CFDI_DUPLICATE"))
    return c


async def _ask_sat(c: SupplierCfdi) -> SatState:
    """SAT's view of the CFDI; asked outside any transaction (no connection held while SAT thinks)."""
    state = await ask_sat(c.uuid, c.merchant_rfc, c.receiver_rfc, c.total, c.seal)
    if state is SatState.CANCELLED:
        raise _cfdi_error(CfdiRefused("CFDI_CANCELLED"))
    return state


def _record_sat(e: m.Expense, state: SatState) -> None:
    e.cfdi_sat_status, e.cfdi_sat_checked_at = state.value, utcnow()


async def import_supplier_cfdi(rt: Runtime, principal: Principal, xml: str) -> m.Expense:
    require(principal, P.EXPENSE_SUBMIT)
    async with transaction(rt.sessionmaker) as session:
        c = await _read_cfdi(session, principal.organization_id, xml)
    state = await _ask_sat(c)
    try:
        async with transaction(rt.sessionmaker) as session:
            e = m.Expense(organization_id=principal.organization_id, submitter_id=principal.user_id, status="DRAFT",
                          round=0, payment_method="OTHER", description="")
            _fill_from_cfdi(e, c, xml)
            _record_sat(e, state)
            session.add(e)
            await session.flush()
            _audit(session, e, principal.user_id, "IMPORT_CFDI", None, f"UUID {c.uuid}; SAT {state.value}")
            return e
    except IntegrityError:  # another import of the same UUID won the unique index meanwhile
        raise _cfdi_error(CfdiRefused("CFDI_DUPLICATE")) from None


async def _editable_without_cfdi(session: AsyncSession, principal: Principal, expense_id: uuid.UUID) -> m.Expense:
    e = await _own_editable(session, principal, expense_id)
    if e.cfdi_uuid:
        raise _err("CFDI_ALREADY_ATTACHED", "El gasto ya tiene un CFDI.", "expenseId")
    return e


async def attach_supplier_cfdi(rt: Runtime, principal: Principal, expense_id: uuid.UUID, xml: str) -> m.Expense:
    require(principal, P.EXPENSE_SUBMIT)
    async with transaction(rt.sessionmaker) as session:
        await _editable_without_cfdi(session, principal, expense_id)
        c = await _read_cfdi(session, principal.organization_id, xml)
    state = await _ask_sat(c)
    try:
        async with transaction(rt.sessionmaker) as session:
            e = await _editable_without_cfdi(session, principal, expense_id)  # may have changed while SAT answered
            _fill_from_cfdi(e, c, xml)
            _record_sat(e, state)
            _audit(session, e, principal.user_id, "ATTACH_CFDI", e.status, f"UUID {c.uuid}; SAT {state.value}")
            return e
    except IntegrityError:
        raise _cfdi_error(CfdiRefused("CFDI_DUPLICATE")) from None


async def recheck_supplier_cfdi_status(rt: Runtime, principal: Principal, expense_id: uuid.UUID) -> m.Expense:
    """Ask SAT again (after an unconfirmed import, or before paying): anyone who can see the expense
    may. A CFDI cancelled since its import is recorded, not refused: the expense exists, and its
    deductibility says why it no longer counts."""
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id)
        if not e.cfdi_xml:
            raise _err("CFDI_REQUIRED", "El gasto no tiene un CFDI del proveedor.", "expenseId")
        xml = e.cfdi_xml
    # The stored XML (already verified at import) is the source of the query: parsing it is CPU work.
    cfdi = await asyncio.to_thread(parse_cfdi, xml.encode("utf-8"))
    state = await ask_sat(cfdi.stamp.uuid, cfdi.issuer.rfc, cfdi.receiver.rfc, cfdi.total, cfdi.seal or "")
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id, lock=True)
        # SAT silent (or the check off) tells nothing new: a definitive earlier answer stands.
        if state.definitive or e.cfdi_sat_status not in (SatState.VIGENTE.value, SatState.CANCELLED.value):
            _record_sat(e, state)
        _audit(session, e, principal.user_id, "RECHECK_CFDI_SAT", e.status, f"SAT {state.value}")
        return e


# --- receipts -----------------------------------------------------------------------------------

UPLOAD_TTL = timedelta(minutes=15)
DOWNLOAD_TTL = timedelta(hours=1)
UPLOAD_PURPOSE, DOWNLOAD_PURPOSE = "receipt-upload", "receipt-download"


def upload_path(receipt_id) -> str:
    return f"/receipts/{receipt_id}"


def download_path(receipt_id) -> str:
    return f"/receipts/{receipt_id}/file"


def download_url(settings: Settings, r: m.Receipt) -> str | None:
    if r.uploaded_at is None:
        return None
    return settings.expense_public_url + signed_path(download_path(r.id), utcnow() + DOWNLOAD_TTL, settings=settings,
                                                     purpose=DOWNLOAD_PURPOSE)


async def request_receipt_upload(rt: Runtime, principal: Principal, expense_id: uuid.UUID, content_type: str,
                                 size: int) -> tuple[m.Receipt, str, datetime]:
    require(principal, P.EXPENSE_SUBMIT)
    declared = normalize_declared_type(content_type)
    if declared is None:
        raise _err("RECEIPT_TYPE_NOT_ALLOWED", "Solo se aceptan JPEG, PNG, WebP, PDF o XML.", "contentType")
    if size <= 0 or size > rt.settings.receipt_max_bytes:
        raise _err("RECEIPT_TOO_LARGE", f"El archivo debe pesar entre 1 byte y {rt.settings.receipt_max_bytes // (1024 * 1024)} MB.",
                   "size")
    async with transaction(rt.sessionmaker) as session:
        e = await _expense(session, principal, expense_id)
        if e.submitter_id != principal.user_id:
            raise ForbiddenError("Solo quien registró el gasto adjunta comprobantes.")
        if e.status == ap.Status.REIMBURSED.value:
            raise _err("NOT_EDITABLE", "El gasto ya fue reembolsado.", "expenseId")
        r = m.Receipt(id=uuid.uuid4(), expense_id=e.id, organization_id=e.organization_id, declared_type=declared,
                      declared_size=size, storage_key=f"{e.organization_id}/{e.id}/{uuid.uuid4()}",
                      created_by=principal.user_id)
        session.add(r)
        await session.flush()
    expires = utcnow() + UPLOAD_TTL
    url = rt.settings.expense_public_url + signed_path(upload_path(r.id), expires, settings=rt.settings,
                                                       purpose=UPLOAD_PURPOSE)
    return r, url, expires


class UploadRefused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


async def store_receipt(rt: Runtime, receipt_id: uuid.UUID, data: bytes) -> m.Receipt:
    """The body of a signed upload: checked from its bytes, stored, then marked uploaded."""
    async with transaction(rt.sessionmaker) as session:
        r = (await session.execute(select(m.Receipt).where(m.Receipt.id == receipt_id).with_for_update())).scalar_one_or_none()
        if r is None:
            raise UploadRefused(404, "NOT_FOUND", "Comprobante no encontrado.")
        if r.uploaded_at is not None:
            raise UploadRefused(409, "ALREADY_UPLOADED", "Este enlace ya se usó.")
        if len(data) > r.declared_size:
            raise UploadRefused(413, "RECEIPT_TOO_LARGE", "El archivo es más grande que lo declarado.")
        try:
            actual = await asyncio.to_thread(check_receipt, data, r.declared_type, rt.settings.receipt_max_bytes)
        except ReceiptRefused as exc:
            raise UploadRefused(413 if exc.code == "RECEIPT_TOO_LARGE" else 415, exc.code, str(exc)) from None
        try:
            await asyncio.to_thread(receipts_store(rt.settings).put, r.storage_key, data)
        except ObjectStoreError as exc:  # nothing recorded: the same link can be retried
            log.warning("receipt %s not stored (%s)", r.id, exc)
            raise UploadRefused(503, "STORE_UNAVAILABLE", "No se pudo guardar el comprobante; intenta de nuevo.") from None
        r.content_type, r.size, r.uploaded_at = actual, len(data), utcnow()
        r.ocr_status = "PENDING" if actual in OCR_TYPES else None
        return r


OCR_TYPES = ("image/jpeg", "image/png", "image/webp")


async def enqueue_ocr(rt: Runtime, receipt_id: uuid.UUID) -> None:
    """After the upload committed. If this is lost, the worker's sweep finds the PENDING row."""
    from arq.connections import ArqRedis

    await ArqRedis(connection_pool=rt.redis.connection_pool).enqueue_job("ocr_receipt", str(receipt_id),
                                                                        _job_id=f"ocr_receipt:{receipt_id}")


async def run_ocr(rt: Runtime, receipt_id: uuid.UUID) -> str:
    """Read a PENDING photo's suggestions; the row says the outcome. The engine runs in a thread."""
    from subgraphs.expense import ocr

    async with rt.sessionmaker() as session:
        r = await session.get(m.Receipt, receipt_id)
    if r is None or r.ocr_status != "PENDING":
        return r.ocr_status if r else "missing"
    recognize = ocr.engine()
    status, suggestions = "UNAVAILABLE", None
    if recognize is not None:
        data = await asyncio.to_thread(receipts_store(rt.settings).get, r.storage_key)
        try:
            lines = await asyncio.to_thread(recognize, data or b"")
            status, suggestions = "DONE", ocr.suggestions_from_lines(lines).to_json()
        except Exception:  # noqa: BLE001 - a photo the engine cannot read is an outcome, not a crash
            status = "FAILED"
    async with transaction(rt.sessionmaker) as session:
        row = await session.get(m.Receipt, receipt_id, with_for_update=True)
        if row is not None and row.ocr_status == "PENDING":
            row.ocr_status, row.ocr_suggestions = status, suggestions
    return status


async def pending_ocr(rt: Runtime, older_than: timedelta) -> list[uuid.UUID]:
    async with rt.sessionmaker() as session:
        return list((await session.scalars(select(m.Receipt.id).where(
            m.Receipt.ocr_status == "PENDING", m.Receipt.uploaded_at < utcnow() - older_than).limit(200))).all())


async def receipt_file(rt: Runtime, receipt_id: uuid.UUID) -> tuple[m.Receipt, bytes] | None:
    async with rt.sessionmaker() as session:
        r = await session.get(m.Receipt, receipt_id)
    if r is None or r.uploaded_at is None:
        return None
    data = await asyncio.to_thread(receipts_store(rt.settings).get, r.storage_key)
    return (r, data) if data is not None else None


async def receipts(session: AsyncSession, expense_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[m.Receipt]]:
    return await _grouped(session, m.Receipt, m.Receipt.expense_id, expense_ids)
