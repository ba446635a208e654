"""The expense subgraph's GraphQL schema. Thin: each resolver checks who is asking and calls one
service function."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from shared.context import RequestContext
from shared.errors import InputError, NotFoundError, Payload, payload_or_errors
from shared.graphql import build_schema
from shared.pagination import Connection, build_connection, decode_cursor, page_size
from shared.validation import limits
from subgraphs.expense import approval as ap
from subgraphs.expense import loaders, service
from subgraphs.expense import models as m
from subgraphs.expense.sat_check import SatState, sat_reason

Ctx = Info[RequestContext, None]

# XML text spans lines; a CFDI with thousands of concepts is still well under 2 MB.
SupplierCfdiXml = Annotated[str, strawberry.argument(metadata=limits(max_length=2_000_000, multiline=True))]


def _uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError() from None


def _key(e) -> list:
    return [e.created_at.isoformat(), str(e.id)]


def _cursor(after: str | None):
    return decode_cursor(after, datetime.fromisoformat, uuid.UUID)


ExpenseStatus = strawberry.enum(ap.Status, description="DRAFT → SUBMITTED → APPROVED | REJECTED → REIMBURSED.")
LimitAction = strawberry.enum(ap.LimitAction, description="What exceeding a category's limit does.")


@strawberry.enum(description="How the employee paid.")
class PaymentMethod(Enum):
    CASH = "CASH"
    COMPANY_CARD = "COMPANY_CARD"
    PERSONAL_CARD = "PERSONAL_CARD"
    TRANSFER = "TRANSFER"
    OTHER = "OTHER"


@strawberry.type(description="An organization-defined expense category.")
class ExpenseCategory:
    id: strawberry.ID
    name: str
    sat_hint: str | None = strawberry.field(description="c_ClaveProdServ the supplier usually bills under.")
    limit_mxn: Decimal | None
    limit_action: LimitAction

    @classmethod
    def from_row(cls, c: m.Category) -> "ExpenseCategory":
        return cls(id=strawberry.ID(str(c.id)), name=c.name, sat_hint=c.sat_hint, limit_mxn=c.limit_mxn,
                   limit_action=ap.LimitAction(c.limit_action))


CfdiSatStatus = strawberry.enum(SatState, name="CfdiSatStatus", description=(
    "SAT's answer: VIGENTE, CANCELLED, NOT_FOUND (not yet at SAT), UNCONFIRMED (SAT did not answer "
    "in time) or NOT_CHECKED (the check is off in this environment)."))


@strawberry.type
class Deductibility:
    ready: bool
    reasons: list[str] = strawberry.field(description="Why the expense is not (yet) deductible, es-MX.")


@strawberry.type
class PolicyFlag:
    code: str
    message: str


@strawberry.type(description="One step of the approval chain fixed when the expense was submitted.")
class ApprovalStep:
    level: int
    permission: str
    role: str | None
    approved_by: "User | None"


@strawberry.enum(description="OCR of a receipt photo: poll until it leaves PENDING.")
class OcrStatus(Enum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"
    UNAVAILABLE = "UNAVAILABLE"  # no OCR engine installed on this deployment


@strawberry.type(description="What OCR read from a receipt photo: suggestions for the user to confirm, never applied.")
class OcrSuggestions:
    total: Decimal | None
    date: date | None
    merchant_rfc: str | None
    merchant_name: str | None


@strawberry.type
class ReceiptOcr:
    status: OcrStatus
    suggestions: OcrSuggestions | None


@strawberry.type(description="A receipt file; its content type is what the bytes are, not what was declared.")
class Receipt:
    id: strawberry.ID
    content_type: str | None
    size: int | None
    uploaded: bool
    download_url: str | None = strawberry.field(description="Signed, expiring link (1 h).")
    created_at: datetime
    ocr: ReceiptOcr | None = strawberry.field(description="Null for files that are not photos.")


def _ocr(r: m.Receipt) -> ReceiptOcr | None:
    if r.ocr_status is None:
        return None
    s = r.ocr_suggestions
    return ReceiptOcr(status=OcrStatus(r.ocr_status), suggestions=None if s is None else OcrSuggestions(
        total=Decimal(s["total"]) if s.get("total") else None,
        date=date.fromisoformat(s["date"]) if s.get("date") else None,
        merchant_rfc=s.get("merchant_rfc"), merchant_name=s.get("merchant_name")))


@strawberry.type(description="Who did what to the expense, when, and why.")
class ExpenseAuditEntry:
    action: str
    from_status: ExpenseStatus | None
    to_status: ExpenseStatus
    actor: "User"
    comment: str | None
    at: datetime


@strawberry.federation.type(keys=["id"])
class Expense:
    id: strawberry.ID
    status: ExpenseStatus
    amount: Decimal
    currency: str = strawberry.field(description="c_Moneda")
    exchange_rate: Decimal | None = strawberry.field(description="MXN per unit of currency (TipoCambio).")
    amount_mxn: Decimal
    date: date
    merchant_name: str | None
    merchant_rfc: str | None
    description: str
    payment_method: PaymentMethod
    project_tag: str | None
    subtotal: Decimal | None = strawberry.field(description="SubTotal of the supplier CFDI.")
    iva_transferred: Decimal | None = strawberry.field(description="IVA trasladado (Impuesto 002).")
    isr_withheld: Decimal | None = strawberry.field(description="ISR retenido (Impuesto 001).")
    iva_withheld: Decimal | None = strawberry.field(description="IVA retenido (Impuesto 002).")
    cfdi_uuid: str | None = strawberry.field(description="UUID of the supplier's TimbreFiscalDigital.")
    cfdi_payment_form: str | None = strawberry.field(description="FormaPago (c_FormaPago).")
    cfdi_payment_method: str | None = strawberry.field(description="MetodoPago: PUE or PPD.")
    cfdi_sat_status: CfdiSatStatus | None = strawberry.field(
        description="What SAT's ConsultaCFDIService said of the supplier CFDI at import or last re-check.")
    cfdi_sat_checked_at: datetime | None = strawberry.field(description="When SAT was last asked.")
    policy_flags: list[PolicyFlag]
    created_at: datetime
    _row: strawberry.Private[m.Expense]

    @classmethod
    def from_row(cls, e: m.Expense) -> "Expense":
        return cls(id=strawberry.ID(str(e.id)), status=ap.Status(e.status), amount=e.amount, currency=e.currency,
                   exchange_rate=e.exchange_rate, amount_mxn=e.amount_mxn, date=e.expense_date,
                   merchant_name=e.merchant_name, merchant_rfc=e.merchant_rfc, description=e.description or "",
                   payment_method=PaymentMethod(e.payment_method), project_tag=e.project_tag, subtotal=e.subtotal,
                   iva_transferred=e.iva_transferred, isr_withheld=e.isr_withheld, iva_withheld=e.iva_withheld,
                   cfdi_uuid=e.cfdi_uuid, cfdi_payment_form=e.cfdi_payment_form,
                   cfdi_payment_method=e.cfdi_payment_method,
                   cfdi_sat_status=CfdiSatStatus(e.cfdi_sat_status) if e.cfdi_sat_status else None,
                   cfdi_sat_checked_at=e.cfdi_sat_checked_at,
                   policy_flags=[PolicyFlag(**f) for f in e.policy_flags or []], created_at=e.created_at, _row=e)

    @classmethod
    async def resolve_reference(cls, info: Ctx, id: strawberry.ID) -> "Expense | None":
        p = await info.context.principal()
        row = await loaders.expenses(info.context, p.organization_id).load(_uuid(id))
        if row is None or not (row.submitter_id == p.user_id or service.can_read_all(p)):
            return None
        return cls.from_row(row)

    @strawberry.field
    def submitter(self) -> "User":
        return User(id=strawberry.ID(str(self._row.submitter_id)))

    @strawberry.field
    async def category(self, info: Ctx) -> ExpenseCategory | None:
        if self._row.category_id is None:
            return None
        c = await loaders.categories(info.context, self._row.organization_id).load(self._row.category_id)
        return ExpenseCategory.from_row(c) if c else None

    @strawberry.field(description="True when signature, receiver and payment method/form of the supplier CFDI are "
                                  "consistent and SAT confirmed it vigente (when the SAT check is on).")
    def deductible_ready(self) -> bool:
        return self.deductibility().ready

    @strawberry.field
    def deductibility(self) -> Deductibility:
        if not self._row.cfdi_uuid:
            return Deductibility(ready=False, reasons=["Sin CFDI del proveedor: adjunta el XML para deducir el gasto."])
        reasons = list(self._row.deductibility_reasons or [])
        sat = sat_reason(self._row.cfdi_sat_status)
        reasons += [sat] if sat else []
        return Deductibility(ready=not reasons, reasons=reasons)

    @strawberry.field
    async def approval_chain(self, info: Ctx) -> list[ApprovalStep]:
        chain = ap.chain_from_json(self._row.approval_chain)
        done = await loaders.approvals(info.context).load(self._row) if chain else []
        return [ApprovalStep(level=i + 1, permission=s.permission, role=s.role,
                             approved_by=User(id=strawberry.ID(str(done[i]))) if i < len(done) else None)
                for i, s in enumerate(chain)]

    @strawberry.field
    async def receipts(self, info: Ctx) -> list[Receipt]:
        rows = await loaders.receipts(info.context).load(self._row.id)
        return [Receipt(id=strawberry.ID(str(r.id)), content_type=r.content_type, size=r.size,
                        uploaded=r.uploaded_at is not None, download_url=service.download_url(info.context.settings, r),
                        created_at=r.created_at, ocr=_ocr(r)) for r in rows]

    @strawberry.field
    async def history(self, info: Ctx) -> list[ExpenseAuditEntry]:
        rows = await loaders.history(info.context).load(self._row.id)
        return [ExpenseAuditEntry(action=r.action, from_status=ap.Status(r.from_status) if r.from_status else None,
                                  to_status=ap.Status(r.to_status), actor=User(id=strawberry.ID(str(r.actor_id))),
                                  comment=r.comment, at=r.created_at) for r in rows]


@strawberry.type(description="Expenses grouped to move through approval together.")
class ExpenseReport:
    id: strawberry.ID
    title: str
    created_at: datetime
    _row: strawberry.Private[m.Report]

    @classmethod
    def from_row(cls, r: m.Report) -> "ExpenseReport":
        return cls(id=strawberry.ID(str(r.id)), title=r.title, created_at=r.created_at, _row=r)

    @strawberry.field
    def submitter(self) -> "User":
        return User(id=strawberry.ID(str(self._row.submitter_id)))

    @strawberry.field
    async def expenses(self, info: Ctx) -> list[Expense]:
        return [Expense.from_row(e) for e in await loaders.report_expenses(info.context).load(self._row.id)]

    @strawberry.field(description="The least advanced status among its expenses.")
    async def status(self, info: Ctx) -> ExpenseStatus:
        rows = await loaders.report_expenses(info.context).load(self._row.id)
        return ap.Status(service.report_status([e.status for e in rows]))

    @strawberry.field
    async def total_mxn(self, info: Ctx) -> Decimal:
        rows = await loaders.report_expenses(info.context).load(self._row.id)
        return sum((e.amount_mxn for e in rows), Decimal("0"))


async def _pending(info: Ctx, user_id: uuid.UUID, first: int | None, after: str | None) -> Connection[Expense]:
    p = await info.context.principal()
    size = page_size(first)
    async with info.context.runtime.sessionmaker() as session:
        rows = await service.pending_approvals(session, p, user_id, size + 1, _cursor(after))
    return build_connection(rows, size, to_node=Expense.from_row, key_of=_key, after=after)


@strawberry.federation.type(keys=["id"])
class User:
    id: strawberry.ID

    @classmethod
    def resolve_reference(cls, id: strawberry.ID) -> "User":
        return cls(id=id)

    @strawberry.field(description="Submitted expenses whose next approval step this user may take.")
    async def pending_approvals(self, info: Ctx, first: int | None = None, after: str | None = None) -> Connection[Expense] | None:
        return await _pending(info, _uuid(self.id), first, after)


@strawberry.type
class ApprovalRule:
    above_mxn: Decimal = strawberry.field(description="The step applies when the amount in MXN is above this.")
    permission: str
    role: str | None = strawberry.field(description="Only a member with this role may take the step (e.g. OWNER).")
    category_ids: list[strawberry.ID]
    submitter_roles: list[str]


@strawberry.type
class ApprovalPolicy:
    steps: list[ApprovalRule]

    @classmethod
    def from_value(cls, p: ap.Policy) -> "ApprovalPolicy":
        return cls(steps=[ApprovalRule(above_mxn=s.above_mxn, permission=s.permission, role=s.role,
                                       category_ids=[strawberry.ID(str(c)) for c in sorted(s.categories, key=str)],
                                       submitter_roles=sorted(s.submitter_roles)) for s in p.steps])


@strawberry.type
class FiscalProfile:
    rfc: str = strawberry.field(description="The organization's RFC: supplier CFDIs must be issued to it (Receptor/@Rfc).")
    legal_name: str


# --- inputs --------------------------------------------------------------------------------------

@strawberry.input
class ExpenseInput:
    amount: Decimal | None = strawberry.field(default=None, description="Total paid, taxes included, decimal string in `currency`, e.g. \"1250.50\".")
    currency: str | None = strawberry.field(default=None, description="Currency of the amount (c_Moneda), MXN when omitted.")
    exchange_rate: Decimal | None = strawberry.field(default=None, description="MXN per unit of the currency; required when it is not MXN.")
    date: date | None = strawberry.field(default=None, description="Day the expense was paid (YYYY-MM-DD).")
    category_id: strawberry.ID | None = strawberry.field(default=None, description="One of the organization's expense categories (expenseCategories).")
    merchant_name: str | None = strawberry.field(default=None, description="Who was paid: the supplier or shop name.")
    merchant_rfc: str | None = strawberry.field(default=None, description="The supplier's RFC when known (needed for a deductible expense).")
    description: str | None = strawberry.field(default=None, description="What was bought and why.")
    payment_method: PaymentMethod | None = strawberry.field(default=None, description="How it was paid.")
    project_tag: str | None = strawberry.field(default=None, description="Project or cost centre to charge it to.")

    def to_data(self) -> service.ExpenseData:
        return service.ExpenseData(
            amount=self.amount, currency=self.currency, exchange_rate=self.exchange_rate, expense_date=self.date,
            category_id=_category_id(self.category_id), merchant_name=self.merchant_name,
            merchant_rfc=self.merchant_rfc, description=self.description,
            payment_method=self.payment_method.value if self.payment_method else None, project_tag=self.project_tag)


def _category_id(value, field: list[str] | None = None) -> uuid.UUID | None:
    """A category id as the client sent it; garbage is the same userError as an unknown one."""
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InputError.single("UNKNOWN_CATEGORY", "La categoría no existe en tu organización.",
                                field or ["input", "categoryId"]) from None


@strawberry.input
class ExpenseFilter:
    status: ExpenseStatus | None = strawberry.field(default=None, description="Only expenses in this status.")
    category_id: strawberry.ID | None = strawberry.field(default=None, description="Only this category.")
    submitter_id: strawberry.ID | None = strawberry.field(default=None, description="Only expenses this user recorded.")
    report_id: strawberry.ID | None = strawberry.field(default=None, description="Only expenses of this report.")
    project_tag: str | None = strawberry.field(default=None, description="Only expenses charged to this project or cost centre.")
    date_from: date | None = strawberry.field(default=None, description="Paid on or after this day (YYYY-MM-DD).")
    date_to: date | None = strawberry.field(default=None, description="Paid on or before this day (YYYY-MM-DD).")
    mine: bool = strawberry.field(default=False, description="Only your own expenses.")


@strawberry.input
class CategoryInput:
    name: str
    sat_hint: str | None = None
    limit_mxn: Decimal | None = None
    limit_action: LimitAction = ap.LimitAction.FLAG


@strawberry.input
class ApprovalRuleInput:
    above_mxn: Decimal
    permission: str = "expense:approve"
    role: str | None = None
    category_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    submitter_roles: list[str] = strawberry.field(default_factory=list)


@strawberry.input
class ApprovalPolicyInput:
    steps: list[ApprovalRuleInput]


@strawberry.input
class ExpenseReportInput:
    title: str
    expense_ids: list[strawberry.ID]


# --- payloads ------------------------------------------------------------------------------------

@strawberry.type
class ExpensePayload(Payload):
    expense: Expense | None = None


@strawberry.type
class ReceiptUploadPayload(Payload):
    receipt_id: strawberry.ID | None = None
    upload_url: str | None = strawberry.field(default=None, description="PUT the file's bytes here before expiresAt.")
    expires_at: datetime | None = None


@strawberry.type
class ExpenseReportPayload(Payload):
    report: ExpenseReport | None = None


@strawberry.type
class ExpenseCategoryPayload(Payload):
    category: ExpenseCategory | None = None


@strawberry.type
class ApprovalPolicyPayload(Payload):
    policy: ApprovalPolicy | None = None


@strawberry.type
class FiscalProfilePayload(Payload):
    fiscal_profile: FiscalProfile | None = None


async def _expense_payload(action) -> ExpensePayload:
    async def run():
        return ExpensePayload(expense=Expense.from_row(await action()))

    return await payload_or_errors(ExpensePayload, run)


@strawberry.type
class Query:
    @strawberry.field(description="Expenses of the organization (yours only without expense:read).")
    async def expenses(self, info: Ctx, filter: ExpenseFilter | None = None, first: int | None = None,
                       after: str | None = None) -> Connection[Expense] | None:
        p = await info.context.principal()
        size = page_size(first)
        f = filter or ExpenseFilter()
        filters = {"status": f.status.value if f.status else None, "category_id": _opt_uuid(f.category_id),
                   "submitter_id": _opt_uuid(f.submitter_id), "report_id": _opt_uuid(f.report_id),
                   "project_tag": f.project_tag, "date_from": f.date_from, "date_to": f.date_to, "mine": f.mine}
        async with info.context.runtime.sessionmaker() as session:
            rows = await service.list_expenses(session, p, filters, size + 1, _cursor(after))
        return build_connection(rows, size, to_node=Expense.from_row, key_of=_key, after=after)

    @strawberry.field
    async def expense(self, info: Ctx, id: strawberry.ID) -> Expense | None:
        p = await info.context.principal()
        async with info.context.runtime.sessionmaker() as session:
            try:
                return Expense.from_row(await service.get_expense(session, p, _uuid(id)))
            except NotFoundError:
                return None

    @strawberry.field
    async def expense_reports(self, info: Ctx, first: int | None = None, after: str | None = None) -> Connection[ExpenseReport] | None:
        p = await info.context.principal()
        size = page_size(first)
        async with info.context.runtime.sessionmaker() as session:
            rows = await service.list_reports(session, p, size + 1, _cursor(after))
        return build_connection(rows, size, to_node=ExpenseReport.from_row, key_of=_key, after=after)

    @strawberry.field(description="Submitted expenses whose next approval step you may take.")
    async def pending_approvals(self, info: Ctx, first: int | None = None, after: str | None = None) -> Connection[Expense] | None:
        p = await info.context.principal()
        return await _pending(info, p.user_id, first, after)

    @strawberry.field
    async def expense_categories(self, info: Ctx) -> list[ExpenseCategory] | None:
        p = await info.context.principal()
        async with info.context.runtime.sessionmaker() as session:
            return [ExpenseCategory.from_row(c) for c in await service.list_categories(session, p)]

    @strawberry.field
    async def approval_policy(self, info: Ctx) -> ApprovalPolicy | None:
        p = await info.context.principal()
        async with info.context.runtime.sessionmaker() as session:
            return ApprovalPolicy.from_value(await service.approval_policy(session, p.organization_id))

    @strawberry.field
    async def expense_fiscal_profile(self, info: Ctx) -> FiscalProfile | None:
        p = await info.context.principal()
        async with info.context.runtime.sessionmaker() as session:
            row = await service.fiscal_profile(session, p.organization_id)
        return FiscalProfile(rfc=row.rfc, legal_name=row.legal_name) if row else None


def _opt_uuid(value) -> uuid.UUID | None:
    return None if value is None else _uuid(value)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_expense(self, info: Ctx, input: ExpenseInput) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.create_expense(info.context.runtime, p, input.to_data()))

    @strawberry.mutation
    async def update_expense(self, info: Ctx, id: strawberry.ID, input: ExpenseInput) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.update_expense(info.context.runtime, p, _uuid(id), input.to_data()))

    @strawberry.mutation
    async def submit_expense(self, info: Ctx, id: strawberry.ID, comment: str | None = None) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.submit_expense(info.context.runtime, p, _uuid(id), comment))

    @strawberry.mutation
    async def approve_expense(self, info: Ctx, id: strawberry.ID, comment: str | None = None) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.approve_expense(info.context.runtime, p, _uuid(id), comment))

    @strawberry.mutation
    async def reject_expense(self, info: Ctx, id: strawberry.ID, reason: str) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.reject_expense(info.context.runtime, p, _uuid(id), reason))

    @strawberry.mutation
    async def reimburse_expense(self, info: Ctx, id: strawberry.ID, comment: str | None = None) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.reimburse_expense(info.context.runtime, p, _uuid(id), comment))

    @strawberry.mutation(description="Create a draft expense from a supplier's stamped CFDI 4.0 (XML text).")
    async def import_supplier_cfdi(self, info: Ctx, xml: SupplierCfdiXml) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.import_supplier_cfdi(info.context.runtime, p, xml))

    @strawberry.mutation(description="Back an existing draft or rejected expense with the supplier's CFDI.")
    async def attach_supplier_cfdi(self, info: Ctx, expense_id: strawberry.ID, xml: SupplierCfdiXml) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.attach_supplier_cfdi(info.context.runtime, p, _uuid(expense_id), xml))

    @strawberry.mutation(description="Ask SAT again whether the expense's supplier CFDI is vigente (after SAT "
                                     "could not confirm it at import, or before paying).")
    async def recheck_supplier_cfdi_status(self, info: Ctx, expense_id: strawberry.ID) -> ExpensePayload:
        p = await info.context.principal()
        return await _expense_payload(lambda: service.recheck_supplier_cfdi_status(info.context.runtime, p,
                                                                                   _uuid(expense_id)))

    @strawberry.mutation(description="A signed, expiring URL to PUT one receipt file to (JPEG, PNG, WebP, PDF or XML).")
    async def request_receipt_upload(self, info: Ctx, expense_id: strawberry.ID, content_type: str,
                                     size: int) -> ReceiptUploadPayload:
        p = await info.context.principal()

        async def run():
            r, url, expires = await service.request_receipt_upload(info.context.runtime, p, _uuid(expense_id),
                                                                   content_type, size)
            return ReceiptUploadPayload(receipt_id=strawberry.ID(str(r.id)), upload_url=url, expires_at=expires)

        return await payload_or_errors(ReceiptUploadPayload, run)

    @strawberry.mutation
    async def create_expense_report(self, info: Ctx, input: ExpenseReportInput) -> ExpenseReportPayload:
        p = await info.context.principal()

        async def run():
            r = await service.create_report(info.context.runtime, p, input.title, [_uuid(i) for i in input.expense_ids])
            return ExpenseReportPayload(report=ExpenseReport.from_row(r))

        return await payload_or_errors(ExpenseReportPayload, run)

    @strawberry.mutation(description="Submit every draft or rejected expense of the report, all or none.")
    async def submit_expense_report(self, info: Ctx, id: strawberry.ID, comment: str | None = None) -> ExpenseReportPayload:
        p = await info.context.principal()

        async def run():
            r = await service.submit_report(info.context.runtime, p, _uuid(id), comment)
            return ExpenseReportPayload(report=ExpenseReport.from_row(r))

        return await payload_or_errors(ExpenseReportPayload, run)

    @strawberry.mutation
    async def create_expense_category(self, info: Ctx, input: CategoryInput) -> ExpenseCategoryPayload:
        p = await info.context.principal()

        async def run():
            c = await service.create_category(info.context.runtime, p, name=input.name, sat_hint=input.sat_hint,
                                              limit_mxn=input.limit_mxn, limit_action=input.limit_action.value)
            return ExpenseCategoryPayload(category=ExpenseCategory.from_row(c))

        return await payload_or_errors(ExpenseCategoryPayload, run)

    @strawberry.mutation(description="Replace the organization's approval policy (needs org:manage).")
    async def update_approval_policy(self, info: Ctx, input: ApprovalPolicyInput) -> ApprovalPolicyPayload:
        p = await info.context.principal()

        async def run():
            policy = ap.Policy(tuple(ap.Step(above_mxn=s.above_mxn, permission=s.permission, role=s.role,
                                             categories=frozenset(_category_id(c, ['input', 'steps', str(i), 'categoryIds']) for c in s.category_ids),
                                             submitter_roles=frozenset(s.submitter_roles))
                                     for i, s in enumerate(input.steps)))
            return ApprovalPolicyPayload(policy=ApprovalPolicy.from_value(
                await service.update_approval_policy(info.context.runtime, p, policy)))

        return await payload_or_errors(ApprovalPolicyPayload, run)

    @strawberry.mutation(description="The organization's RFC as receiver of supplier CFDIs (needs org:manage).")
    async def set_expense_fiscal_profile(self, info: Ctx, rfc: str, legal_name: str) -> FiscalProfilePayload:
        p = await info.context.principal()

        async def run():
            row = await service.set_fiscal_profile(info.context.runtime, p, rfc, legal_name)
            return FiscalProfilePayload(fiscal_profile=FiscalProfile(rfc=row.rfc, legal_name=row.legal_name))

        return await payload_or_errors(FiscalProfilePayload, run)


schema = build_schema(query=Query, mutation=Mutation, types=[User, Expense])
