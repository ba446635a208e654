"""Auth use cases: one function per thing a user can do. Each owns its transaction and writes its
events to the outbox in that same transaction. Bad input raises `InputError` before anything is
written; permission problems raise `ForbiddenError`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.crypto import hash_token, new_token, seal, unseal
from shared.db import transaction
from shared.errors import ForbiddenError, InputError, UserError
from shared.events import (
    ApiKeyCreated, ApiKeyRevoked, EmailVerificationRequested, MemberInvited, MemberJoined,
    MemberRemoved, MemberRoleChanged, MfaDisabled, MfaEnabled, PasswordChanged, ProfileUpdated,
    PasswordResetRequested, SignUpRequested, UserRegistered,
)
from shared.outbox import emit
from shared.permissions import ALL_PERMISSIONS, ROLES, Permission, permissions_for_role
from shared.runtime import Runtime
from shared.validation import email_problem
from shared.tokens import InvalidTokenError, Principal
from subgraphs.auth import keys, security
from subgraphs.auth.links import unusable_hash
from subgraphs.auth.models import (
    ApiKey, EmailToken, Invitation, Membership, Organization, RecoveryCode, RefreshToken, SignUp, User, outbox,
)

MFA_AUDIENCE = "facturacion-mfa"
MFA_CHALLENGE_TTL = 300
EMAIL_VERIFY_TTL = timedelta(days=2)
SIGN_UP_TTL = timedelta(days=2)
INVITATION_TTL = timedelta(days=7)
API_KEY_TOKEN_TTL = 900
API_KEY_PREFIX = "fk_"
API_KEY_SHOWN = 10  # characters of a key kept readable (`ApiKey.prefix`), to tell keys apart
ORG_MANAGE = Permission.ORG_MANAGE.value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    organization_id: uuid.UUID


@dataclass
class MfaChallenge:
    challenge_token: str
    expires_in: int


@dataclass
class TotpEnrollment:
    secret: str
    otpauth_uri: str
    qr_svg: str


def _throttle(rt: Runtime, scope: str = "login") -> security.Throttle:
    s = rt.settings
    return security.Throttle(rt.redis, max_per_account=s.login_max_failures_per_account,
                             max_per_ip=s.login_max_failures_per_ip, lockout_seconds=s.login_lockout_seconds, scope=scope)


def _too_many(wait: int) -> InputError:
    minutes = max(1, (wait + 59) // 60)
    return InputError.single("TOO_MANY_ATTEMPTS", f"Demasiados intentos. Intenta de nuevo en {minutes} min.", None)


# --- tokens -------------------------------------------------------------------------------------

async def _membership(session: AsyncSession, user_id: uuid.UUID, org_id: uuid.UUID) -> Membership | None:
    return (await session.execute(
        select(Membership).where(Membership.user_id == user_id, Membership.organization_id == org_id)
    )).scalar_one_or_none()


async def _token_version(rt: Runtime, m: Membership) -> int:
    """The version to stamp into a token: the membership's, raised to the minimum the subgraphs
    accept if a rolled-back role change left that higher (shared/authz.py)."""
    floor = await rt.authz.minimum(m.organization_id, m.user_id, cached=False)
    if floor > m.authz_version:
        m.authz_version = floor
    return m.authz_version


async def _invalidate_tokens(rt: Runtime, m: Membership) -> None:
    """Every token issued for this membership so far stops working in every subgraph. Called as
    the last step before the caller's transaction commits (see shared/authz.py for why before)."""
    floor = await rt.authz.minimum(m.organization_id, m.user_id, cached=False)
    m.authz_version = max(m.authz_version, floor) + 1
    await rt.authz.raise_minimum(m.organization_id, m.user_id, m.authz_version,
                                 keep_seconds=rt.settings.access_token_ttl_seconds + 300)


async def _access_token(session, rt: Runtime, m: Membership, perms: list[str], *, sid=None, akid=None) -> str:
    claims = {"sub": str(m.user_id), "org": str(m.organization_id), "perms": sorted(perms), "ver": await _token_version(rt, m)}
    if sid:
        claims["sid"] = str(sid)
    if akid:
        claims["akid"] = str(akid)
    return await keys.sign(session, rt.settings, claims, ttl=rt.settings.access_token_ttl_seconds, audience=rt.settings.jwt_audience)


async def _issue_tokens(session: AsyncSession, rt: Runtime, user: User, org_id: uuid.UUID, *, family_id: uuid.UUID | None = None,
                        membership: Membership | None = None) -> TokenPair:
    m = membership or await _membership(session, user.id, org_id)
    if m is None:
        raise ForbiddenError("No perteneces a esa organización.")
    family_id = family_id or uuid.uuid4()
    refresh = new_token("rt_")
    session.add(RefreshToken(family_id=family_id, user_id=user.id, organization_id=org_id, token_hash=hash_token(refresh),
                             expires_at=utcnow() + timedelta(seconds=rt.settings.refresh_token_ttl_seconds)))
    user.last_organization_id = org_id
    access = await _access_token(session, rt, m, permissions_for_role(m.role), sid=family_id)
    return TokenPair(access, refresh, rt.settings.access_token_ttl_seconds, org_id)


async def _default_org(session: AsyncSession, user: User, requested: uuid.UUID | None) -> Membership | None:
    """The membership to log in with (one query)."""
    mships = {m.organization_id: m for m in (await session.execute(
        select(Membership).where(Membership.user_id == user.id).order_by(Membership.created_at)
    )).scalars()}
    if requested is not None:
        return mships.get(requested)
    if user.last_organization_id in mships:
        return mships[user.last_organization_id]
    return next(iter(mships.values()), None)


# --- sign-up, e-mail verification ---------------------------------------------------------------

async def _email_token(session, user: User, purpose: str, ttl: timedelta) -> EmailToken:
    row = EmailToken(user_id=user.id, purpose=purpose, token_hash=unusable_hash(), expires_at=utcnow() + ttl)
    session.add(row)
    await session.flush()
    return row


def _mail_limiter(rt: Runtime, scope: str) -> security.Throttle:
    """Requests that send an e-mail (sign-up, password reset): limited per address and per client."""
    s = rt.settings
    return security.Throttle(rt.redis, max_per_account=s.mail_requests_max_per_address, max_per_ip=s.mail_requests_max_per_client,
                             lockout_seconds=s.mail_requests_window_seconds, scope=scope)


async def _count_mail_request(rt: Runtime, scope: str, email: str, ip: str) -> None:
    limiter = _mail_limiter(rt, scope)
    if wait := await limiter.retry_after(email, ip):
        raise _too_many(wait)
    await limiter.failed(email, ip)  # every request counts, not only failures


async def sign_up(rt: Runtime, *, email: str, password: str, full_name: str, organization_name: str, locale: str = "es-MX",
                  ip: str) -> None:
    """Record the sign-up and mail a link to the address; the account is created when the link is
    opened (`complete_sign_up`). An address that already has an account gets a notice instead, so
    the answer (and the work behind it) is the same whether or not the address is taken."""
    email = security.normalize_email(email)
    errors = []
    if problem := email_problem(email):
        errors.append(("email", "INVALID_EMAIL", problem))
    if problem := security.password_problem(password, email):
        errors.append(("password", "WEAK_PASSWORD", problem))
    if not full_name.strip():
        errors.append(("fullName", "REQUIRED", "El nombre es obligatorio."))
    if not organization_name.strip():
        errors.append(("organizationName", "REQUIRED", "El nombre de la organización es obligatorio."))
    if locale not in ("es-MX", "en"):
        errors.append(("locale", "INVALID_LOCALE", "Idioma no soportado (es-MX o en)."))
    if errors:
        raise InputError([UserError(field=["input", f], code=c, message=m) for f, c, m in errors])
    await _count_mail_request(rt, "signup", email, ip)
    password_hash = await security.hash_password(password)
    async with transaction(rt.sessionmaker) as session:
        row = SignUp(email=email, full_name=full_name.strip(), organization_name=organization_name.strip(), locale=locale,
                     password_hash=password_hash, token_hash=unusable_hash(), expires_at=utcnow() + SIGN_UP_TTL)
        session.add(row)
        await session.flush()
        await emit(session, outbox, SignUpRequested(sign_up_id=row.id, email=email, full_name=row.full_name, locale=locale),
                   organization_id=None, actor_id=None, aggregate_id=str(row.id))


async def _create_account(session, *, email: str, full_name: str, organization_name: str, locale: str, password_hash: str) -> tuple[User, Membership]:
    """A user whose address is confirmed, their organization, and their OWNER membership."""
    user = User(email=email, full_name=full_name, password_hash=password_hash, locale=locale, email_verified_at=utcnow())
    org = Organization(name=organization_name)
    session.add_all([user, org])
    await session.flush()
    m = Membership(organization_id=org.id, user_id=user.id, role="OWNER")
    session.add(m)
    await session.flush()
    await emit(session, outbox, UserRegistered(user_id=user.id, email=email, full_name=full_name, locale=locale),
               organization_id=org.id, actor_id=user.id, aggregate_id=str(user.id))
    # The founder is the organization's first member: services projecting roles need it.
    await emit(session, outbox, MemberJoined(user_id=user.id, role="OWNER"), organization_id=org.id,
               actor_id=user.id, aggregate_id=str(user.id))
    return user, m


async def complete_sign_up(rt: Runtime, token: str) -> TokenPair:
    """The mailed sign-up link: the address is confirmed, so the account is created and signed in."""
    taken = InputError.single("EMAIL_TAKEN", "Ya existe una cuenta con ese correo; inicia sesión.", ["token"])
    try:
        async with transaction(rt.sessionmaker) as session:
            row = (await session.execute(select(SignUp).where(SignUp.token_hash == hash_token(token)).with_for_update())).scalar_one_or_none()
            if row is None or row.completed_at is not None or row.expires_at < utcnow():
                raise InputError.single("INVALID_TOKEN", "El enlace no es válido o ya expiró.", ["token"])
            if (await session.execute(select(User.id).where(User.email == row.email))).first():
                raise taken  # only whoever holds the mailbox ever sees this
            row.completed_at = utcnow()
            # Other pending sign-ups for the address are moot now: drop them and their password hashes.
            await session.execute(delete(SignUp).where(SignUp.email == row.email, SignUp.id != row.id))
            user, m = await _create_account(session, email=row.email, full_name=row.full_name, organization_name=row.organization_name,
                                            locale=row.locale, password_hash=row.password_hash)
            row.password_hash = ""  # the account holds it now; a finished sign-up keeps no copy
            return await _issue_tokens(session, rt, user, m.organization_id, membership=m)
    except IntegrityError:
        raise taken from None  # two links for one address opened at once: the unique index decides


# Expired rows are kept this long before the purge deletes them, so a link opened just after it
# expired still gets "expired" rather than racing the delete, and support can look at recent ones.
PURGE_GRACE = timedelta(days=1)


async def purge_expired(rt: Runtime, *, now: datetime | None = None) -> dict[str, int]:
    """Delete sign-ups, e-mail tokens and refresh tokens past their expiry (plus `PURGE_GRACE`).

    Pending sign-ups hold a password hash and e-mail tokens a link's hash: none of it is useful once
    expired, and keeping it forever grows the tables of an open sign-up form without bound. An
    expired refresh token can no longer be presented, so reuse detection does not need it either."""
    cutoff = (now or utcnow()) - PURGE_GRACE
    counts: dict[str, int] = {}
    async with transaction(rt.sessionmaker) as session:
        for name, model in (("sign_ups", SignUp), ("email_tokens", EmailToken), ("refresh_tokens", RefreshToken)):
            result = await session.execute(delete(model).where(model.expires_at < cutoff))
            counts[name] = result.rowcount or 0
    return counts


async def request_email_verification(rt: Runtime, principal: Principal) -> None:
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id)
        if user is None or user.email_verified_at:
            return
        link = await _email_token(session, user, "verify_email", EMAIL_VERIFY_TTL)
        await emit(session, outbox, EmailVerificationRequested(user_id=user.id, email=user.email, full_name=user.full_name,
                                                               locale=user.locale, verification_ref=link.id),
                   organization_id=principal.organization_id, actor_id=user.id, aggregate_id=str(user.id))


async def _consume_email_token(session, token: str, purpose: str, field: list[str]) -> EmailToken:
    row = (await session.execute(
        select(EmailToken).where(EmailToken.token_hash == hash_token(token), EmailToken.purpose == purpose).with_for_update()
    )).scalar_one_or_none()
    if row is None or row.used_at is not None or row.expires_at < utcnow():
        raise InputError.single("INVALID_TOKEN", "El enlace no es válido o ya expiró.", field)
    row.used_at = utcnow()
    return row


async def verify_email(rt: Runtime, token: str) -> User:
    async with transaction(rt.sessionmaker) as session:
        row = await _consume_email_token(session, token, "verify_email", ["token"])
        user = await session.get(User, row.user_id)
        user.email_verified_at = user.email_verified_at or utcnow()
        return user


async def request_password_reset(rt: Runtime, email: str, ip: str) -> None:
    """Known and unknown addresses take the same path: count the request, queue one event. Whether
    an account exists is looked up only when the e-mail is about to be sent (`mail_link`), off the
    request path, so neither the answer nor its timing tells."""
    email = security.normalize_email(email)
    if problem := email_problem(email):
        raise InputError.single("INVALID_EMAIL", problem, ["email"])
    await _count_mail_request(rt, "reset", email, ip)
    async with transaction(rt.sessionmaker) as session:
        request_id = uuid.uuid4()
        await emit(session, outbox, PasswordResetRequested(request_id=request_id, email=email),
                   organization_id=None, actor_id=None, aggregate_id=str(request_id))


async def _void_reset_tokens(session, user_id: uuid.UUID) -> None:
    await session.execute(update(EmailToken).where(EmailToken.user_id == user_id, EmailToken.purpose == "reset_password",
                                                   EmailToken.used_at.is_(None)).values(used_at=utcnow()))


async def reset_password(rt: Runtime, token: str, new_password: str) -> None:
    new_hash = None
    async with transaction(rt.sessionmaker) as session:
        row = await _consume_email_token(session, token, "reset_password", ["input", "token"])
        user = await session.get(User, row.user_id)
        if problem := security.password_problem(new_password, user.email):
            raise InputError.single("WEAK_PASSWORD", problem, "newPassword")
        new_hash = await security.hash_password(new_password)
        user.password_hash, user.password_changed_at = new_hash, utcnow()
        await _revoke_sessions(session, user.id)
        await _void_reset_tokens(session, user.id)  # other reset links sent earlier die with this one
        await emit(session, outbox, PasswordChanged(user_id=user.id, email=user.email), organization_id=user.last_organization_id,
                   actor_id=user.id, aggregate_id=str(user.id))
    await _throttle(rt).succeeded(security.normalize_email(user.email))


# --- log-in, MFA, refresh -------------------------------------------------------------------------

async def log_in(rt: Runtime, *, email: str, password: str, organization_id: uuid.UUID | None, ip: str) -> TokenPair | MfaChallenge:
    email = security.normalize_email(email)
    throttle = _throttle(rt)
    if wait := await throttle.retry_after(email, ip):
        raise _too_many(wait)
    async with transaction(rt.sessionmaker) as session:
        user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
        ok = await security.verify_password(user.password_hash if user else None, password)
        if not ok:
            failed = True
        else:
            failed = False
            chosen = await _default_org(session, user, organization_id)
            if chosen is None:
                raise InputError.single("NOT_A_MEMBER", "No perteneces a esa organización.", "organizationId")
            if user.totp_enabled:
                token = await keys.sign(session, rt.settings, {"sub": str(user.id), "org": str(chosen.organization_id)},
                                        ttl=MFA_CHALLENGE_TTL, audience=MFA_AUDIENCE)
                result = MfaChallenge(token, MFA_CHALLENGE_TTL)
            else:
                result = await _issue_tokens(session, rt, user, chosen.organization_id, membership=chosen)
    if failed:
        await throttle.failed(email, ip)
        raise InputError.single("INVALID_CREDENTIALS", "Correo o contraseña incorrectos.", None)
    if isinstance(result, TokenPair):
        await throttle.succeeded(email)
    return result


async def verify_mfa(rt: Runtime, *, challenge_token: str, code: str, ip: str) -> TokenPair:
    try:
        claims = await rt.verifier.verify(challenge_token, audience=MFA_AUDIENCE)
        user_id, org_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["org"])
    except (InvalidTokenError, KeyError, ValueError):
        raise InputError.single("INVALID_CHALLENGE", "El desafío de verificación no es válido o expiró.", "challengeToken") from None
    throttle = _throttle(rt, "mfa")
    if wait := await throttle.retry_after(str(user_id), ip):
        raise _too_many(wait)
    async with transaction(rt.sessionmaker) as session:
        user = (await session.execute(select(User).where(User.id == user_id).with_for_update())).scalar_one()
        ok = await _check_second_factor(session, rt, user, code)
        if ok:
            # A challenge is single-use: a second verifyMfa with it fails even with a fresh code.
            fresh = await rt.redis.set(f"mfa:used:{claims['jti']}", b"1", nx=True, ex=MFA_CHALLENGE_TTL + 60)
            if not fresh:
                raise InputError.single("INVALID_CHALLENGE", "El desafío de verificación ya fue usado.", "challengeToken")
            result = await _issue_tokens(session, rt, user, org_id)
    if not ok:
        await throttle.failed(str(user_id), ip)
        raise InputError.single("INVALID_MFA_CODE", "El código no es válido.", "code")
    await throttle.succeeded(str(user_id))
    await _throttle(rt).succeeded(user.email)
    return result


async def _check_second_factor(session, rt: Runtime, user: User, code: str) -> bool:
    """A current TOTP code, or an unused recovery code (which is then spent)."""
    if not user.totp_enabled or not user.totp_secret_sealed:
        return False
    secret = unseal(user.totp_secret_sealed, context=f"auth.totp:{user.id}", settings=rt.settings).decode()
    step = security.totp_step(secret, code, after_step=user.totp_last_step)
    if step is not None:
        user.totp_last_step = step
        return True
    row = (await session.execute(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.code_hash == security.hash_recovery_code(code),
                                   RecoveryCode.used_at.is_(None)).with_for_update()
    )).scalar_one_or_none()
    if row is None:
        return False
    row.used_at = utcnow()
    return True


async def refresh_tokens(rt: Runtime, refresh_token: str) -> TokenPair:
    reused = False
    async with transaction(rt.sessionmaker) as session:
        row = (await session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token)).with_for_update()
        )).scalar_one_or_none()
        if row is None or row.revoked_at is not None or row.expires_at < utcnow():
            raise InputError.single("INVALID_REFRESH_TOKEN", "La sesión expiró. Inicia sesión de nuevo.", ["refreshToken"])
        if row.used_at is not None:
            # Reuse of a rotated token: someone else holds a copy. Kill this family only.
            await session.execute(update(RefreshToken).where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                                  .values(revoked_at=utcnow()))
            reused = True
        else:
            row.used_at = utcnow()
            user = await session.get(User, row.user_id)
            try:
                return await _issue_tokens(session, rt, user, row.organization_id, family_id=row.family_id)
            except ForbiddenError:
                raise InputError.single("INVALID_REFRESH_TOKEN", "Ya no perteneces a esa organización.", ["refreshToken"]) from None
    assert reused
    raise InputError.single("REFRESH_TOKEN_REUSED", "La sesión fue cerrada por seguridad. Inicia sesión de nuevo.", ["refreshToken"])


async def log_out(rt: Runtime, refresh_token: str) -> None:
    async with transaction(rt.sessionmaker) as session:
        row = (await session.execute(select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token)))).scalar_one_or_none()
        if row is not None:
            await session.execute(update(RefreshToken).where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
                                  .values(revoked_at=utcnow()))


async def _revoke_sessions(session, user_id: uuid.UUID, *, except_family: uuid.UUID | None = None) -> None:
    cond = [RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)]
    if except_family is not None:
        cond.append(RefreshToken.family_id != except_family)
    await session.execute(update(RefreshToken).where(*cond).values(revoked_at=utcnow()))


# --- TOTP enrolment -------------------------------------------------------------------------------

def _human(principal: Principal) -> None:
    if principal.api_key_id is not None:
        raise ForbiddenError("Las llaves de API no pueden administrar credenciales de usuario.")


async def enroll_totp(rt: Runtime, principal: Principal) -> TotpEnrollment:
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id, with_for_update=True)
        if user.totp_enabled:
            raise InputError.single("MFA_ALREADY_ENABLED", "La verificación en dos pasos ya está activa.", None)
        secret = security.new_totp_secret()
        user.totp_secret_sealed = seal(secret.encode(), context=f"auth.totp:{user.id}", settings=rt.settings)
        user.totp_last_step = None
        uri = security.totp_uri(secret, user.email)
        return TotpEnrollment(secret, uri, security.qr_svg(uri))


async def confirm_totp(rt: Runtime, principal: Principal, code: str) -> list[str]:
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id, with_for_update=True)
        if user.totp_enabled:
            raise InputError.single("MFA_ALREADY_ENABLED", "La verificación en dos pasos ya está activa.", None)
        if not user.totp_secret_sealed:
            raise InputError.single("MFA_NOT_ENROLLED", "Primero inicia la configuración (enrollTotp).", None)
        secret = unseal(user.totp_secret_sealed, context=f"auth.totp:{user.id}", settings=rt.settings).decode()
        step = security.totp_step(secret, code, after_step=None)
        if step is None:
            raise InputError.single("INVALID_MFA_CODE", "El código no es válido.", ["code"])
        user.totp_enabled, user.totp_last_step = True, step
        codes = security.new_recovery_codes()
        await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        session.add_all([RecoveryCode(user_id=user.id, code_hash=security.hash_recovery_code(c)) for c in codes])
        await emit(session, outbox, MfaEnabled(user_id=user.id, email=user.email), organization_id=principal.organization_id,
                   actor_id=user.id, aggregate_id=str(user.id))
        return codes


async def disable_totp(rt: Runtime, principal: Principal, code: str) -> None:
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id, with_for_update=True)
        if not user.totp_enabled:
            raise InputError.single("MFA_NOT_ENABLED", "La verificación en dos pasos no está activa.", None)
        if not await _check_second_factor(session, rt, user, code):
            raise InputError.single("INVALID_MFA_CODE", "El código no es válido.", ["code"])
        user.totp_enabled, user.totp_secret_sealed, user.totp_last_step = False, None, None
        await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        await emit(session, outbox, MfaDisabled(user_id=user.id, email=user.email), organization_id=principal.organization_id,
                   actor_id=user.id, aggregate_id=str(user.id))


# --- profile ------------------------------------------------------------------------------------

async def update_profile(rt: Runtime, principal: Principal, *, full_name: str | None, locale: str | None) -> User:
    _human(principal)
    if full_name is not None and not full_name.strip():
        raise InputError.single("REQUIRED", "El nombre es obligatorio.", "fullName")
    if locale is not None and locale not in ("es-MX", "en"):
        raise InputError.single("INVALID_LOCALE", "Idioma no soportado (es-MX o en).", "locale")
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id)
        if full_name is not None:
            user.full_name = full_name.strip()
        if locale is not None:
            user.locale = locale
        await emit(session, outbox, ProfileUpdated(user_id=user.id, email=user.email, full_name=user.full_name, locale=user.locale),
                   organization_id=principal.organization_id, actor_id=user.id, aggregate_id=str(user.id))
        return user


async def change_password(rt: Runtime, principal: Principal, *, current_password: str, new_password: str) -> None:
    """Changing the password signs out every other session (refresh-token families)."""
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id, with_for_update=True)
        if not await security.verify_password(user.password_hash, current_password):
            raise InputError.single("INVALID_CREDENTIALS", "La contraseña actual no es correcta.", "currentPassword")
        if problem := security.password_problem(new_password, user.email):
            raise InputError.single("WEAK_PASSWORD", problem, "newPassword")
        user.password_hash = await security.hash_password(new_password)
        user.password_changed_at = utcnow()
        sid = principal.claims.get("sid")
        await _revoke_sessions(session, user.id, except_family=uuid.UUID(sid) if sid else None)
        await emit(session, outbox, PasswordChanged(user_id=user.id, email=user.email), organization_id=principal.organization_id,
                   actor_id=user.id, aggregate_id=str(user.id))


# --- organizations and members ------------------------------------------------------------------

async def switch_organization(rt: Runtime, principal: Principal, organization_id: uuid.UUID) -> TokenPair:
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id)
        m = await _membership(session, user.id, organization_id)
        if m is None:
            raise InputError.single("NOT_A_MEMBER", "No perteneces a esa organización.", ["organizationId"])
        return await _issue_tokens(session, rt, user, organization_id, membership=m)


def _check_role(role: str, field: str = "role") -> None:
    if role not in ROLES:
        raise InputError.single("INVALID_ROLE", f"Rol desconocido. Usa uno de: {', '.join(ROLES)}.", field)


@dataclass
class _Acting:
    """Who is acting, as the database says right now (never the token's `perms`)."""
    role: str
    permissions: frozenset[str]
    rows: list[Membership]  # every membership row locked for this change, in id order

    def member(self, user_id: uuid.UUID) -> Membership | None:
        return next((m for m in self.rows if m.user_id == user_id), None)

    @property
    def owners(self) -> int:
        return sum(1 for m in self.rows if m.role == "OWNER")


async def _authorize(session, principal: Principal, permission: str, *, also: tuple[uuid.UUID, ...] = (),
                     owners: bool = False) -> _Acting:
    """Lock the caller's membership (plus `also` and, when asked, every OWNER) in one statement,
    in id order so concurrent changes cannot deadlock, and decide from those rows. A demoted or
    removed member's still-unexpired token gets nowhere here."""
    cond = Membership.user_id.in_([principal.user_id, *also])
    if owners:
        cond = or_(cond, Membership.role == "OWNER")
    rows = list((await session.execute(
        select(Membership).where(Membership.organization_id == principal.organization_id, cond)
        .order_by(Membership.id).with_for_update()
    )).scalars())
    me = next((m for m in rows if m.user_id == principal.user_id), None)
    if me is None:
        raise ForbiddenError("Ya no perteneces a esta organización.")
    perms = frozenset(permissions_for_role(me.role))
    if principal.api_key_id is not None:
        key = await session.get(ApiKey, principal.api_key_id)
        if key is None or key.revoked_at is not None or key.organization_id != principal.organization_id:
            raise ForbiddenError("La llave de API fue revocada.")
        perms &= frozenset(key.permissions)
    if permission not in perms:
        raise ForbiddenError(extensions={"missingPermissions": [permission]})
    return _Acting(me.role, perms, rows)


async def _void_invitations_of(session, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Invitations a member sent stop working when they can no longer invite."""
    await session.execute(update(Invitation).where(
        Invitation.organization_id == org_id, Invitation.invited_by == user_id,
        Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None)).values(revoked_at=utcnow()))


async def invite_member(rt: Runtime, principal: Principal, *, email: str, role: str) -> Invitation:
    email = security.normalize_email(email)
    if problem := email_problem(email):
        raise InputError.single("INVALID_EMAIL", problem, ["email"])
    _check_role(role, "role")
    async with transaction(rt.sessionmaker) as session:
        acting = await _authorize(session, principal, ORG_MANAGE)
        if role == "OWNER" and acting.role != "OWNER":
            raise ForbiddenError("Solo un propietario puede invitar a otro propietario.")
        already = (await session.execute(
            select(Membership.id).join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == principal.organization_id, User.email == email)
        )).first()
        if already:
            raise InputError.single("ALREADY_MEMBER", "Esa persona ya es miembro de la organización.", ["email"])
        # The link's token is minted only when the e-mail is sent (mail_link): nothing stored or
        # queued before then can be turned into a working link.
        inv = Invitation(organization_id=principal.organization_id, email=email, role=role, token_hash=unusable_hash(),
                         invited_by=principal.user_id, expires_at=utcnow() + INVITATION_TTL)
        session.add(inv)
        await session.flush()
        org = await session.get(Organization, principal.organization_id)
        inviter = await session.get(User, principal.user_id)
        await emit(session, outbox, MemberInvited(invitation_id=inv.id, email=email, role=role, organization_name=org.name,
                                                  invited_by_name=inviter.full_name),
                   organization_id=org.id, actor_id=principal.user_id, aggregate_id=str(inv.id))
        return inv


async def revoke_invitation(rt: Runtime, principal: Principal, invitation_id: uuid.UUID) -> Invitation:
    async with transaction(rt.sessionmaker) as session:
        await _authorize(session, principal, ORG_MANAGE)
        inv = (await session.execute(select(Invitation).where(
            Invitation.id == invitation_id, Invitation.organization_id == principal.organization_id).with_for_update()
        )).scalar_one_or_none()
        if inv is None:
            raise InputError.single("NOT_FOUND", "La invitación no existe.", ["id"])
        if inv.accepted_at is not None:
            raise InputError.single("INVITATION_ACCEPTED", "La invitación ya fue aceptada; quita al miembro si es necesario.", ["id"])
        inv.revoked_at = inv.revoked_at or utcnow()
        return inv


async def accept_invitation(rt: Runtime, principal: Principal, token: str) -> TokenPair:
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        inv = (await session.execute(select(Invitation).where(Invitation.token_hash == hash_token(token)).with_for_update())).scalar_one_or_none()
        if inv is None or inv.accepted_at is not None or inv.revoked_at is not None or inv.expires_at < utcnow():
            raise InputError.single("INVALID_INVITATION", "La invitación no es válida o ya expiró.", ["token"])
        user = await session.get(User, principal.user_id)
        if user.email != inv.email:
            raise InputError.single("INVITATION_EMAIL_MISMATCH", "La invitación es para otro correo.", ["token"])
        inv.accepted_at = utcnow()
        m = await _membership(session, user.id, inv.organization_id)
        if m is None:
            m = Membership(organization_id=inv.organization_id, user_id=user.id, role=inv.role)
            session.add(m)
            await session.flush()
            await emit(session, outbox, MemberJoined(user_id=user.id, role=inv.role), organization_id=inv.organization_id,
                       actor_id=user.id, aggregate_id=str(user.id))
        return await _issue_tokens(session, rt, user, inv.organization_id, membership=m)


def _target(acting: _Acting, user_id: uuid.UUID) -> Membership:
    m = acting.member(user_id)
    if m is None:
        raise InputError.single("NOT_A_MEMBER", "Esa persona no es miembro de la organización.", ["userId"])
    return m


async def change_member_role(rt: Runtime, principal: Principal, *, user_id: uuid.UUID, role: str) -> Membership:
    _check_role(role, "role")
    async with transaction(rt.sessionmaker) as session:
        acting = await _authorize(session, principal, ORG_MANAGE, also=(user_id,), owners=True)
        m = _target(acting, user_id)
        if "OWNER" in (role, m.role) and acting.role != "OWNER":
            raise ForbiddenError("Solo un propietario puede otorgar o quitar el rol de propietario.")
        if m.role == "OWNER" and role != "OWNER" and acting.owners <= 1:
            raise InputError.single("LAST_OWNER", "La organización debe conservar al menos un propietario.", ["role"])
        old, m.role = m.role, role
        if old != role:
            if ORG_MANAGE not in permissions_for_role(role):
                await _void_invitations_of(session, principal.organization_id, user_id)
            await emit(session, outbox, MemberRoleChanged(user_id=user_id, old_role=old, new_role=role),
                       organization_id=principal.organization_id, actor_id=principal.user_id, aggregate_id=str(user_id))
            await _invalidate_tokens(rt, m)
        return m


async def remove_member(rt: Runtime, principal: Principal, *, user_id: uuid.UUID) -> None:
    async with transaction(rt.sessionmaker) as session:
        acting = await _authorize(session, principal, ORG_MANAGE, also=(user_id,), owners=True)
        m = _target(acting, user_id)
        if m.role == "OWNER" and acting.role != "OWNER":
            raise ForbiddenError("Solo un propietario puede quitar a otro propietario.")
        if m.role == "OWNER" and acting.owners <= 1:
            raise InputError.single("LAST_OWNER", "La organización debe conservar al menos un propietario.", ["userId"])
        await session.delete(m)
        # The removed member's sessions in this organization end now, not when the token expires.
        await session.execute(update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.organization_id == principal.organization_id,
                                                         RefreshToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
        await _void_invitations_of(session, principal.organization_id, user_id)
        await emit(session, outbox, MemberRemoved(user_id=user_id), organization_id=principal.organization_id,
                   actor_id=principal.user_id, aggregate_id=str(user_id))
        await _invalidate_tokens(rt, m)


# --- API keys -----------------------------------------------------------------------------------

async def create_api_key(rt: Runtime, principal: Principal, *, name: str, permissions: list[str]) -> tuple[ApiKey, str]:
    _human(principal)
    if not name.strip():
        raise InputError.single("REQUIRED", "El nombre es obligatorio.", ["name"])
    unknown = sorted(set(permissions) - ALL_PERMISSIONS)
    if unknown or not permissions:
        raise InputError.single("INVALID_PERMISSION", f"Permisos desconocidos o vacíos: {', '.join(unknown) or '—'}.", ["permissions"])
    key = new_token(API_KEY_PREFIX, 32)
    async with transaction(rt.sessionmaker) as session:
        acting = await _authorize(session, principal, ORG_MANAGE)
        beyond = sorted(set(permissions) - acting.permissions)
        if beyond:
            raise InputError.single("PERMISSION_NOT_HELD", f"No puedes delegar permisos que no tienes: {', '.join(beyond)}.", ["permissions"])
        row = ApiKey(organization_id=principal.organization_id, created_by=principal.user_id, name=name.strip(),
                     prefix=key[:API_KEY_SHOWN], key_hash=hash_token(key), permissions=sorted(set(permissions)))
        session.add(row)
        await session.flush()
        await emit(session, outbox, ApiKeyCreated(api_key_id=row.id, name=row.name, permissions=row.permissions),
                   organization_id=principal.organization_id, actor_id=principal.user_id, aggregate_id=str(row.id))
        return row, key


async def revoke_api_key(rt: Runtime, principal: Principal, api_key_id: uuid.UUID) -> ApiKey:
    async with transaction(rt.sessionmaker) as session:
        await _authorize(session, principal, ORG_MANAGE)
        row = (await session.execute(select(ApiKey).where(ApiKey.id == api_key_id, ApiKey.organization_id == principal.organization_id)
                                     .with_for_update())).scalar_one_or_none()
        if row is None:
            raise InputError.single("NOT_FOUND", "La llave de API no existe.", ["id"])
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            await emit(session, outbox, ApiKeyRevoked(api_key_id=row.id), organization_id=principal.organization_id,
                       actor_id=principal.user_id, aggregate_id=str(row.id))
        return row


async def exchange_api_key(rt: Runtime, key: str, ip: str) -> tuple[str, int]:
    """A short-lived access token carrying the key's permissions, narrowed to those its creator
    still holds (a demoted creator's keys lose what the creator lost).

    Failures count per presented key prefix and per client address, so bogus keys from one client
    block neither other clients nor other organizations' keys."""
    key = key.strip()
    throttle = _throttle(rt, "apikey")
    shown = key[:API_KEY_SHOWN]
    if wait := await throttle.retry_after(shown, ip):
        raise _too_many(wait)
    async with transaction(rt.sessionmaker) as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_token(key)))).scalar_one_or_none()
        m = await _membership(session, row.created_by, row.organization_id) if row is not None and row.revoked_at is None else None
        if m is not None:
            perms = sorted(set(row.permissions) & set(permissions_for_role(m.role)))
            row.last_used_at = utcnow()
            token = await _access_token(session, rt, m, perms, akid=row.id)
    if m is None:
        await throttle.failed(shown, ip)
        raise InputError.single("INVALID_API_KEY", "La llave de API no es válida o fue revocada.", ["key"])
    return token, rt.settings.access_token_ttl_seconds


# --- reads --------------------------------------------------------------------------------------

async def users_by_ids(session: AsyncSession, ids: list[uuid.UUID], *, visible_to: uuid.UUID | None) -> dict[uuid.UUID, User]:
    """Users visible to members of `visible_to` (themselves members of it); one query per batch."""
    stmt = select(User).where(User.id.in_(ids))
    if visible_to is not None:
        stmt = stmt.join(Membership, and_(Membership.user_id == User.id, Membership.organization_id == visible_to))
    return {u.id: u for u in (await session.execute(stmt)).scalars()}


async def organizations_by_ids(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Organization]:
    return {o.id: o for o in (await session.execute(select(Organization).where(Organization.id.in_(ids)))).scalars()}


async def memberships_of_users(session: AsyncSession, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Membership]]:
    out: dict[uuid.UUID, list[Membership]] = {u: [] for u in user_ids}
    for m in (await session.execute(select(Membership).where(Membership.user_id.in_(user_ids)).order_by(Membership.created_at))).scalars():
        out[m.user_id].append(m)
    return out


async def members(session: AsyncSession, org_id: uuid.UUID, *, after: list | None, limit: int) -> list[Membership]:
    stmt = select(Membership).where(Membership.organization_id == org_id)
    if after:
        stmt = stmt.where(or_(Membership.created_at > after[0], and_(Membership.created_at == after[0], Membership.id > after[1])))
    return list((await session.execute(stmt.order_by(Membership.created_at, Membership.id).limit(limit))).scalars())


async def api_keys(session: AsyncSession, org_id: uuid.UUID) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).where(ApiKey.organization_id == org_id).order_by(ApiKey.created_at.desc()))).scalars())


async def pending_invitations(session: AsyncSession, org_id: uuid.UUID) -> list[Invitation]:
    return list((await session.execute(
        select(Invitation).where(Invitation.organization_id == org_id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None),
                                 Invitation.expires_at > func.now())
        .order_by(Invitation.created_at.desc())
    )).scalars())


async def ensure_demo(rt: Runtime, *, email: str, password: str) -> bool:
    """Seed the demo organization and user on first start; False when it already exists."""
    password_hash = await security.hash_password(password)
    try:
        async with transaction(rt.sessionmaker) as session:
            if (await session.execute(select(User.id).where(User.email == email))).first():
                return False
            await _create_account(session, email=email, full_name="Usuario Demo", organization_name="Escuela Kemper Urgate (demo)",
                                  locale="es-MX", password_hash=password_hash)
    except IntegrityError:
        return False  # another instance seeded it at the same moment
    return True
