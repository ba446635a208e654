"""The organization as issuer: fiscal profile (Emisor), series and folios, CSDs."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime, timedelta

import anyio.to_thread
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.crypto import seal, sealed_key_id, unseal
from shared.db import transaction
from shared.errors import InputError, UserError
from shared.events import CsdExpiring
from shared.outbox import emit
from shared.runtime import Runtime
from sat import cfdi
from subgraphs.invoice import models as m
from sat.cfdi import catalogs
from sat.cfdi.csd import Csd, SatAuthorities, load_certificate
from sat.cfdi.rfc import valid_rfc  # one RFC check for every service
from sat.cfdi.rules import person_type
from subgraphs.invoice.service.common import utcnow

def series_problem(code: str) -> str | None:
    return None if re.fullmatch(r"[A-Z0-9]{1,25}", code) else "La serie debe tener de 1 a 25 letras o números."


def party_problems(data: dict) -> list[UserError]:
    """RFC, legal name, tax regime (in the catalog and allowed for the RFC's person type), postal
    code of an issuer or customer input (`input.*` paths)."""
    out: list[UserError] = []

    def add(code: str, message: str, field: str) -> None:
        out.append(UserError(field=["input", field], code=code, message=message))

    rfc = (data.get("rfc") or "").strip().upper()
    regime = catalogs.get("c_RegimenFiscal", data.get("tax_regime") or "")
    if not valid_rfc(rfc):
        add("INVALID_RFC", "El RFC no tiene un formato válido.", "rfc")
    elif regime and person_type(rfc) in ("fisica", "moral") and regime.get(person_type(rfc)) is False:
        add("REGIME_NOT_ALLOWED", "El régimen fiscal no aplica a este tipo de persona.", "taxRegime")
    if not (data.get("legal_name") or "").strip():
        add("REQUIRED", "La razón social es obligatoria.", "legalName")
    if regime is None:
        add("INVALID_TAX_REGIME", "El régimen fiscal no está en el catálogo c_RegimenFiscal.", "taxRegime")
    if not catalogs.contains("c_CodigoPostal", data.get("postal_code")):
        add("INVALID_POSTAL_CODE", "El código postal no está en el catálogo c_CodigoPostal.", "postalCode")
    return out


async def get_issuer(session: AsyncSession, org: uuid.UUID) -> m.IssuerProfile | None:
    return await session.get(m.IssuerProfile, org)


async def save_issuer(rt: Runtime, org: uuid.UUID, data: dict) -> m.IssuerProfile:
    errors = party_problems(data)
    series = (data.get("default_series") or "A").strip().upper()
    if problem := series_problem(series):
        errors.append(UserError(field=["input", "defaultSeries"], code="INVALID_SERIES", message=problem))
    if errors:
        raise InputError(errors)
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


# --- series -------------------------------------------------------------------------------------

async def create_series(rt: Runtime, org: uuid.UUID, code: str, next_folio: int = 1) -> m.Series:
    """`createSeries(code, nextFolio)`: errors name those arguments."""
    code = (code or "").strip().upper()
    if problem := series_problem(code):
        raise InputError.single("INVALID_SERIES", problem, ["code"])
    if next_folio < 1:
        raise InputError.single("INVALID_FOLIO", "El folio inicial debe ser mayor que cero.", ["nextFolio"])
    async with transaction(rt.sessionmaker) as session:
        res = await session.execute(pg_insert(m.Series).values(
            id=uuid.uuid4(), organization_id=org, code=code, next_folio=next_folio,
        ).on_conflict_do_nothing().returning(m.Series))
        row = res.scalar_one_or_none()
        if row is None:
            raise InputError.single("SERIES_EXISTS", "La serie ya existe.", ["code"])
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


# --- CSD ----------------------------------------------------------------------------------------

def _csd_context(org: uuid.UUID, number: str) -> str:
    return f"invoice.csd:{org}:{number}"


def _b64(value: str, code: str, message: str, field: str) -> bytes:
    try:
        return base64.b64decode("".join((value or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError.single(code, message, [field]) from None


# Which `uploadCsd` argument a CSD error is about.
_CSD_ERROR_FIELD = {"WRONG_PASSWORD": "password", "INVALID_KEY": "privateKey", "KEY_CERT_MISMATCH": "privateKey",
                    "CSD_KEY_UNSUPPORTED": "privateKey"}


def _csd_input_error(exc: cfdi.CsdError) -> InputError:
    return InputError.single(exc.code, exc.message, [_CSD_ERROR_FIELD.get(exc.code, "certificate")])


async def upload_csd(rt: Runtime, org: uuid.UUID, actor: uuid.UUID | None, certificate_b64: str,
                     private_key_b64: str, password: str, *, now: datetime | None = None) -> m.Certificate:
    """`uploadCsd(certificate, privateKey, password)`: errors name those arguments."""
    cer = _b64(certificate_b64, "INVALID_CERTIFICATE", "El certificado no es base64 válido.", "certificate")
    key = _b64(private_key_b64, "INVALID_KEY", "La llave privada no es base64 válida.", "privateKey")
    async with rt.sessionmaker() as session:  # no CPU spent on a CSD that could not be used anyway
        if await session.get(m.IssuerProfile, org) is None:
            raise InputError.single("ISSUER_REQUIRED", "Primero configura los datos fiscales del emisor.", None)
    try:
        # Decrypting the key and checking the certificate cost CPU: off the event loop, and before
        # the transaction, so no row stays locked meanwhile.
        csd, plain = await anyio.to_thread.run_sync(_open_upload, cer, key, password, now, rt.settings.app_env)
    except cfdi.CsdError as exc:
        raise _csd_input_error(exc) from None
    async with transaction(rt.sessionmaker) as session:
        # Locking the issuer serialises uploads (one becomes active, never two) and keeps the RFC
        # from changing under the check below.
        issuer = await session.get(m.IssuerProfile, org, with_for_update=True)
        if issuer is None:
            raise InputError.single("ISSUER_REQUIRED", "Primero configura los datos fiscales del emisor.", None)
        try:
            cfdi.check_rfc(csd, issuer.rfc)
        except cfdi.CsdError as exc:
            raise _csd_input_error(exc) from None
        existing = await session.scalar(select(m.Certificate).where(
            m.Certificate.organization_id == org, m.Certificate.certificate_number == csd.certificate_number))
        if existing is not None:
            raise InputError.single("CSD_ALREADY_UPLOADED", "Este certificado ya está cargado.", ["certificate"])
        sealed = seal(plain, context=_csd_context(org, csd.certificate_number), settings=rt.settings)
        has_active = await session.scalar(select(func.count()).select_from(m.Certificate).where(
            m.Certificate.organization_id == org, m.Certificate.active.is_(True)))
        row = m.Certificate(
            organization_id=org, certificate_number=csd.certificate_number, rfc=csd.rfc, legal_name=csd.legal_name,
            valid_from=csd.valid_from, valid_to=csd.valid_to,
            certificate_der=csd.certificate.public_bytes(serialization.Encoding.DER), private_key_sealed=sealed,
            kek_id=sealed_key_id(sealed), active=not has_active, created_by=actor,
        )
        session.add(row)
        await session.flush()
        return row


def _open_upload(cer: bytes, key: bytes, password: str, now: datetime | None, app_env: str) -> tuple[Csd, bytes]:
    """Runs in a worker thread: the uploaded CSD checked, and its key as unencrypted PKCS#8."""
    csd = cfdi.load_csd(cer, key, password, now=now, authorities=SatAuthorities.for_environment(app_env))
    return csd, csd.private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


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
        # Validated when uploaded and sealed with authenticated encryption since: no need to pay
        # OpenSSL's ~50 ms key validation (GIL held) again.
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        _open_csds[cache_key] = Csd(load_certificate(row.certificate_der), key,
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
