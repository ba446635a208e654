"""Who hears about an event, and how: one small pure function per event type.

Nothing here touches a database or a network. The service looks up the facts a decision needs
(recipients, preferences, organization settings), calls `decide`, and stores what comes out.
Texts are es-MX first, English when the recipient's locale is 'en'.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from shared.permissions import ROLE_PERMISSIONS
from shared.events import (
    CsdExpiring, ExpenseApproved, ExpenseReimbursed, ExpenseRejected, ExpenseSubmitted, NextApproval,
    EmailVerificationRequested, Event, EventPayload, InvoiceStamped, MemberInvited, MfaDisabled, MfaEnabled, PasswordChanged,
    PasswordResetRequested, SignUpRequested, _InvoiceRef,
)

EMAIL, IN_APP = "email", "in_app"
CHANNELS = (EMAIL, IN_APP)
CATEGORIES = ("account", "security", "invoicing", "expenses", "general")
# Security mail (password reset, verification, MFA and password changes) is how a user learns that
# someone else is in their account: it can never be turned off.
LOCKED_CATEGORIES = frozenset({"security"})
DEFAULT_LOCALE = "es-MX"


def is_locked(category: str) -> bool:
    return category in LOCKED_CATEGORIES


def normalize_locale(locale: str | None) -> str:
    return "en" if (locale or "").lower().startswith("en") else DEFAULT_LOCALE


@dataclass(frozen=True)
class RecipientInfo:
    user_id: uuid.UUID
    email: str
    full_name: str
    locale: str = DEFAULT_LOCALE


@dataclass(frozen=True)
class Preferences:
    """Effective preferences: the user's own choice, else the organization default, else on."""

    user: Mapping[tuple[uuid.UUID, str, str], bool] = field(default_factory=dict)  # (user, category, channel)
    org_defaults: Mapping[tuple[str, str], bool] = field(default_factory=dict)  # (category, channel)

    def allows(self, user_id: uuid.UUID, category: str, channel: str) -> bool:
        if is_locked(category):
            return True
        if (user_id, category, channel) in self.user:
            return self.user[(user_id, category, channel)]
        return self.org_defaults.get((category, channel), True)


@dataclass(frozen=True)
class Facts:
    recipients: Mapping[uuid.UUID, RecipientInfo] = field(default_factory=dict)
    preferences: Preferences = field(default_factory=Preferences)
    send_cfdi_to_customer: bool = False
    roles: Mapping[uuid.UUID, str] = field(default_factory=dict)  # the organization's members (projection)


@dataclass(frozen=True)
class InAppNotice:
    user_id: uuid.UUID
    type: str
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Attachment:
    path: str  # relative to the invoice service; fetched at send time
    filename: str
    content_type: str


@dataclass(frozen=True)
class EmailIntent:
    to_address: str
    template: str
    locale: str
    context: dict[str, Any]
    user_id: uuid.UUID | None = None  # None: not a user (a customer, an invitee)
    attachments: tuple[Attachment, ...] = ()
    # Set when this mail may become a line of a digest (see `outgoing`): its kind and its line.
    digest: DigestLine | None = None


@dataclass(frozen=True)
class DigestLine:
    kind: str  # the event type: only lines of one kind share a digest
    line: dict[str, str]  # what the digest lists for this mail's event


@dataclass(frozen=True)
class Decision:
    in_app: tuple[InAppNotice, ...] = ()
    emails: tuple[EmailIntent, ...] = ()


NOTHING = Decision()


def idempotency_key(event_ids: Sequence[uuid.UUID], intent: EmailIntent) -> str:
    """Deterministic from the events a message tells about, its recipient and its template: a
    redelivered event (or batch of events) can never store a second message. One event: its id, as
    it always was; several (a digest): a hash of their ids, in any order."""
    if len(event_ids) == 1:
        covered = str(event_ids[0])
    else:
        covered = hashlib.sha256(",".join(sorted(str(e) for e in event_ids)).encode()).hexdigest()
    return f"{covered}:{intent.to_address.lower()}:{intent.template}"


# --- digests: several status mails of one batch to one recipient become one ---------------------

DIGEST_TEMPLATE = "invoice_status_digest"
# Lines a digest lists; the rest are counted ("y N más") and are in the app (each invoice also has
# its in-app notice). 50 lines keep the HTML well under the ~100 KB at which Gmail clips a message.
DIGEST_MAX_LINES = 50


@dataclass(frozen=True)
class Outgoing:
    """An e-mail to store: what to send and the events it tells about, in stream order (one, or
    several for a digest)."""

    events: tuple[Event, ...]
    intent: EmailIntent

    @property
    def idempotency_key(self) -> str:
        return idempotency_key([e.id for e in self.events], self.intent)


def outgoing(emails: Sequence[tuple[Event, EmailIntent]]) -> list[Outgoing]:
    """The e-mails of one handled batch (in stream order) as they are stored: mails that may be
    digested (`EmailIntent.digest`) and go to the same recipient, in the same organization,
    language and kind, become ONE digest when there are two or more; everything else stays one
    message per event. The digest takes the place of its first mail."""
    slots: list[list[tuple[Event, EmailIntent]]] = []  # in order; a digest's slot fills as it goes
    digests: dict[tuple, list[tuple[Event, EmailIntent]]] = {}
    for event, intent in emails:
        if intent.digest is None:
            slots.append([(event, intent)])
            continue
        key = (event.organization_id, intent.user_id, intent.to_address.lower(), intent.locale, intent.template,
               intent.digest.kind)
        if key not in digests:
            slots.append(digests.setdefault(key, []))
        digests[key].append((event, intent))
    return [Outgoing((slot[0][0],), slot[0][1]) if len(slot) == 1
            else Outgoing(tuple(e for e, _ in slot), _digest([i for _, i in slot])) for slot in slots]


def _digest(intents: Sequence[EmailIntent]) -> EmailIntent:
    first = intents[0]
    lines = [i.digest.line for i in intents]
    return EmailIntent(
        to_address=first.to_address, template=DIGEST_TEMPLATE, locale=first.locale, user_id=first.user_id,
        context={"full_name": first.context["full_name"], "kind": first.digest.kind, "count": len(lines),
                 "invoices": lines[:DIGEST_MAX_LINES]})


# Events whose audience is found by role among the organization's members.
ROLE_ROUTED = frozenset({"expense.submitted", "expense.approved", "expense.rejected", "expense.reimbursed",
                         "invoice.csd_expiring"})


def users_concerned(event: Event, roles: Mapping[uuid.UUID, str] | None = None) -> list[uuid.UUID]:
    """The users whose recipient data and preferences a decision on `event` needs."""
    payload = event.payload
    if event.type in ROLE_ROUTED:
        return sorted(set(roles or {}) | ({uuid.UUID(str(payload["submitter_id"]))} if "submitter_id" in payload else set()))
    for key in ("created_by", "user_id"):
        if payload.get(key):
            return [uuid.UUID(str(payload[key]))]
    return []


# --- per event type -----------------------------------------------------------------------------

Decider = Callable[[Event, EventPayload, Facts], Decision]
_DECIDERS: dict[str, Decider] = {}


def decides(*event_types: str):
    def register(fn: Decider) -> Decider:
        for t in event_types:
            _DECIDERS[t] = fn
        return fn

    return register


def has_audience(event_type: str) -> bool:
    """Whether anybody is ever told about events of this type."""
    return event_type in _DECIDERS


def decide(event: Event, facts: Facts) -> Decision:
    """Recipients and channels for `event`; events nobody needs to hear about decide NOTHING."""
    decider = _DECIDERS.get(event.type)
    if decider is None:
        return NOTHING
    return decider(event, event.typed_payload(), facts)


def link(kind: str, ref: uuid.UUID) -> dict[str, str]:
    """A single-use link named, not written: the worker has auth mint it when sending."""
    return {"kind": kind, "ref": str(ref)}


@decides("auth.sign_up_requested")
def _sign_up(event: Event, p: SignUpRequested, facts: Facts) -> Decision:
    # Not a user yet. If the address already has an account, auth answers the link request with
    # the notice for its owner instead (template `sign_up_existing`).
    return Decision(emails=(EmailIntent(
        to_address=p.email, template="verify_email", locale=normalize_locale(p.locale),
        context={"full_name": p.full_name, "link": link("sign_up", p.sign_up_id), "welcome": True},
    ),))


@decides("auth.email_verification_requested")
def _verify_email(event: Event, p: EmailVerificationRequested, facts: Facts) -> Decision:
    # Security mail: never subject to preferences.
    return Decision(emails=(EmailIntent(
        to_address=p.email, template="verify_email", locale=normalize_locale(p.locale), user_id=p.user_id,
        context={"full_name": p.full_name, "link": link("verify_email", p.verification_ref), "welcome": False},
    ),))


@decides("auth.password_reset_requested")
def _password_reset(event: Event, p: PasswordResetRequested, facts: Facts) -> Decision:
    # Whether the address has an account is known only to auth, when the link is minted; with no
    # account nothing is sent. The account holder's name and language come with the link.
    return Decision(emails=(EmailIntent(
        to_address=p.email, template="password_reset", locale=DEFAULT_LOCALE,
        context={"link": link("reset_password", p.request_id)},
    ),))


@decides("auth.member_invited")
def _member_invited(event: Event, p: MemberInvited, facts: Facts) -> Decision:
    # The invitee is not a user yet: no preferences, no known locale.
    return Decision(emails=(EmailIntent(
        to_address=p.email, template="member_invited", locale=DEFAULT_LOCALE,
        context={"organization_name": p.organization_name, "invited_by_name": p.invited_by_name,
                 "role": p.role, "link": link("invitation", p.invitation_id)},
    ),))


_SECURITY_KIND = {"auth.mfa_enabled": "mfa_enabled", "auth.mfa_disabled": "mfa_disabled",
                  "auth.password_changed": "password_changed"}


@decides(*_SECURITY_KIND)
def _security_notice(event: Event, p: MfaEnabled | MfaDisabled | PasswordChanged, facts: Facts) -> Decision:
    who = facts.recipients.get(p.user_id)
    return Decision(emails=(EmailIntent(
        to_address=p.email, template="security_notice", locale=normalize_locale(who.locale if who else None),
        user_id=p.user_id,
        context={"full_name": who.full_name if who else "", "kind": _SECURITY_KIND[event.type],
                 "occurred_at": event.occurred_at.isoformat()},
    ),))


# Invoice events: in-app to whoever created the invoice, e-mail to them when their preferences
# allow; the customer gets the CFDI itself when the organization opted in.

_INVOICE_TEXT = {
    "invoice.stamped": {
        DEFAULT_LOCALE: ("Factura {label} timbrada", "La factura {label} para {customer} por {total} fue timbrada (UUID {uuid})."),
        "en": ("Invoice {label} stamped", "Invoice {label} for {customer} totalling {total} was stamped (UUID {uuid})."),
    },
    "invoice.stamp_failed": {
        DEFAULT_LOCALE: ("No se pudo timbrar la factura {label}", "El PAC rechazó la factura {label} para {customer}: {message}"),
        "en": ("Invoice {label} could not be stamped", "The PAC rejected invoice {label} for {customer}: {message}"),
    },
    "invoice.cancelled": {
        DEFAULT_LOCALE: ("Factura {label} cancelada", "El SAT canceló la factura {label} para {customer} (UUID {uuid})."),
        "en": ("Invoice {label} cancelled", "The SAT cancelled invoice {label} for {customer} (UUID {uuid})."),
    },
    "invoice.cancellation_rejected": {
        DEFAULT_LOCALE: ("Cancelación rechazada: factura {label}", "{customer} rechazó la cancelación de la factura {label} (UUID {uuid})."),
        "en": ("Cancellation rejected: invoice {label}", "{customer} rejected the cancellation of invoice {label} (UUID {uuid})."),
    },
}


def invoice_label(p: _InvoiceRef) -> str:
    if p.folio is not None:
        return f"{p.series}-{p.folio}" if p.series else str(p.folio)
    return str(p.invoice_id)[:8]


def format_money(amount: Decimal, currency: str) -> str:
    return f"${Decimal(amount).quantize(Decimal('0.01')):,} {currency}"


def _invoice_texts(event_type: str, p: _InvoiceRef, locale: str) -> tuple[str, str]:
    title, body = _INVOICE_TEXT[event_type][locale]
    values = {"label": invoice_label(p), "customer": p.customer_name, "total": format_money(p.total, p.currency),
              "uuid": getattr(p, "uuid", ""), "message": getattr(p, "message", "")}
    return title.format(**values), body.format(**values)


def _invoice_data(event_type: str, p: _InvoiceRef) -> dict[str, Any]:
    data = {"invoiceId": str(p.invoice_id), "label": invoice_label(p), "customerName": p.customer_name,
            "total": str(p.total), "currency": p.currency}
    if getattr(p, "uuid", None):
        data["uuid"] = p.uuid
    if event_type == "invoice.stamp_failed":
        data["code"] = p.code
    return data


# Stamping many invoices at once (stampInvoices) would otherwise mail their creator once per invoice.
_DIGESTED = frozenset({"invoice.stamped", "invoice.stamp_failed"})


def _digest_line(event_type: str, p: _InvoiceRef) -> DigestLine | None:
    if event_type not in _DIGESTED:
        return None
    line = {"label": invoice_label(p), "customer": p.customer_name, "total": format_money(p.total, p.currency)}
    if event_type == "invoice.stamped":
        line["uuid"] = p.uuid
    else:
        line["message"] = p.message
    return DigestLine(event_type, line)


@decides(*_INVOICE_TEXT)
def _invoice_status(event: Event, p: _InvoiceRef, facts: Facts) -> Decision:
    in_app: list[InAppNotice] = []
    emails: list[EmailIntent] = []
    category = type(p).category
    if p.created_by is not None and event.organization_id is not None:
        who = facts.recipients.get(p.created_by)
        locale = normalize_locale(who.locale if who else None)
        title, body = _invoice_texts(event.type, p, locale)
        if facts.preferences.allows(p.created_by, category, IN_APP):
            in_app.append(InAppNotice(user_id=p.created_by, type=event.type, title=title, body=body,
                                      data=_invoice_data(event.type, p)))
        if who is not None and facts.preferences.allows(p.created_by, category, EMAIL):
            emails.append(EmailIntent(
                to_address=who.email, template="invoice_status", locale=locale, user_id=p.created_by,
                context={"full_name": who.full_name, "title": title, "body": body, "kind": event.type},
                digest=_digest_line(event.type, p),
            ))
    if isinstance(p, InvoiceStamped) and facts.send_cfdi_to_customer and p.customer_email:
        stem = p.uuid.upper()
        emails.append(EmailIntent(
            to_address=p.customer_email, template="cfdi_to_customer", locale=DEFAULT_LOCALE,
            context={"customer_name": p.customer_name, "label": invoice_label(p), "uuid": p.uuid,
                     "total": format_money(p.total, p.currency)},
            attachments=(Attachment(p.xml_path, f"{stem}.xml", "application/xml"),
                         Attachment(p.pdf_path, f"{stem}.pdf", "application/pdf")),
        ))
    return Decision(in_app=tuple(in_app), emails=tuple(emails))



# --- by role: expense approvals, expiring CSDs --------------------------------------------------

def _tell(user_id: uuid.UUID, event: Event, category: str, texts: dict[str, tuple[str, str]], data: dict[str, Any],
          facts: Facts) -> tuple[list[InAppNotice], list[EmailIntent]]:
    """One user, in-app and e-mail, each as their preferences allow (same rules as invoicing)."""
    who = facts.recipients.get(user_id)
    locale = normalize_locale(who.locale if who else None)
    title, body = texts[locale]
    in_app = [InAppNotice(user_id=user_id, type=event.type, title=title, body=body, data=data)] \
        if facts.preferences.allows(user_id, category, IN_APP) else []
    emails = [EmailIntent(to_address=who.email, template="invoice_status", locale=locale, user_id=user_id,
                          context={"full_name": who.full_name, "title": title, "body": body, "kind": event.type})] \
        if who is not None and facts.preferences.allows(user_id, category, EMAIL) else []
    return in_app, emails


def may_take(step: NextApproval, role: str | None) -> bool:
    perms = {p.value for p in ROLE_PERMISSIONS.get(role or "", frozenset())}
    return step.permission in perms and (step.role is None or step.role == role)


_EXPENSE_TEXT = {
    "submitted": {DEFAULT_LOCALE: ("Gasto por aprobar: {what}", "{what} espera tu aprobación."),
                  "en": ("Expense to approve: {what}", "{what} is waiting for your approval.")},
    "approved": {DEFAULT_LOCALE: ("Gasto aprobado: {what}", "Tu gasto {what} fue aprobado."),
                 "en": ("Expense approved: {what}", "Your expense {what} was approved.")},
    "rejected": {DEFAULT_LOCALE: ("Gasto rechazado: {what}", "Tu gasto {what} fue rechazado: {reason}"),
                 "en": ("Expense rejected: {what}", "Your expense {what} was rejected: {reason}")},
    "reimbursed": {DEFAULT_LOCALE: ("Gasto reembolsado: {what}", "Tu gasto {what} fue reembolsado."),
                   "en": ("Expense reimbursed: {what}", "Your expense {what} was reimbursed.")},
}


@decides("expense.submitted", "expense.approved", "expense.rejected", "expense.reimbursed")
def _expense(event: Event, p: ExpenseSubmitted | ExpenseApproved | ExpenseRejected | ExpenseReimbursed,
             facts: Facts) -> Decision:
    what = f"{format_money(p.amount, p.currency)}" + (f" en {p.merchant_name}" if p.merchant_name else "")
    data = {"expenseId": str(p.expense_id), "amountMxn": str(p.amount_mxn)}

    def texts(kind: str) -> dict[str, tuple[str, str]]:
        return {loc: (t.format(what=what), b.format(what=what, reason=getattr(p, "reason", "")))
                for loc, (t, b) in _EXPENSE_TEXT[kind].items()}

    audience: list[tuple[uuid.UUID, str]] = []
    next_step = getattr(p, "next_approval", None)
    if isinstance(p, ExpenseApproved) and not p.fully_approved:
        pass  # an intermediate step: only the next approvers hear about it
    elif not isinstance(p, ExpenseSubmitted):
        audience.append((p.submitter_id, event.type.split(".")[1]))
    if next_step is not None and not (isinstance(p, ExpenseApproved) and p.fully_approved):
        done = {p.submitter_id, event.actor_id}
        audience += [(u, "submitted") for u, role in sorted(facts.roles.items(), key=lambda x: str(x[0]))
                     if u not in done and may_take(next_step, role)]
    in_app: list[InAppNotice] = []
    emails: list[EmailIntent] = []
    for user_id, kind in audience:
        a, e = _tell(user_id, event, "expenses", texts(kind), data, facts)
        in_app += a
        emails += e
    return Decision(in_app=tuple(in_app), emails=tuple(emails))


@decides("invoice.csd_expiring")
def _csd_expiring(event: Event, p: CsdExpiring, facts: Facts) -> Decision:
    texts = {DEFAULT_LOCALE: (f"Tu CSD vence en {p.days_left} días",
                              f"El certificado {p.certificate_number} del RFC {p.rfc} vence el {p.valid_to:%Y-%m-%d}. "
                              "Renuévalo en el SAT y súbelo para seguir timbrando."),
             "en": (f"Your CSD expires in {p.days_left} days",
                    f"Certificate {p.certificate_number} of RFC {p.rfc} expires on {p.valid_to:%Y-%m-%d}.")}
    in_app: list[InAppNotice] = []
    emails: list[EmailIntent] = []
    for user_id, role in sorted(facts.roles.items(), key=lambda x: str(x[0])):
        if role in ("OWNER", "ADMIN"):
            a, e = _tell(user_id, event, "security", texts, {"certificateNumber": p.certificate_number}, facts)
            in_app += a
            emails += e
    return Decision(in_app=tuple(in_app), emails=tuple(emails))
