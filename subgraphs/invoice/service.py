"""Invoice use cases: one function per thing a user (or the stamping worker) does.

Each function owns its transaction; the outbox event is written in the same commit as the change;
live notifications (Redis pub/sub) and arq jobs are sent only after the commit.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from zoneinfo import ZoneInfo
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import org_channel, publish_live
from shared.config import Settings
from shared.crypto import hmac_sign, hmac_verify, seal, sealed_key_id, unseal
from shared.db import transaction
from shared.errors import InputError, NotFoundError, UserError
from shared.events import (
    CsdExpiring, InvoiceCancellationRejected, InvoiceCancellationRequested, InvoiceCancelled, InvoiceStamped,
    InvoiceStampFailed, InvoiceStampingRequested,
)
from shared.outbox import emit
from shared.runtime import Runtime
from shared.validation import email_problem
from subgraphs.invoice import cfdi
from subgraphs.invoice import models as m
from subgraphs.invoice.cfdi import catalogs
from subgraphs.invoice.cfdi.rules import PUBLICO_EN_GENERAL
from subgraphs.invoice.cfdi.csd import Csd, load_certificate
from subgraphs.invoice.cfdi.rules import person_type, place_timezone
from subgraphs.invoice.cfdi.totals import round_money
from subgraphs.invoice.pac import PacError, get_pac
from subgraphs.invoice.pac.base import StampResult

log = logging.getLogger(__name__)

DOWNLOAD_PURPOSE = "invoice-download"
EVENT_LINK_TTL = timedelta(days=7)
EDITABLE = ("DRAFT", "STAMP_FAILED")
# Transient PAC errors are retried by arq (per job) and by the sweep cron (new jobs); this caps
# the total per stamping request so an unreachable PAC ends in STAMP_FAILED instead of looping.
MAX_TOTAL_ATTEMPTS = 20
CANCELLABLE = ("STAMPED", "CANCELLATION_REJECTED")
_RFC_RE = re.compile(r"^([A-ZÑ&]{3,4})(\d{2})(\d{2})(\d{2})([A-Z\d]{2})([A\d])$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def local_now(postal_code: str) -> datetime:
    """Fecha: local time at LugarExpedicion, no timezone, whole seconds."""
    return datetime.now(place_timezone(postal_code)).replace(tzinfo=None, microsecond=0)


class _Errors:
    def __init__(self) -> None:
        self.items: list[UserError] = []

    def add(self, code: str, message: str, *path: str | int) -> None:
        self.items.append(UserError(field=[str(p) for p in path] or None, code=code, message=message))

    def raise_if_any(self) -> None:
        if self.items:
            raise InputError(self.items)


def _series_problem(code: str) -> str | None:
    return None if re.fullmatch(r"[A-Z0-9]{1,25}", code) else "La serie debe tener de 1 a 25 letras o números."


def valid_rfc(rfc: str) -> bool:
    rfc = (rfc or "").strip().upper()
    if person_type(rfc) in ("generic_national", "generic_foreign"):
        return True
    match = _RFC_RE.match(rfc)
    if not match or len(rfc) not in (12, 13):
        return False
    month, day = int(match.group(3)), int(match.group(4))
    return 1 <= month <= 12 and 1 <= day <= 31


# --- issuer, series, CSD -------------------------------------------------------------------------

async def get_issuer(session: AsyncSession, org: uuid.UUID) -> m.IssuerProfile | None:
    return await session.get(m.IssuerProfile, org)


def _check_party(errors: _Errors, data: dict) -> None:
    """RFC, legal name, tax regime (in the catalog and allowed for the RFC's person type), postal code."""
    rfc = (data.get("rfc") or "").strip().upper()
    regime = catalogs.get("c_RegimenFiscal", data.get("tax_regime") or "")
    if not valid_rfc(rfc):
        errors.add("INVALID_RFC", "El RFC no tiene un formato válido.", "input", "rfc")
    elif regime and person_type(rfc) in ("fisica", "moral") and regime.get(person_type(rfc)) is False:
        errors.add("REGIME_NOT_ALLOWED", "El régimen fiscal no aplica a este tipo de persona.", "input", "taxRegime")
    if not (data.get("legal_name") or "").strip():
        errors.add("REQUIRED", "La razón social es obligatoria.", "input", "legalName")
    if regime is None:
        errors.add("INVALID_TAX_REGIME", "El régimen fiscal no está en el catálogo c_RegimenFiscal.", "input", "taxRegime")
    if not catalogs.contains("c_CodigoPostal", data.get("postal_code")):
        errors.add("INVALID_POSTAL_CODE", "El código postal no está en el catálogo c_CodigoPostal.", "input", "postalCode")


async def save_issuer(rt: Runtime, org: uuid.UUID, data: dict) -> m.IssuerProfile:
    errors = _Errors()
    _check_party(errors, data)
    series = (data.get("default_series") or "A").strip().upper()
    if problem := _series_problem(series):
        errors.add("INVALID_SERIES", problem, "input", "defaultSeries")
    errors.raise_if_any()
    async with transaction(rt.sessionmaker) as session:
        issuer = await session.get(m.IssuerProfile, org, with_for_update=True)
        if issuer is None:
            issuer = m.IssuerProfile(organization_id=org)
            session.add(issuer)
        elif issuer.rfc != data["rfc"].strip().upper():
            has_csd = await session.scalar(select(func.count()).select_from(m.Certificate).where(
                m.Certificate.organization_id == org))
            if has_csd:
                raise InputError.single("RFC_LOCKED", "No se puede cambiar el RFC: ya hay certificados cargados.", "rfc")
        issuer.rfc = data["rfc"].strip().upper()
        issuer.legal_name = data["legal_name"].strip().upper()
        issuer.tax_regime = data["tax_regime"]
        issuer.postal_code = data["postal_code"]
        issuer.default_series = series
        await session.flush()
        await session.execute(pg_insert(m.Series).values(id=uuid.uuid4(), organization_id=org, code=series,
                                                         next_folio=1).on_conflict_do_nothing())
    return issuer


async def create_series(rt: Runtime, org: uuid.UUID, code: str, next_folio: int = 1) -> m.Series:
    code = (code or "").strip().upper()
    if problem := _series_problem(code):
        raise InputError.single("INVALID_SERIES", problem, "code")
    if next_folio < 1:
        raise InputError.single("INVALID_FOLIO", "El folio inicial debe ser mayor que cero.", "nextFolio")
    async with transaction(rt.sessionmaker) as session:
        res = await session.execute(pg_insert(m.Series).values(
            id=uuid.uuid4(), organization_id=org, code=code, next_folio=next_folio,
        ).on_conflict_do_nothing().returning(m.Series))
        row = res.scalar_one_or_none()
        if row is None:
            raise InputError.single("SERIES_EXISTS", "La serie ya existe.", "code")
        return row


async def list_series(session: AsyncSession, org: uuid.UUID) -> list[m.Series]:
    return list((await session.scalars(select(m.Series).where(m.Series.organization_id == org).order_by(m.Series.code))).all())


async def take_folio(session: AsyncSession, org: uuid.UUID, series: str) -> int:
    """The next folio of `series`, race-free: one atomic upsert that increments and returns."""
    stmt = pg_insert(m.Series).values(id=uuid.uuid4(), organization_id=org, code=series, next_folio=2)
    stmt = stmt.on_conflict_do_update(
        index_elements=["organization_id", "code"], set_={"next_folio": m.Series.next_folio + 1},
    ).returning(m.Series.next_folio)
    return int((await session.execute(stmt)).scalar_one()) - 1


def _csd_context(org: uuid.UUID, number: str) -> str:
    return f"invoice.csd:{org}:{number}"


def _b64(value: str, code: str, message: str, field: str) -> bytes:
    try:
        return base64.b64decode("".join((value or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError.single(code, message, field) from None


async def upload_csd(rt: Runtime, org: uuid.UUID, actor: uuid.UUID | None, certificate_b64: str,
                     private_key_b64: str, password: str, *, now: datetime | None = None) -> m.Certificate:
    cer = _b64(certificate_b64, "INVALID_CERTIFICATE", "El certificado no es base64 válido.", "certificate")
    key = _b64(private_key_b64, "INVALID_KEY", "La llave privada no es base64 válida.", "privateKey")
    async with transaction(rt.sessionmaker) as session:
        # Locking the issuer serialises uploads (one becomes active, never two) and keeps the RFC
        # from changing under the check below.
        issuer = await session.get(m.IssuerProfile, org, with_for_update=True)
        if issuer is None:
            raise InputError.single("ISSUER_REQUIRED", "Primero configura los datos fiscales del emisor.", None)
        try:
            csd = cfdi.load_csd(cer, key, password, now=now)
            cfdi.check_rfc(csd, issuer.rfc)
        except cfdi.CsdError as exc:
            field = {"WRONG_PASSWORD": "password", "INVALID_KEY": "privateKey", "KEY_CERT_MISMATCH": "privateKey"}.get(
                exc.code, "certificate")
            raise InputError.single(exc.code, exc.message, field) from None
        existing = await session.scalar(select(m.Certificate).where(
            m.Certificate.organization_id == org, m.Certificate.certificate_number == csd.certificate_number))
        if existing is not None:
            raise InputError.single("CSD_ALREADY_UPLOADED", "Este certificado ya está cargado.", "certificate")
        plain = csd.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
        sealed = seal(plain, context=_csd_context(org, csd.certificate_number), settings=rt.settings)
        has_active = await session.scalar(select(func.count()).select_from(m.Certificate).where(
            m.Certificate.organization_id == org, m.Certificate.active.is_(True)))
        row = m.Certificate(
            organization_id=org, certificate_number=csd.certificate_number, rfc=csd.rfc, legal_name=csd.legal_name,
            valid_from=csd.valid_from, valid_to=csd.valid_to, certificate_der=csd.certificate.public_bytes(serialization.Encoding.DER), private_key_sealed=sealed,
            kek_id=sealed_key_id(sealed), active=not has_active, created_by=actor,
        )
        session.add(row)
        await session.flush()
        return row


async def list_csds(session: AsyncSession, org: uuid.UUID) -> list[m.Certificate]:
    return list((await session.scalars(select(m.Certificate).where(m.Certificate.organization_id == org)
                                       .order_by(m.Certificate.created_at))).all())


async def activate_csd(rt: Runtime, org: uuid.UUID, csd_id: uuid.UUID) -> m.Certificate:
    async with transaction(rt.sessionmaker) as session:
        row = await session.get(m.Certificate, csd_id, with_for_update=True)
        if row is None or row.organization_id != org:
            raise InputError.single("NOT_FOUND", "Certificado no encontrado.", ["id"])
        if row.valid_to < utcnow():
            raise InputError.single("CERTIFICATE_EXPIRED", f"El certificado venció el {row.valid_to:%Y-%m-%d}.", ["id"])
        await session.execute(update(m.Certificate).where(m.Certificate.organization_id == org,
                                                          m.Certificate.id != csd_id).values(active=False))
        row.active = True
        return row


_open_csds: dict[tuple[uuid.UUID, str], Csd] = {}
_OPEN_CSDS_MAX = 64


def open_csd(row: m.Certificate, settings: Settings) -> Csd:
    """The stored CSD ready to seal (the key is unsealed in memory only).

    Kept open per process, keyed by the sealed value (a re-upload or key rotation changes it):
    unsealing and loading the key cost ~30 ms, more than sealing the CFDI itself."""
    cache_key = (row.id, row.private_key_sealed)
    if cache_key not in _open_csds:
        der = unseal(row.private_key_sealed, context=_csd_context(row.organization_id, row.certificate_number),
                     settings=settings)
        if len(_open_csds) >= _OPEN_CSDS_MAX:
            _open_csds.clear()
        _open_csds[cache_key] = Csd(load_certificate(row.certificate_der), serialization.load_der_private_key(der, password=None),
                                    row.rfc, row.legal_name, row.certificate_number, row.valid_from, row.valid_to)
    return _open_csds[cache_key]


async def active_csd(session: AsyncSession, org: uuid.UUID) -> m.Certificate | None:
    return await session.scalar(select(m.Certificate).where(m.Certificate.organization_id == org,
                                                             m.Certificate.active.is_(True)))


async def notify_expiring_csds(rt: Runtime, *, days: int = 30, now: datetime | None = None) -> int:
    """Emit CsdExpiring once per certificate entering its last `days` days."""
    now = now or utcnow()
    async with transaction(rt.sessionmaker) as session:
        rows = (await session.scalars(select(m.Certificate).where(
            m.Certificate.expiry_notified_at.is_(None), m.Certificate.valid_to > now,
            m.Certificate.valid_to <= now + timedelta(days=days),
        ).with_for_update(skip_locked=True))).all()
        for row in rows:
            row.expiry_notified_at = now
            await emit(session, m.outbox, CsdExpiring(
                certificate_number=row.certificate_number, rfc=row.rfc, valid_to=row.valid_to,
                days_left=max(0, (row.valid_to - now).days)), organization_id=row.organization_id,
                aggregate_id=f"csd:{row.id}")
    return len(rows)


# --- customers -----------------------------------------------------------------------------------

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
    errors = _Errors()
    _check_party(errors, data)
    if data.get("cfdi_use") and not catalogs.contains("c_UsoCFDI", data["cfdi_use"]):
        errors.add("INVALID_CFDI_USE", "El uso de CFDI no está en el catálogo c_UsoCFDI.", "input", "cfdiUse")
    if data.get("email") and (problem := email_problem(data["email"])):
        errors.add("INVALID_EMAIL", problem, "input", "email")
    for i, p in enumerate(data.get("products") or []):
        if not catalogs.contains("c_ClaveProdServ", p.get("product_code")):
            errors.add("INVALID_PRODUCT_CODE", "La clave de producto no está en c_ClaveProdServ.", "input", "products", i, "productCode")
        if not catalogs.contains("c_ClaveUnidad", p.get("unit_code")):
            errors.add("INVALID_UNIT_CODE", "La clave de unidad no está en c_ClaveUnidad.", "input", "products", i, "unitCode")
    errors.raise_if_any()


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


async def customers_by_ids(session: AsyncSession, org: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, m.Customer]:
    rows = await session.scalars(select(m.Customer).where(m.Customer.organization_id == org, m.Customer.id.in_(ids)))
    return {r.id: r for r in rows}


# --- invoice documents ---------------------------------------------------------------------------

def _dec(value: Any, errors: _Errors, *path, positive: bool = False, non_negative: bool = False) -> str | None:
    if value is None:
        return None
    try:
        d = Decimal(str(value))
        if not d.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        errors.add("INVALID_NUMBER", "No es un número válido.", *path)
        return None
    # SAT's numeric types allow at most 18 integer digits and 6 decimals (t_Importe, Cantidad).
    if abs(d) >= Decimal(10) ** 18:
        errors.add("OUT_OF_RANGE", "El número es demasiado grande.", *path)
        return None
    if d.as_tuple().exponent < -6:
        errors.add("TOO_MANY_DECIMALS", "Se admiten como máximo 6 decimales.", *path)
        return None
    if positive and d <= 0:
        errors.add("MUST_BE_POSITIVE", "Debe ser mayor que cero.", *path)
    if non_negative and d < 0:
        errors.add("MUST_NOT_BE_NEGATIVE", "No puede ser negativo.", *path)
    return str(d)


async def normalise_document(session: AsyncSession, org: uuid.UUID, issuer: m.IssuerProfile | None, data: dict,
                             *, current: dict | None = None) -> dict:
    """Check the input's structure (userErrors, nothing written) and snapshot the receiver."""
    errors = _Errors()
    if issuer is None:
        raise InputError.single("ISSUER_REQUIRED", "Primero configura los datos fiscales del emisor.", None)
    doc = dict(current or {})
    doc.update({k: v for k, v in data.items() if v is not None})
    vtype = doc.get("type") or "I"
    doc["type"] = vtype
    doc["series"] = (doc.get("series") or issuer.default_series).strip().upper()
    doc.setdefault("currency", "MXN")
    doc.setdefault("exportation", "01")
    if problem := _series_problem(doc["series"]):
        errors.add("INVALID_SERIES", problem, "input", "series")
    gi = doc.get("global_information")
    customer = None
    if doc.get("customer_id"):
        try:
            customer_id = uuid.UUID(str(doc["customer_id"]))
        except ValueError:
            customer_id = None
        customer = await session.get(m.Customer, customer_id) if customer_id else None
        if customer is None or customer.organization_id != org or customer.deleted_at is not None:
            errors.add("CUSTOMER_NOT_FOUND", "El cliente no existe.", "input", "customerId")
            customer = None
    elif not gi:
        errors.add("REQUIRED", "Indica el cliente (o la información global para público en general).",
                   "input", "customerId")
    if customer is not None:
        doc["receiver"] = {"rfc": customer.rfc, "name": customer.legal_name, "postal_code": customer.postal_code,
                           "tax_regime": customer.tax_regime, "email": customer.email,
                           "cfdi_use": doc.get("cfdi_use") or ("CP01" if vtype == "P" else customer.cfdi_use)}
        doc["customer_id"] = str(customer.id)
    elif gi:
        doc["receiver"] = {"rfc": cfdi.models.GENERIC_RFC_NATIONAL, "name": PUBLICO_EN_GENERAL,
                           "postal_code": issuer.postal_code, "tax_regime": "616", "email": None,
                           "cfdi_use": "CP01" if vtype == "P" else "S01"}
        doc["customer_id"] = None
    doc["exchange_rate"] = _dec(doc.get("exchange_rate"), errors, "input", "exchangeRate", positive=True)
    concepts = doc.get("concepts") or []
    if vtype in ("I", "E"):
        if not concepts:
            errors.add("REQUIRED", "Agrega al menos un concepto.", "input", "concepts")
        for i, c in enumerate(concepts):
            c["quantity"] = _dec(c.get("quantity"), errors, "input", "concepts", i, "quantity", positive=True)
            c["unit_price"] = _dec(c.get("unit_price"), errors, "input", "concepts", i, "unitPrice", non_negative=True)
            c["discount"] = _dec(c.get("discount"), errors, "input", "concepts", i, "discount", non_negative=True)
            if not (c.get("description") or "").strip():
                errors.add("REQUIRED", "La descripción es obligatoria.", "input", "concepts", i, "description")
            for j, t in enumerate(c.get("taxes") or []):
                t["rate"] = _dec(t.get("rate"), errors, "input", "concepts", i, "taxes", j, "rate", non_negative=True)
    if vtype == "E" and not doc.get("related"):
        errors.add("REQUIRED", "Una nota de crédito debe relacionar el CFDI de origen (TipoRelacion 01).",
                   "input", "related")
    if vtype == "P":
        doc["concepts"] = []
        payments = doc.get("payments") or []
        paying: list[tuple[m.Invoice, Decimal, tuple]] = []
        if not payments:
            errors.add("REQUIRED", "Agrega al menos un pago.", "input", "payments")
        for i, p in enumerate(payments):
            p["exchange_rate"] = _dec(p.get("exchange_rate"), errors, "input", "payments", i, "exchangeRate", positive=True)
            if not p.get("related_documents"):
                errors.add("REQUIRED", "El pago debe relacionar al menos una factura.", "input", "payments", i,
                           "relatedDocuments")
            for j, d in enumerate(p.get("related_documents") or []):
                d["amount_paid"] = _dec(d.get("amount_paid"), errors, "input", "payments", i, "relatedDocuments", j,
                                        "amountPaid", positive=True)
                target = await _payable_invoice(session, org, d.get("invoice_id"))
                if target is None:
                    errors.add("DOCUMENT_NOT_PAYABLE",
                               "La factura relacionada no existe, no está timbrada o no es PPD.",
                               "input", "payments", i, "relatedDocuments", j, "invoiceId")
                    continue
                # Stored canonically: balances are later matched on this exact string.
                d["invoice_id"] = str(target.id)
                if d["amount_paid"] is not None:
                    paying.append((target, Decimal(d["amount_paid"]), ("input", "payments", i, "relatedDocuments", j, "amountPaid")))
            if isinstance(p.get("paid_at"), datetime):
                p["paid_at"] = p["paid_at"].replace(tzinfo=None, microsecond=0).isoformat()
        # A payment cannot settle more than what is still owed (one query for every document).
        settled = await _paid_so_far(session, org, [str(t.id) for t, _, _ in paying], None) if paying else {}
        for target, amount, path in paying:
            owed = target.total - settled[str(target.id)][1]
            if amount > owed:
                errors.add("AMOUNT_EXCEEDS_BALANCE", f"El pago excede el saldo pendiente de la factura ({owed}).", *path)
    errors.raise_if_any()
    return doc


def _is_payable(row: m.Invoice | None, org: uuid.UUID) -> bool:
    """A stamped, still valid PPD income invoice of this organization."""
    return (row is not None and row.organization_id == org and row.status in CANCELLABLE and row.voucher_type == "I"
            and (row.document or {}).get("payment_method") == "PPD")


async def _payable_invoice(session: AsyncSession, org: uuid.UUID, invoice_id) -> m.Invoice | None:
    try:
        row = await session.get(m.Invoice, uuid.UUID(str(invoice_id)))
    except (ValueError, TypeError):
        return None
    return row if _is_payable(row, org) else None


async def _paid_so_far(session: AsyncSession, org: uuid.UUID, target_ids: list[str],
                       exclude: uuid.UUID | None) -> dict[str, tuple[int, Decimal]]:
    """{target id: (installments, amount)} already settled by this organization's stamped P
    invoices, for all `target_ids` in one query."""
    probes = [m.Invoice.document.contains({"payments": [{"related_documents": [{"invoice_id": t}]}]}) for t in target_ids]
    q = select(m.Invoice.id, m.Invoice.document).where(
        m.Invoice.organization_id == org, m.Invoice.voucher_type == "P",
        m.Invoice.status.in_(("STAMPED", "CANCELLATION_PENDING", "CANCELLATION_REJECTED")), or_(*probes))
    out = {t: (0, Decimal(0)) for t in target_ids}
    for inv_id, doc in (await session.execute(q)).all():
        if inv_id == exclude:
            continue
        for p in doc.get("payments") or []:
            for d in p.get("related_documents") or []:
                if d.get("invoice_id") in out:
                    count, paid = out[d["invoice_id"]]
                    out[d["invoice_id"]] = (count + 1, paid + Decimal(d["amount_paid"]))
    return out


async def build_engine_invoice(session: AsyncSession, inv: m.Invoice, issuer: m.IssuerProfile,
                               issued_at: datetime, *, lock_related: bool = False) -> cfdi.Invoice:
    """The engine's Invoice for a stored draft, totals computed.

    For a payment (P), balances and installment numbers come from this organization's stamped P
    invoices; `lock_related` (when stamping) locks each paid invoice's row so two payments of one
    document are numbered one after the other.
    """
    doc = inv.document
    rec = doc["receiver"]
    concepts = []
    for c in doc.get("concepts") or []:
        taxes = [(t.get("withholding"), cfdi.Tax(tax=t["tax"], factor_type=t["factor_type"],
                                                 rate=Decimal(t["rate"]) if t.get("rate") is not None else None))
                 for t in c.get("taxes") or []]
        transferred = [tax for withholding, tax in taxes if not withholding]
        withheld = [tax for withholding, tax in taxes if withholding]
        concepts.append(cfdi.Concept(
            product_code=c["product_code"], quantity=Decimal(c["quantity"]), unit_code=c["unit_code"],
            description=c["description"], unit_price=Decimal(c["unit_price"]),
            tax_object=c.get("tax_object") or ("02" if transferred or withheld else "01"),
            identification=c.get("identification"), unit=c.get("unit"),
            discount=Decimal(c["discount"]) if c.get("discount") else None,
            transferred_taxes=transferred, withheld_taxes=withheld))
    vtype = doc["type"]
    payments = None
    if vtype == "P":
        concepts = [cfdi.Concept("84111506", Decimal("1"), "ACT", "Pago", Decimal("0"), "01")]
        target_ids = sorted({d["invoice_id"] for p in doc.get("payments") or [] for d in p.get("related_documents") or []})
        # One query for the paid documents; locked in id order when stamping so two payments that
        # share documents cannot deadlock. They are checked again: one may have been cancelled
        # since the draft was saved.
        q = select(m.Invoice).where(m.Invoice.id.in_([uuid.UUID(t) for t in target_ids])).order_by(m.Invoice.id)
        targets = {str(r.id): r for r in (await session.scalars(q.with_for_update() if lock_related else q)).all()}
        for t in target_ids:
            if not _is_payable(targets.get(t), inv.organization_id):
                raise InputError.single("DOCUMENT_NOT_PAYABLE",
                                        "La factura relacionada ya no está vigente o no es PPD.", ["payments"])
        settled = await _paid_so_far(session, inv.organization_id, target_ids, inv.id)
        plist = []
        for p in doc.get("payments") or []:
            docs = []
            for d in p.get("related_documents") or []:
                target = targets[d["invoice_id"]]
                n, paid = settled[d["invoice_id"]]
                places = cfdi.currency_decimals(target.currency)
                previous = round_money(target.total - paid, places)
                amount = Decimal(d["amount_paid"])
                ratio = amount / target.total if target.total else Decimal(0)
                dr_taxes = []
                tdoc = cfdi.parse_cfdi(target.xml.encode("utf-8")) if target.xml else None
                for t in (tdoc.transferred_totals if tdoc else []):
                    base = round_money((t.base or Decimal(0)) * ratio, places)
                    dr_taxes.append(cfdi.PaymentTax(t.tax, t.factor_type, t.rate, base,
                                                    None if t.factor_type == "Exento" else round_money(base * (t.rate or 0), places)))
                docs.append(cfdi.RelatedDocument(
                    uuid=target.uuid, currency=target.currency, installment=n + 1, previous_balance=previous,
                    amount_paid=amount, remaining_balance=previous - amount,
                    tax_object="02" if dr_taxes else "01", series=target.series, folio=str(target.folio),
                    exchange_rate=Decimal("1") if target.currency == p.get("currency", "MXN") else None,
                    transferred_taxes=dr_taxes))
            plist.append(cfdi.Payment(
                paid_at=datetime.fromisoformat(p["paid_at"]) if p.get("paid_at") else issued_at,
                payment_form=p.get("payment_form") or "03", currency=p.get("currency") or "MXN", amount=None,
                exchange_rate=Decimal(p["exchange_rate"]) if p.get("exchange_rate") else Decimal("1"),
                operation_number=p.get("operation_number"), related_documents=docs))
        payments = cfdi.compute_payments(cfdi.PaymentsComplement(totals=cfdi.PaymentTotals(Decimal(0)), payments=plist))
    gi = doc.get("global_information")
    engine = cfdi.Invoice(
        issued_at=issued_at, place_of_issue=issuer.postal_code, voucher_type=vtype,
        exportation=doc.get("exportation") or "01", currency="XXX" if vtype == "P" else doc.get("currency") or "MXN",
        issuer=cfdi.Issuer(rfc=issuer.rfc, name=issuer.legal_name, tax_regime=issuer.tax_regime),
        receiver=cfdi.Receiver(rfc=rec["rfc"], name=rec["name"], tax_zip_code=rec["postal_code"],
                               tax_regime=rec["tax_regime"], cfdi_use=rec["cfdi_use"]),
        concepts=concepts, series=inv.series, folio=str(inv.folio),
        payment_form=None if vtype == "P" else doc.get("payment_form"),
        payment_method=None if vtype == "P" else doc.get("payment_method"),
        payment_conditions=doc.get("payment_conditions"),
        exchange_rate=Decimal(doc["exchange_rate"]) if doc.get("exchange_rate") and vtype != "P" else None,
        global_information=cfdi.GlobalInformation(gi["periodicity"], gi["months"], int(gi["year"])) if gi else None,
        related=[cfdi.RelatedCfdis(r["relation_type"], [u.upper() for u in r.get("uuids") or []])
                 for r in doc.get("related") or []],
        payments=payments,
    )
    return cfdi.compute_totals(engine)


def _issues_json(issues: list) -> list[dict]:
    return [{"code": i.code, "field": i.field_path, "message": i.message_es} for i in issues]


def _apply_totals(inv: m.Invoice, engine: cfdi.Invoice) -> None:
    inv.currency = engine.currency if engine.voucher_type != "P" else "MXN"
    inv.exchange_rate = engine.exchange_rate
    inv.subtotal = engine.subtotal or Decimal(0)
    inv.discount = engine.discount
    inv.total_transferred = engine.total_transferred
    inv.total_withheld = engine.total_withheld
    inv.total = engine.total or Decimal(0)
    if engine.voucher_type == "P" and engine.payments is not None:
        inv.total = engine.payments.totals.total_amount


async def _evaluate(session: AsyncSession, inv: m.Invoice, issuer: m.IssuerProfile) -> cfdi.Invoice:
    now = local_now(issuer.postal_code)
    engine = await build_engine_invoice(session, inv, issuer, now)
    inv.issues = _issues_json(cfdi.check_invoice(engine, now))
    _apply_totals(inv, engine)
    return engine


def _transition(session: AsyncSession, inv: m.Invoice, to: str, actor: uuid.UUID | None, reason: str | None = None) -> None:
    session.add(m.InvoiceEvent(invoice_id=inv.id, organization_id=inv.organization_id, actor_id=actor,
                               from_status=inv.status,
                               to_status=to, reason=reason))
    inv.status = to


async def _emit_invoice(session: AsyncSession, inv: m.Invoice, payload_cls, actor: uuid.UUID | None = None, **fields) -> None:
    """Every invoice event: the invoice reference, its organization, ordered per invoice."""
    await emit(session, m.outbox, payload_cls(**_ref(inv), **fields), organization_id=inv.organization_id,
               actor_id=actor, aggregate_id=f"invoice:{inv.id}")


def _ref(inv: m.Invoice) -> dict:
    return dict(invoice_id=inv.id, series=inv.series, folio=inv.folio, invoice_type=inv.voucher_type, total=inv.total,
                currency=inv.currency, customer_name=inv.customer_name, customer_rfc=inv.customer_rfc,
                customer_email=inv.customer_email, created_by=inv.created_by)


def _apply_document(inv: m.Invoice, doc: dict) -> None:
    """Store the normalised document and the receiver columns lists and search read."""
    inv.document = doc
    inv.customer_id = uuid.UUID(doc["customer_id"]) if doc.get("customer_id") else None
    inv.customer_rfc, inv.customer_name = doc["receiver"]["rfc"], doc["receiver"]["name"]
    inv.customer_email = doc["receiver"].get("email")


async def create_invoice(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, data: dict) -> m.Invoice:
    async with transaction(rt.sessionmaker) as session:
        issuer = await get_issuer(session, org)
        doc = await normalise_document(session, org, issuer, data)
        inv = m.Invoice(id=uuid.uuid4(), organization_id=org, created_by=actor, voucher_type=doc["type"],
                        status="DRAFT", series=doc["series"])
        _apply_document(inv, doc)
        inv.folio = await take_folio(session, org, doc["series"])
        await _evaluate(session, inv, issuer)
        session.add(inv)
        await session.flush()
        session.add(m.InvoiceEvent(invoice_id=inv.id, organization_id=org, actor_id=actor, from_status=None,
                                   to_status="DRAFT", reason="Creación"))
        return inv


async def update_invoice(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, data: dict) -> m.Invoice:
    async with transaction(rt.sessionmaker) as session:
        inv = await _locked(session, org, invoice_id)
        if inv.status not in EDITABLE:
            raise InputError.single("INVALID_STATUS", "Solo se pueden editar borradores o facturas con error de timbrado.",
                                    ["id"])
        issuer = await get_issuer(session, org)
        old_series = inv.series
        doc = await normalise_document(session, org, issuer, data, current=inv.document)
        if doc["series"] != old_series:
            inv.series, inv.folio = doc["series"], await take_folio(session, org, doc["series"])
        _apply_document(inv, doc)
        await _evaluate(session, inv, issuer)
        return inv


async def _locked(session: AsyncSession, org: uuid.UUID, invoice_id: uuid.UUID) -> m.Invoice:
    inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id, m.Invoice.organization_id == org)
                               .with_for_update())
    if inv is None:
        raise NotFoundError("Factura no encontrada.")
    return inv


def stamp_job_id(invoice_id, key: str) -> str:
    return f"stamp:{invoice_id}:{key}"


async def request_stamp(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, key: str) -> m.Invoice:
    key = (key or "").strip()
    if not key or len(key) > 200:
        raise InputError.single("INVALID_IDEMPOTENCY_KEY", "La clave de idempotencia es obligatoria (máx. 200).",
                                ["idempotencyKey"])
    async with transaction(rt.sessionmaker) as session:
        inv = await _locked(session, org, invoice_id)
        if inv.stamp_idempotency_key == key:
            return inv  # the same request again: the same answer, nothing new
        if inv.status not in EDITABLE:
            raise InputError.single("INVALID_STATUS", "La factura no se puede timbrar en su estado actual.", ["id"])
        issuer = await get_issuer(session, org)
        csd_row = await active_csd(session, org)
        if csd_row is None:
            raise InputError.single("CSD_REQUIRED", "Carga y activa un certificado de sello digital (CSD).", ["id"])
        if csd_row.valid_to < utcnow():
            raise InputError.single("CERTIFICATE_EXPIRED", "El certificado activo está vencido.", ["id"])
        engine = await _evaluate(session, inv, issuer)
        if inv.issues:
            raise InputError([UserError(field=["id"], code="INVOICE_HAS_ISSUES",
                                        message="La factura tiene errores de validación: " +
                                        "; ".join(i["message"] for i in inv.issues))])
        inv.issued_at = engine.issued_at
        inv.stamp_idempotency_key = key
        inv.stamp_attempts = 0
        inv.pac_code = inv.pac_message = None
        _transition(session, inv, "STAMPING", actor, "Timbrado solicitado")
        await _emit_invoice(session, inv, InvoiceStampingRequested, actor, idempotency_key=key)
    # Publish STAMPING before the job exists, so a fast worker's STAMPED can never arrive first.
    await publish_status(rt, inv)
    await enqueue_stamp(rt, inv.id, key)
    return inv


async def enqueue_stamp(rt: Runtime, invoice_id, key: str, *, job_id: str | None = None) -> None:
    """After commit: hand the invoice to the stamping worker (arq dedupes by job id)."""
    from arq.connections import ArqRedis

    try:
        pool = ArqRedis(connection_pool=rt.redis.connection_pool)
        await pool.enqueue_job("stamp_invoice_job", str(invoice_id), _job_id=job_id or stamp_job_id(invoice_id, key))
    except Exception:  # noqa: BLE001 - the sweep cron re-enqueues invoices left in STAMPING
        log.exception("could not enqueue stamping job", extra={"invoice_id": str(invoice_id)})


async def publish_status(rt: Runtime, inv: m.Invoice) -> None:
    try:
        await publish_live(rt.redis, org_channel(inv.organization_id), {
            "kind": "invoice_status", "invoiceId": str(inv.id), "status": inv.status, "uuid": inv.uuid,
            "code": inv.pac_code, "message": inv.pac_message, "at": utcnow().isoformat(),
        })
    except Exception:  # noqa: BLE001 - live updates are a view; the database is the record
        log.exception("could not publish invoice status")


# --- stamping (run by the worker) ----------------------------------------------------------------

@dataclass
class StampOutcome:
    status: str
    retry: bool = False
    invoice: m.Invoice | None = None


def document_base_path(invoice_id, fmt: str) -> str:
    return f"/documents/{invoice_id}.{fmt}"


def document_path(settings: Settings, invoice_id, fmt: str, expires_at: datetime) -> str:
    exp = int(expires_at.timestamp())
    path = document_base_path(invoice_id, fmt)
    sig = hmac_sign(f"{path}:{exp}", settings=settings, purpose=DOWNLOAD_PURPOSE)
    return f"{path}?exp={exp}&sig={sig}"


def verify_document_signature(settings: Settings, path: str, exp: str, sig: str) -> bool:
    try:
        if int(exp) < int(utcnow().timestamp()):
            return False
    except (TypeError, ValueError):
        return False
    return hmac_verify(f"{path}:{exp}", sig or "", settings=settings, purpose=DOWNLOAD_PURPOSE)


async def stamp_invoice(rt: Runtime, invoice_id: uuid.UUID, *, attempt: int = 1, max_attempts: int = 5, pac=None) -> StampOutcome:
    """Stamp one invoice in STAMPING. Idempotent, and safe with several workers (row lock)."""
    pac = pac or get_pac(rt.redis)
    retry = False
    async with transaction(rt.sessionmaker) as session:
        inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id)
                                   .with_for_update(skip_locked=True))
        if inv is None:
            return StampOutcome("BUSY_OR_MISSING")
        if inv.status != "STAMPING":
            return StampOutcome(inv.status, invoice=inv)
        inv.stamp_attempts = (inv.stamp_attempts or 0) + 1
        issuer = await get_issuer(session, inv.organization_id)
        csd_row = await active_csd(session, inv.organization_id)
        failure: tuple[str, str] | None = None
        result = None
        if csd_row is None or issuer is None:
            failure = ("CSD_REQUIRED", "No hay un certificado de sello digital activo.")
        else:
            xml = None
            try:
                engine = await build_engine_invoice(session, inv, issuer, inv.issued_at, lock_related=True)
                tree = cfdi.build_tree(engine)
                cfdi.sign_cfdi(tree, open_csd(csd_row, rt.settings))
                xml = cfdi.to_bytes(tree)
            except InputError as exc:  # e.g. a paid document cancelled after the draft was saved
                failure = (exc.errors[0].code, exc.errors[0].message)
            except Exception:  # noqa: BLE001 - a CFDI we cannot build or seal will not fix itself
                log.exception("could not build or seal the CFDI", extra={"invoice_id": str(inv.id)})
                failure = ("SEAL_ERROR", "No se pudo generar o sellar el comprobante con el CSD activo.")
            if xml is not None:
                try:
                    result = await _stamp_with(pac, xml, inv.id)
                except PacError as exc:
                    if exc.transient and attempt < max_attempts and inv.stamp_attempts < MAX_TOTAL_ATTEMPTS:
                        inv.pac_code, inv.pac_message = exc.code, exc.message
                        retry = True
                    else:
                        failure = (exc.code, exc.message)
        if result is not None:
            inv.uuid, inv.stamped_at, inv.xml = result.uuid, result.stamped_at, result.xml.decode("utf-8")
            inv.pac_certificate_number = result.sat_certificate_number
            inv.pac_code = inv.pac_message = None
            _transition(session, inv, "STAMPED", None,
                        "Timbre recuperado (ya timbrado)" if result.previously_stamped else "Timbrado por el PAC")
            exp = utcnow() + EVENT_LINK_TTL
            await _emit_invoice(session, inv, InvoiceStamped, uuid=inv.uuid, stamped_at=inv.stamped_at,
                                xml_path=document_path(rt.settings, inv.id, "xml", exp),
                                pdf_path=document_path(rt.settings, inv.id, "pdf", exp))
        elif failure is not None:
            inv.pac_code, inv.pac_message = failure
            _transition(session, inv, "STAMP_FAILED", None, f"{failure[0]}: {failure[1]}")
            await _emit_invoice(session, inv, InvoiceStampFailed, code=failure[0], message=failure[1])
    if not retry:
        await publish_status(rt, inv)
    return StampOutcome(inv.status, retry=retry, invoice=inv)


async def _stamp_with(pac, xml: bytes, invoice_id) -> StampResult:
    """The PAC's answer; trouble reaching it (network, IO) becomes a transient PacError."""
    try:
        return await pac.stamp(xml)
    except PacError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever broke on the way, it may work next time
        log.warning("PAC call failed", exc_info=True, extra={"invoice_id": str(invoice_id)})
        raise PacError("PAC_ERROR", f"Error de comunicación con el PAC ({type(exc).__name__}).", transient=True) from exc


async def stuck_stamping(rt: Runtime, older_than: timedelta = timedelta(minutes=2)) -> list[tuple[uuid.UUID, str]]:
    async with rt.sessionmaker() as session:
        rows = await session.execute(select(m.Invoice.id, m.Invoice.stamp_idempotency_key).where(
            m.Invoice.status == "STAMPING", m.Invoice.updated_at < utcnow() - older_than))
        return [(r[0], r[1]) for r in rows.all()]


# --- cancellation --------------------------------------------------------------------------------

async def cancel_invoice(rt: Runtime, org: uuid.UUID, actor: uuid.UUID, invoice_id: uuid.UUID, reason: str,
                         replacement_uuid: str | None, *, pac=None) -> m.Invoice:
    pac = pac or get_pac(rt.redis)
    async with transaction(rt.sessionmaker) as session:
        inv = await _locked(session, org, invoice_id)
        if inv.status in ("CANCELLATION_PENDING", "CANCELLED") and inv.cancellation_reason == reason:
            return inv  # asked again: same answer
        if inv.status not in CANCELLABLE:
            raise InputError.single("INVALID_STATUS", "Solo se pueden cancelar facturas timbradas.", ["id"])
        issues = cfdi.check_cancellation_request(reason, replacement_uuid, inv.uuid or "")
        if issues:
            field = {"replacement_uuid": "replacementUuid"}.get(issues[0].field_path, issues[0].field_path)
            raise InputError([UserError(field=[field], code=i.code, message=i.message_es) for i in issues])
        if replacement_uuid:
            replacement = await invoice_by_uuid(session, org, replacement_uuid)
            if replacement is None or replacement.status not in CANCELLABLE:
                raise InputError.single("REPLACEMENT_NOT_FOUND",
                                        "El folio fiscal sustituto no es una factura timbrada de esta organización.",
                                        ["replacementUuid"])
        issuer = await get_issuer(session, org)
        try:
            answer = await pac.cancel(inv.uuid, issuer.rfc, reason, replacement_uuid)
        except PacError as exc:
            raise InputError.single(f"PAC_{exc.code}" if exc.code[0].isdigit() else exc.code, exc.message, ["id"]) from None
        inv.cancellation_reason, inv.replacement_uuid = reason, replacement_uuid.upper() if replacement_uuid else None
        inv.cancellation_requested_at = utcnow()
        why = f"Motivo {reason}: {cfdi.CANCELLATION_REASONS[reason]}"
        await _emit_invoice(session, inv, InvoiceCancellationRequested, actor, uuid=inv.uuid, reason=reason,
                            replacement_uuid=inv.replacement_uuid)
        if answer.status == "CANCELLED":
            inv.cancelled_at = utcnow()
            _transition(session, inv, "CANCELLED", actor, why)
            await _emit_invoice(session, inv, InvoiceCancelled, actor, uuid=inv.uuid, reason=reason)
        else:
            _transition(session, inv, "CANCELLATION_PENDING", actor, why + " (en espera de aceptación del receptor)")
    await publish_status(rt, inv)
    return inv


async def poll_cancellation(rt: Runtime, invoice_id: uuid.UUID, *, pac=None) -> str:
    pac = pac or get_pac(rt.redis)
    async with transaction(rt.sessionmaker) as session:
        inv = await session.scalar(select(m.Invoice).where(m.Invoice.id == invoice_id)
                                   .with_for_update(skip_locked=True))
        if inv is None or inv.status != "CANCELLATION_PENDING":
            return inv.status if inv else "BUSY_OR_MISSING"
        status = await pac.status(inv.uuid)
        if status == "CANCELLED":
            inv.cancelled_at = utcnow()
            _transition(session, inv, "CANCELLED", None, "El receptor aceptó la cancelación")
            await _emit_invoice(session, inv, InvoiceCancelled, uuid=inv.uuid, reason=inv.cancellation_reason)
        elif status == "REJECTED":
            _transition(session, inv, "CANCELLATION_REJECTED", None, "El receptor rechazó la cancelación")
            await _emit_invoice(session, inv, InvoiceCancellationRejected, uuid=inv.uuid)
        else:
            return inv.status
    await publish_status(rt, inv)
    return inv.status


async def pending_cancellations(rt: Runtime) -> list[uuid.UUID]:
    async with rt.sessionmaker() as session:
        return list((await session.scalars(select(m.Invoice.id).where(m.Invoice.status == "CANCELLATION_PENDING"))).all())


# --- queries -------------------------------------------------------------------------------------

async def invoices_by_ids(session: AsyncSession, org: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, m.Invoice]:
    rows = await session.scalars(select(m.Invoice).where(m.Invoice.organization_id == org, m.Invoice.id.in_(ids)))
    return {r.id: r for r in rows}


async def invoice_by_uuid(session: AsyncSession, org: uuid.UUID, value: str) -> m.Invoice | None:
    return await session.scalar(select(m.Invoice).where(m.Invoice.organization_id == org,
                                                        m.Invoice.uuid == value.strip().upper()))


async def invoices_page(session: AsyncSession, org: uuid.UUID, *, filters: dict, after: list | None,
                        limit: int) -> list[m.Invoice]:
    q = select(m.Invoice).where(m.Invoice.organization_id == org)
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
        if s.isdigit():
            conds.append(m.Invoice.folio == int(s))
        q = q.where(or_(*conds))
    if after:
        ts, last_id = after  # typed by decode_cursor
        q = q.where(or_(m.Invoice.created_at < ts, and_(m.Invoice.created_at == ts, m.Invoice.id < last_id)))
    q = q.order_by(m.Invoice.created_at.desc(), m.Invoice.id.desc()).limit(limit)
    return list((await session.scalars(q)).all())


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
