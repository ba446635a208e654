"""Use cases for an organization's PAC accounts: replace the ordered list, read it back without
secrets, and open it into the PAC the stamping worker uses.

An empty list means "use the service's default PAC" (PAC_PROVIDER, the sandbox unless configured).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.crypto import sealed_key_id
from shared.db import transaction
from shared.errors import InputError, UserError
from shared.runtime import Runtime
from subgraphs.invoice import models as m
from sat.cfdi.csd import Csd

from sat.pac.base import PacError
from sat.pac.transport import shared_client
from sat.pac.accounts import PacAccount, PacSettings, build_pac, open_account, seal_account

MAX_ACCOUNTS = len(("finkok", "swsapien"))


def _hint(account: PacAccount) -> str:
    """Enough to recognise the account, not enough to use it."""
    who = account.username or account.token or ""
    return (who[:3] + "…" + who[-2:]) if len(who) > 8 else "…"


def _check(accounts: list[PacAccount]) -> None:
    errors = [UserError(field=["accounts", str(i), field], code=code, message=message)
              for i, a in enumerate(accounts) for field, code, message in a.problems()]
    seen: set[str] = set()
    for i, a in enumerate(accounts):
        if a.provider in seen:
            errors.append(UserError(field=["accounts", str(i), "provider"], code="DUPLICATE_PAC",
                                    message="Cada proveedor puede aparecer una sola vez."))
        seen.add(a.provider)
    if len(accounts) > MAX_ACCOUNTS:
        errors.append(UserError(field=["accounts"], code="TOO_MANY_PACS",
                                message=f"Se admiten hasta {MAX_ACCOUNTS} cuentas de PAC."))
    if errors:
        raise InputError(errors)


async def set_pac_accounts(rt: Runtime, org: uuid.UUID, actor: uuid.UUID | None,
                           accounts: list[PacAccount]) -> list[m.PacAccount]:
    """Replace the organization's PAC accounts with `accounts`, first = preferred. All or nothing."""
    accounts = [PacAccount(a.provider.strip().lower(), *(v.strip() if v else None
                                                         for v in (a.username, a.password, a.token)))
                for a in accounts]
    _check(accounts)
    async with transaction(rt.sessionmaker) as session:
        # Serialise concurrent replacements of one organization's list (no unique-key race).
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"invoice.pac_accounts:{org}"))))
        await session.execute(delete(m.PacAccount).where(m.PacAccount.organization_id == org))
        rows = []
        for position, account in enumerate(accounts):
            sealed = seal_account(account, organization_id=org, settings=rt.settings)
            rows.append(m.PacAccount(organization_id=org, position=position, provider=account.provider,
                                     username_hint=_hint(account), account_sealed=sealed,
                                     kek_id=sealed_key_id(sealed), created_by=actor))
        session.add_all(rows)
        await session.flush()
        return rows


async def list_pac_accounts(session: AsyncSession, org: uuid.UUID) -> list[m.PacAccount]:
    return list((await session.scalars(select(m.PacAccount).where(m.PacAccount.organization_id == org)
                                       .order_by(m.PacAccount.position))).all())


async def organization_pac(rt: Runtime, session: AsyncSession, org: uuid.UUID, redis: Redis, *,
                           csd: Csd | None, settings: PacSettings | None = None):
    """The organization's own PACs (a FailoverPac in its order), or None to use the default PAC.
    The caller closes it (`aclose`) when done."""
    rows = (await account_rows(session, [org])).get(org)
    return accounts_pac(open_accounts(rt, rows), redis, csd=csd, settings=settings) if rows else None


async def account_rows(session: AsyncSession, orgs: list[uuid.UUID]) -> dict[uuid.UUID, list[m.PacAccount]]:
    """The PAC account rows of each of `orgs` that has any, in order of preference: one query
    whatever the number of organizations (the stamping worker reads them once per batch)."""
    rows = (await session.scalars(select(m.PacAccount).where(m.PacAccount.organization_id.in_(orgs))
                                  .order_by(m.PacAccount.organization_id, m.PacAccount.position))).all()
    grouped: dict[uuid.UUID, list[m.PacAccount]] = {}
    for r in rows:
        grouped.setdefault(r.organization_id, []).append(r)
    return grouped


def open_accounts(rt: Runtime, rows: list[m.PacAccount]) -> list[PacAccount]:
    """One organization's account rows, unsealed."""
    return [open_account(r.account_sealed, organization_id=r.organization_id, provider=r.provider,
                         settings=rt.settings) for r in rows]


def accounts_pac(accounts: list[PacAccount], redis: Redis, *, csd: Csd | None, settings: PacSettings | None = None):
    """A FailoverPac over `accounts` (opened), sharing the worker's pooled HTTP client."""
    settings = settings or PacSettings()
    return build_pac(accounts, settings, redis, csd=csd, client=shared_client(settings.timeouts))


@asynccontextmanager
async def chosen_pac(rt: Runtime, session: AsyncSession, org: uuid.UUID, default, *, injected: bool,
                     csd: Csd | None) -> AsyncIterator[tuple[object, bool]]:
    """(PAC, own) for one call of the invoice service: a PAC the caller injected (tests) wins, then
    the organization's own accounts, then `default` (the worker's configured provider). `own` is True
    for the organization's accounts, which take the idempotency key and the CFDI's expression."""
    own = None if injected else await organization_pac(rt, session, org, rt.redis, csd=csd)
    try:
        yield (own, True) if own is not None else (default, False)
    finally:
        if own is not None:
            await own.aclose()


# --- receiver side: cancellation requests against the organization's received CFDIs ----------

def _as_input(exc: PacError) -> InputError:
    """The PAC's refusal as the client sees it (same shape as cancelInvoice's PAC errors)."""
    return InputError.single(f"PAC_{exc.code}" if exc.code[:1].isdigit() else exc.code, exc.message, None)


async def _receiver_pac(rt: Runtime, org: uuid.UUID, redis: Redis, settings: PacSettings | None):
    """(PAC, receiver RFC): the organization answers with its own CSD through its own PAC accounts."""
    from subgraphs.invoice import service  # the service imports this module's neighbours; import late

    async with rt.sessionmaker() as session:
        issuer = await service.get_issuer(session, org)
        csd_row = await service.active_csd(session, org)
        if issuer is None or csd_row is None:
            raise InputError.single("CSD_REQUIRED", "Configura el emisor y activa un CSD para responder solicitudes.",
                                    None)
        csd = await asyncio.to_thread(service.open_csd, csd_row, rt.settings)  # key loading stays off the loop
        pac = await organization_pac(rt, session, org, redis, csd=csd,
                                     settings=settings)
    if pac is None:
        raise InputError.single("PAC_NOT_CONFIGURED",
                                "Registra una cuenta de PAC (Finkok o SW Sapien) para consultar solicitudes.", None)
    return pac, issuer.rfc


async def cancellation_requests(rt: Runtime, org: uuid.UUID, redis: Redis, *,
                                settings: PacSettings | None = None) -> list[str]:
    """UUIDs of CFDIs received by the organization whose issuers asked SAT to cancel them."""
    pac, rfc = await _receiver_pac(rt, org, redis, settings)
    try:
        return await pac.pending_cancellations(rfc)
    except PacError as exc:
        raise _as_input(exc) from None
    finally:
        await pac.aclose()


async def answer_cancellation_requests(rt: Runtime, org: uuid.UUID, redis: Redis, answers: dict[str, bool], *,
                                       settings: PacSettings | None = None) -> dict[str, str]:
    """Accept (True) or reject (False) each request; SAT's code per UUID (1000 = recorded)."""
    if not answers:
        raise InputError.single("REQUIRED", "Indica al menos una solicitud.", ["answers"])
    pac, rfc = await _receiver_pac(rt, org, redis, settings)
    try:
        return await pac.answer_cancellations(rfc, answers)
    except PacError as exc:
        raise _as_input(exc) from None
    finally:
        await pac.aclose()
