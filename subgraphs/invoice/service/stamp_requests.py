"""Asking to stamp: `stampInvoice` (one invoice) and `stampInvoices` (up to MAX_BATCH at once).

Both run the same code: a request moves each accepted invoice to STAMPING, with its history row
and its `invoice.stamping_requested` event (transactional outbox: the relay turns the event into
the worker's job, service/stamping.py), all in one transaction. In Core statements built once
(no ORM unit of work, no per-call statement construction), whatever the number of invoices:

1. one locking read of every invoice asked for, with the issuer and the active CSD;
2. the checks, then the SAT rules (`evaluate`) of all of them in one thread hop (payment
   complements, which read their paid documents, in the transaction);
3. one statement for every accepted invoice: the status change, the history rows and the outbox
   rows (with the relay's wake-up), through `unnest` of one array per column.

On a Core connection in a transaction (`core_transaction`), not an ORM session: on a single
stampInvoice the session's own bookkeeping weighed more than the two statements' SQLAlchemy work.

An invoice asked again with the key it was accepted with is answered as it is, nothing new.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import (
    DateTime, Numeric, String, Text, bindparam, column, func, insert, literal, literal_column, select, update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db import PlainRow, core_transaction
from shared.errors import InputError, NotFoundError, UserError
from shared.outbox import appending, event_rows, wake_up
from shared.runtime import Runtime
from sat import cfdi
from subgraphs.invoice import models as m
from subgraphs.invoice.lifecycle import EDITABLE, Status, event_for
from subgraphs.invoice.service.common import invoice_ref, publish_statuses, utcnow
from subgraphs.invoice.service.drafts import evaluate, evaluate_plain

MAX_BATCH = 100  # invoices per stampInvoices call
MAX_KEY_LENGTH = 200  # the stamp_idempotency_key column

_invoices, _history = m.Invoice.__table__, m.InvoiceEvent.__table__
_issuers, _certificates = m.IssuerProfile.__table__, m.Certificate.__table__
_ISSUER_COLUMNS = ("rfc", "legal_name", "tax_regime", "postal_code")
_REASON = "Timbrado solicitado"


@dataclass
class StampAnswer:
    """One item's answer: the invoice (accepted now or before with the same key), or why not."""
    invoice: PlainRow | None = None
    errors: list[UserError] = field(default_factory=list)
    not_found: bool = False


async def request_stamp(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, key: str) -> PlainRow:
    """stampInvoice: the invoice in STAMPING (or as it is, asked again with the same key);
    InputError (fields ["id"], ["idempotencyKey"]) or NotFoundError otherwise."""
    [answer] = await _request(rt, org, actor, [(invoice_id, key)])
    if answer.not_found:
        raise NotFoundError("Factura no encontrada.")
    if answer.errors:
        raise InputError(answer.errors)
    return answer.invoice


async def request_stamps(rt: Runtime, org: uuid.UUID, actor: uuid.UUID,
                         items: Sequence[tuple[str, str]]) -> list[StampAnswer]:
    """stampInvoices: one answer per (id, idempotency key), in order, as `request_stamp` would
    give it, with field paths ["items", i, ...]; the accepted ones committed together. The whole
    call is refused (InputError, nothing written) past MAX_BATCH items or when an invoice is
    named twice."""
    if len(items) > MAX_BATCH:
        raise InputError.single("TOO_MANY_ITEMS", f"La lista admite como máximo {MAX_BATCH} elementos.", ["items"])
    ids: list[uuid.UUID | None] = []
    first: dict[object, int] = {}
    duplicates = []
    for i, (raw, _) in enumerate(items):
        ids.append(_parse_id(raw))
        name = ids[-1] or str(raw)
        if name in first:
            duplicates.append(UserError(field=["items", str(i), "id"], code="DUPLICATE_INVOICE",
                                        message=f"La factura ya está en la lista (elemento {first[name]})."))
        first.setdefault(name, i)
    if duplicates:
        raise InputError(duplicates)
    answers = await _request(rt, org, actor, [(invoice_id, key) for invoice_id, (_, key) in zip(ids, items)])
    for i, answer in enumerate(answers):
        if answer.not_found:
            answer.errors = [UserError(field=["id"], code="NOT_FOUND", message="Factura no encontrada.")]
        # The item's own fields; a rule's (e.g. amounts) is about its invoice. New errors: a
        # service's may be a shared constant.
        answer.errors = [UserError(field=["items", str(i), "idempotencyKey" if e.field == ["idempotencyKey"] else "id"],
                                   code=e.code, message=e.message) for e in answer.errors]
    return answers


def _parse_id(raw) -> uuid.UUID | None:
    try:
        return raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
    except ValueError:
        return None


def _valid_key(key: str | None) -> str | None:
    key = (key or "").strip()
    return key if key and len(key) <= MAX_KEY_LENGTH else None


async def _request(rt: Runtime, org: uuid.UUID, actor: uuid.UUID,
                   items: list[tuple[uuid.UUID | None, str]]) -> list[StampAnswer]:
    answers = [StampAnswer() for _ in items]
    keys = [_valid_key(key) for _, key in items]
    wanted = [invoice_id for (invoice_id, _), key in zip(items, keys) if invoice_id is not None and key]
    accepted: list[tuple[PlainRow, str, str]] = []  # (invoice, key, status it leaves)
    async with core_transaction(rt.engine) as conn:
        found = {}
        if wanted:
            for r in (await conn.execute(_locking_read(), {"ids": wanted, "org": org})).mappings():
                found[r["id"]] = r
        now = utcnow()
        candidates: list[tuple[StampAnswer, PlainRow, str, PlainRow]] = []  # (answer, invoice, key, issuer)
        for (invoice_id, _), key, answer in zip(items, keys, answers):
            if key is None:
                answer.errors = [UserError(field=["idempotencyKey"], code="INVALID_IDEMPOTENCY_KEY",
                                           message="La clave de idempotencia es obligatoria (máx. 200).")]
                continue
            r = found.get(invoice_id)
            if r is None:
                answer.not_found = True
                continue
            inv = PlainRow({c.key: r[c.key] for c in _invoices.c})
            if inv.stamp_idempotency_key == key:
                answer.invoice = inv  # the same request again: the same answer, nothing new
                continue
            try:
                _may_stamp(inv, r, now)
            except InputError as exc:
                answer.errors = exc.errors
                continue
            candidates.append((answer, inv, key, PlainRow({name: r[f"issuer_{name}"] for name in _ISSUER_COLUMNS})))
        for (answer, inv, key, _), engine in zip(candidates, await _evaluated(conn, candidates), strict=True):
            try:
                _no_issues(inv, engine)
            except InputError as exc:
                answer.errors = exc.errors
                continue
            accepted.append((inv, key, inv.status))
            inv.stamp_idempotency_key, inv.stamp_attempts, inv.pac_code, inv.pac_message = key, 0, None, None
            inv.status = Status.STAMPING.value
            answer.invoice = inv
        if accepted:
            await conn.execute(_requesting_statement(), _requesting_params(org, actor, accepted))
    await publish_statuses(rt, [inv for inv, _, _ in accepted])
    return answers


def _may_stamp(inv: PlainRow, r, now) -> None:
    """InputError unless the invoice's status and the organization's CSD allow stamping."""
    if inv.status not in EDITABLE:
        raise InputError.single("INVALID_STATUS", "La factura no se puede timbrar en su estado actual.", ["id"])
    if r["csd_valid_to"] is None or r["issuer_rfc"] is None:
        raise InputError.single("CSD_REQUIRED", "Carga y activa un certificado de sello digital (CSD).", ["id"])
    if r["csd_valid_to"] < now:
        raise InputError.single("CERTIFICATE_EXPIRED", "El certificado activo está vencido.", ["id"])


async def _evaluated(conn: AsyncConnection, candidates) -> list[cfdi.Invoice | InputError]:
    """Each candidate's draft as of now (totals, Fecha and SAT issues set on the invoice), or the
    InputError that refuses it. The SAT rules are CPU and a call may carry 100 invoices, so those
    that read nothing more run in ONE thread hop, off the event loop; payment complements read
    their paid documents in this transaction."""
    def plain(pairs):
        out = []
        for inv, issuer in pairs:
            try:
                out.append(evaluate_plain(inv, issuer))
            except InputError as exc:
                out.append(exc)
        return out

    plain_ones = [(inv, issuer) for _, inv, _, issuer in candidates if inv.voucher_type != "P"]
    done = iter(await asyncio.to_thread(plain, plain_ones) if plain_ones else [])
    results: list[cfdi.Invoice | InputError] = []
    session = None  # the paid documents are read through the ORM, in this transaction
    try:
        for _, inv, _, issuer in candidates:
            if inv.voucher_type != "P":
                results.append(next(done))
                continue
            session = session or AsyncSession(bind=conn)
            try:
                results.append(await evaluate(session, inv, issuer))
            except InputError as exc:
                results.append(exc)
    finally:
        if session is not None:
            await session.close()
    return results


def _no_issues(inv: PlainRow, engine: cfdi.Invoice | InputError) -> None:
    """InputError if the draft cannot be stamped as it is; else its Fecha is the one to seal."""
    if isinstance(engine, InputError):
        raise engine
    if inv.issues:
        raise InputError([UserError(field=["id"], code="INVOICE_HAS_ISSUES",
                                    message="La factura tiene errores de validación: " +
                                    "; ".join(i["message"] for i in inv.issues))])
    inv.issued_at = engine.issued_at


@functools.cache
def _locking_read():
    """Every invoice asked for (`ids`) of the organization (`org`), locked in id order (two
    requests never wait on each other crosswise), with the issuer and the active CSD's expiry."""
    return (select(*_invoices.c, *(_issuers.c[name].label(f"issuer_{name}") for name in _ISSUER_COLUMNS),
                   _certificates.c.valid_to.label("csd_valid_to"))
            .outerjoin(_issuers, _issuers.c.organization_id == _invoices.c.organization_id)
            .outerjoin(_certificates, (_certificates.c.organization_id == _invoices.c.organization_id)
                       & _certificates.c.active.is_(True))
            .where(_invoices.c.id == func.any(bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))),
                   _invoices.c.organization_id == bindparam("org", type_=UUID(as_uuid=True)))
            .order_by(_invoices.c.id).with_for_update(of=_invoices))


# What the request sets per invoice: bound as one array each (r_<name>), unnested in SQL.
_MONEY = Numeric(18, 6)
_SET_PER_INVOICE = (("id", UUID(as_uuid=True)), ("from_status", String()), ("history_id", UUID(as_uuid=True)),
                    ("stamp_idempotency_key", Text()), ("issued_at", DateTime(timezone=False)),
                    ("currency", String()), ("exchange_rate", _MONEY), ("subtotal", _MONEY), ("discount", _MONEY),
                    ("total_transferred", _MONEY), ("total_withheld", _MONEY), ("total", _MONEY))
_FROM_ROW = tuple(name for name, _ in _SET_PER_INVOICE[3:])  # columns taken as they are on the invoice


@functools.cache
def _requesting_statement():
    """The status change, history rows and outbox rows of every accepted invoice, and the relay's
    wake-up: one statement whose text does not depend on how many."""
    rows = select(func.unnest(*(bindparam(f"r_{name}", type_=ARRAY(type_)) for name, type_ in _SET_PER_INVOICE))
                  .table_valued(*(column(name, type_) for name, type_ in _SET_PER_INVOICE))
                  .render_derived(name="r")).cte("requested")
    moved = (update(_invoices).where(_invoices.c.id == rows.c.id)
             .values(status=Status.STAMPING.value, stamp_attempts=0, pac_code=None, pac_message=None,
                     issues=literal_column("'[]'::jsonb"), **{name: rows.c[name] for name in _FROM_ROW})
             .returning(_invoices.c.id).cte("moved"))
    history = insert(_history).from_select(
        ["id", "invoice_id", "organization_id", "actor_id", "from_status", "to_status", "reason"],
        select(rows.c.history_id, rows.c.id, bindparam("org", type_=UUID(as_uuid=True)),
               bindparam("actor", type_=UUID(as_uuid=True)), rows.c.from_status,
               literal(Status.STAMPING.value), literal(_REASON))).cte("history")
    return select(wake_up(m.outbox)).add_cte(moved).add_cte(history).add_cte(appending(m.outbox))


def _requesting_params(org: uuid.UUID, actor: uuid.UUID, accepted: list[tuple[PlainRow, str, str]]) -> dict:
    events = []
    for inv, key, from_status in accepted:
        payload_cls = event_for(from_status, Status.STAMPING)  # IllegalTransition if the lifecycle forbids it
        events.append((payload_cls(**invoice_ref(inv), idempotency_key=key), org, actor, f"invoice:{inv.id}"))
    _, params = event_rows(events)
    params.update(org=org, actor=actor, r_id=[inv.id for inv, _, _ in accepted],
                  r_from_status=[status for _, _, status in accepted],
                  r_history_id=[uuid.uuid4() for _ in accepted],
                  **{f"r_{name}": [getattr(inv, name) for inv, _, _ in accepted] for name in _FROM_ROW})
    return params
