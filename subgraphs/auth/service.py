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
    PasswordResetRequested, UserRegistered,
)
from shared.outbox import emit
from shared.permissions import ALL_PERMISSIONS, ROLES, permissions_for_role
from shared.runtime import Runtime
from shared.validation import email_problem
from shared.tokens import InvalidTokenError, Principal
from subgraphs.auth import keys, security
from subgraphs.auth.models import (
    ApiKey, EmailToken, Invitation, Membership, Organization, RecoveryCode, RefreshToken, User, outbox,
)

MFA_AUDIENCE = "facturacion-mfa"
MFA_CHALLENGE_TTL = 300
EMAIL_VERIFY_TTL = timedelta(days=2)
PASSWORD_RESET_TTL = timedelta(hours=1)
INVITATION_TTL = timedelta(days=7)
API_KEY_TOKEN_TTL = 900
API_KEY_PREFIX = "fk_"


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

async def _role(session: AsyncSession, user_id: uuid.UUID, org_id: uuid.UUID) -> str | None:
    return (await session.execute(
        select(Membership.role).where(Membership.user_id == user_id, Membership.organization_id == org_id)
    )).scalar_one_or_none()


async def _access_token(session, rt: Runtime, user_id, org_id, perms: list[str], *, sid=None, akid=None) -> str:
    claims = {"sub": str(user_id), "org": str(org_id), "perms": sorted(perms)}
    if sid:
        claims["sid"] = str(sid)
    if akid:
        claims["akid"] = str(akid)
    return await keys.sign(session, rt.settings, claims, ttl=rt.settings.access_token_ttl_seconds, audience=rt.settings.jwt_audience)


async def _issue_tokens(session: AsyncSession, rt: Runtime, user: User, org_id: uuid.UUID, *, family_id: uuid.UUID | None = None,
                        role: str | None = None) -> TokenPair:
    role = role or await _role(session, user.id, org_id)
    if role is None:
        raise ForbiddenError("No perteneces a esa organización.")
    family_id = family_id or uuid.uuid4()
    refresh = new_token("rt_")
    session.add(RefreshToken(family_id=family_id, user_id=user.id, organization_id=org_id, token_hash=hash_token(refresh),
                             expires_at=utcnow() + timedelta(seconds=rt.settings.refresh_token_ttl_seconds)))
    user.last_organization_id = org_id
    access = await _access_token(session, rt, user.id, org_id, permissions_for_role(role), sid=family_id)
    return TokenPair(access, refresh, rt.settings.access_token_ttl_seconds, org_id)


async def _default_org(session: AsyncSession, user: User, requested: uuid.UUID | None) -> tuple[uuid.UUID, str] | None:
    """The organization to log into and the user's role there (one query for both)."""
    roles = dict((await session.execute(
        select(Membership.organization_id, Membership.role).where(Membership.user_id == user.id).order_by(Membership.created_at)
    )).all())
    if requested is not None:
        chosen = requested if requested in roles else None
    elif user.last_organization_id in roles:
        chosen = user.last_organization_id
    else:
        chosen = next(iter(roles), None)
    return (chosen, roles[chosen]) if chosen is not None else None


# --- sign-up, e-mail verification ---------------------------------------------------------------

async def _email_link(session, rt: Runtime, user: User, purpose: str, ttl: timedelta) -> str:
    token = new_token()
    session.add(EmailToken(user_id=user.id, purpose=purpose, token_hash=hash_token(token), expires_at=utcnow() + ttl))
    path = "verificar-correo" if purpose == "verify_email" else "restablecer-contrasena"
    return f"{rt.settings.app_base_url}/{path}?token={token}"


async def sign_up(rt: Runtime, *, email: str, password: str, full_name: str, organization_name: str, locale: str = "es-MX") -> TokenPair:
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
    password_hash = await security.hash_password(password)
    try:
        async with transaction(rt.sessionmaker) as session:
            user = User(email=email, full_name=full_name.strip(), password_hash=password_hash, locale=locale)
            org = Organization(name=organization_name.strip())
            session.add_all([user, org])
            await session.flush()
            session.add(Membership(organization_id=org.id, user_id=user.id, role="OWNER"))
            await session.flush()
            link = await _email_link(session, rt, user, "verify_email", EMAIL_VERIFY_TTL)
            await emit(session, outbox, UserRegistered(user_id=user.id, email=email, full_name=user.full_name, locale=locale,
                                                       verification_url=link), organization_id=org.id, actor_id=user.id, aggregate_id=str(user.id))
            # The founder is the organization's first member: services projecting roles need it.
            await emit(session, outbox, MemberJoined(user_id=user.id, role="OWNER"), organization_id=org.id,
                       actor_id=user.id, aggregate_id=str(user.id))
            return await _issue_tokens(session, rt, user, org.id)
    except IntegrityError:
        # The unique index is the source of truth (two concurrent sign-ups with one e-mail).
        raise InputError.single("EMAIL_TAKEN", "Ya existe una cuenta con ese correo.", "email") from None


async def request_email_verification(rt: Runtime, principal: Principal) -> None:
    async with transaction(rt.sessionmaker) as session:
        user = await session.get(User, principal.user_id)
        if user is None or user.email_verified_at:
            return
        link = await _email_link(session, rt, user, "verify_email", EMAIL_VERIFY_TTL)
        await emit(session, outbox, EmailVerificationRequested(user_id=user.id, email=user.email, full_name=user.full_name,
                                                               locale=user.locale, verification_url=link),
                   organization_id=principal.organization_id, actor_id=user.id, aggregate_id=str(user.id))


async def _consume_email_token(session, token: str, purpose: str) -> EmailToken:
    row = (await session.execute(
        select(EmailToken).where(EmailToken.token_hash == hash_token(token), EmailToken.purpose == purpose).with_for_update()
    )).scalar_one_or_none()
    if row is None or row.used_at is not None or row.expires_at < utcnow():
        raise InputError.single("INVALID_TOKEN", "El enlace no es válido o ya expiró.", "token")
    row.used_at = utcnow()
    return row


async def verify_email(rt: Runtime, token: str) -> User:
    async with transaction(rt.sessionmaker) as session:
        row = await _consume_email_token(session, token, "verify_email")
        user = await session.get(User, row.user_id)
        user.email_verified_at = user.email_verified_at or utcnow()
        return user


async def request_password_reset(rt: Runtime, email: str) -> None:
    """Always 'succeeds': the answer must not tell whether the e-mail has an account."""
    email = security.normalize_email(email)
    async with transaction(rt.sessionmaker) as session:
        user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
        if user is None:
            return
        link = await _email_link(session, rt, user, "reset_password", PASSWORD_RESET_TTL)
        await emit(session, outbox, PasswordResetRequested(user_id=user.id, email=user.email, full_name=user.full_name,
                                                           locale=user.locale, reset_url=link),
                   organization_id=user.last_organization_id, actor_id=user.id, aggregate_id=str(user.id))


async def reset_password(rt: Runtime, token: str, new_password: str) -> None:
    new_hash = None
    async with transaction(rt.sessionmaker) as session:
        row = await _consume_email_token(session, token, "reset_password")
        user = await session.get(User, row.user_id)
        if problem := security.password_problem(new_password, user.email):
            raise InputError.single("WEAK_PASSWORD", problem, "newPassword")
        new_hash = await security.hash_password(new_password)
        user.password_hash, user.password_changed_at = new_hash, utcnow()
        await _revoke_sessions(session, user.id)
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
            org_id, role = chosen
            if user.totp_enabled:
                token = await keys.sign(session, rt.settings, {"sub": str(user.id), "org": str(org_id)},
                                        ttl=MFA_CHALLENGE_TTL, audience=MFA_AUDIENCE)
                result = MfaChallenge(token, MFA_CHALLENGE_TTL)
            else:
                result = await _issue_tokens(session, rt, user, org_id, role=role)
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
            raise InputError.single("INVALID_REFRESH_TOKEN", "La sesión expiró. Inicia sesión de nuevo.", "refreshToken")
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
                raise InputError.single("INVALID_REFRESH_TOKEN", "Ya no perteneces a esa organización.", "refreshToken") from None
    assert reused
    raise InputError.single("REFRESH_TOKEN_REUSED", "La sesión fue cerrada por seguridad. Inicia sesión de nuevo.", "refreshToken")


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
            raise InputError.single("INVALID_MFA_CODE", "El código no es válido.", "code")
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
            raise InputError.single("INVALID_MFA_CODE", "El código no es válido.", "code")
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
        if await _role(session, user.id, organization_id) is None:
            raise InputError.single("NOT_A_MEMBER", "No perteneces a esa organización.", "organizationId")
        return await _issue_tokens(session, rt, user, organization_id)


def _check_role(role: str, field: str = "role") -> None:
    if role not in ROLES:
        raise InputError.single("INVALID_ROLE", f"Rol desconocido. Usa uno de: {', '.join(ROLES)}.", field)


async def invite_member(rt: Runtime, principal: Principal, *, email: str, role: str) -> tuple[Invitation, str]:
    email = security.normalize_email(email)
    if problem := email_problem(email):
        raise InputError.single("INVALID_EMAIL", problem, "email")
    _check_role(role)
    async with transaction(rt.sessionmaker) as session:
        my_role = await _role(session, principal.user_id, principal.organization_id)
        if role == "OWNER" and my_role != "OWNER":
            raise ForbiddenError("Solo un propietario puede invitar a otro propietario.")
        already = (await session.execute(
            select(Membership.id).join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == principal.organization_id, User.email == email)
        )).first()
        if already:
            raise InputError.single("ALREADY_MEMBER", "Esa persona ya es miembro de la organización.", "email")
        token = new_token("inv_")
        inv = Invitation(organization_id=principal.organization_id, email=email, role=role, token_hash=hash_token(token),
                         invited_by=principal.user_id, expires_at=utcnow() + INVITATION_TTL)
        session.add(inv)
        await session.flush()
        org = await session.get(Organization, principal.organization_id)
        inviter = await session.get(User, principal.user_id)
        await emit(session, outbox, MemberInvited(invitation_id=inv.id, email=email, role=role, organization_name=org.name,
                                                  invited_by_name=inviter.full_name,
                                                  accept_url=f"{rt.settings.app_base_url}/invitacion?token={token}"),
                   organization_id=org.id, actor_id=principal.user_id, aggregate_id=str(inv.id))
        return inv, token


async def accept_invitation(rt: Runtime, principal: Principal, token: str) -> TokenPair:
    _human(principal)
    async with transaction(rt.sessionmaker) as session:
        inv = (await session.execute(select(Invitation).where(Invitation.token_hash == hash_token(token)).with_for_update())).scalar_one_or_none()
        if inv is None or inv.accepted_at is not None or inv.expires_at < utcnow():
            raise InputError.single("INVALID_INVITATION", "La invitación no es válida o ya expiró.", "token")
        user = await session.get(User, principal.user_id)
        if user.email != inv.email:
            raise InputError.single("INVITATION_EMAIL_MISMATCH", "La invitación es para otro correo.", "token")
        inv.accepted_at = utcnow()
        if await _role(session, user.id, inv.organization_id) is None:
            session.add(Membership(organization_id=inv.organization_id, user_id=user.id, role=inv.role))
            await session.flush()
            await emit(session, outbox, MemberJoined(user_id=user.id, role=inv.role), organization_id=inv.organization_id,
                       actor_id=user.id, aggregate_id=str(user.id))
        return await _issue_tokens(session, rt, user, inv.organization_id)


async def _membership_for_update(session, org_id, user_id) -> Membership:
    m = (await session.execute(select(Membership).where(Membership.organization_id == org_id, Membership.user_id == user_id)
                               .with_for_update())).scalar_one_or_none()
    if m is None:
        raise InputError.single("NOT_A_MEMBER", "Esa persona no es miembro de la organización.", "userId")
    return m


async def _owners(session, org_id) -> int:
    # Lock the owner rows so two concurrent demotions cannot leave an organization ownerless.
    rows = (await session.execute(select(Membership.id).where(Membership.organization_id == org_id, Membership.role == "OWNER")
                                  .with_for_update())).all()
    return len(rows)


async def change_member_role(rt: Runtime, principal: Principal, *, user_id: uuid.UUID, role: str) -> Membership:
    _check_role(role)
    async with transaction(rt.sessionmaker) as session:
        owners = await _owners(session, principal.organization_id)
        my_role = await _role(session, principal.user_id, principal.organization_id)
        m = await _membership_for_update(session, principal.organization_id, user_id)
        if "OWNER" in (role, m.role) and my_role != "OWNER":
            raise ForbiddenError("Solo un propietario puede otorgar o quitar el rol de propietario.")
        if m.role == "OWNER" and role != "OWNER" and owners <= 1:
            raise InputError.single("LAST_OWNER", "La organización debe conservar al menos un propietario.", "role")
        old, m.role = m.role, role
        if old != role:
            await emit(session, outbox, MemberRoleChanged(user_id=user_id, old_role=old, new_role=role),
                       organization_id=principal.organization_id, actor_id=principal.user_id, aggregate_id=str(user_id))
        return m


async def remove_member(rt: Runtime, principal: Principal, *, user_id: uuid.UUID) -> None:
    async with transaction(rt.sessionmaker) as session:
        owners = await _owners(session, principal.organization_id)
        my_role = await _role(session, principal.user_id, principal.organization_id)
        m = await _membership_for_update(session, principal.organization_id, user_id)
        if m.role == "OWNER" and my_role != "OWNER":
            raise ForbiddenError("Solo un propietario puede quitar a otro propietario.")
        if m.role == "OWNER" and owners <= 1:
            raise InputError.single("LAST_OWNER", "La organización debe conservar al menos un propietario.", "userId")
        await session.delete(m)
        # The removed member's sessions in this organization end now, not when the token expires.
        await session.execute(update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.organization_id == principal.organization_id,
                                                         RefreshToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
        await emit(session, outbox, MemberRemoved(user_id=user_id), organization_id=principal.organization_id,
                   actor_id=principal.user_id, aggregate_id=str(user_id))


# --- API keys -----------------------------------------------------------------------------------

async def create_api_key(rt: Runtime, principal: Principal, *, name: str, permissions: list[str]) -> tuple[ApiKey, str]:
    _human(principal)
    if not name.strip():
        raise InputError.single("REQUIRED", "El nombre es obligatorio.", "name")
    unknown = sorted(set(permissions) - ALL_PERMISSIONS)
    if unknown or not permissions:
        raise InputError.single("INVALID_PERMISSION", f"Permisos desconocidos o vacíos: {', '.join(unknown) or '—'}.", "permissions")
    beyond = sorted(set(permissions) - principal.permissions)
    if beyond:
        raise InputError.single("PERMISSION_NOT_HELD", f"No puedes delegar permisos que no tienes: {', '.join(beyond)}.", "permissions")
    key = new_token(API_KEY_PREFIX, 32)
    async with transaction(rt.sessionmaker) as session:
        row = ApiKey(organization_id=principal.organization_id, created_by=principal.user_id, name=name.strip(),
                     prefix=key[:10], key_hash=hash_token(key), permissions=sorted(set(permissions)))
        session.add(row)
        await session.flush()
        await emit(session, outbox, ApiKeyCreated(api_key_id=row.id, name=row.name, permissions=row.permissions),
                   organization_id=principal.organization_id, actor_id=principal.user_id, aggregate_id=str(row.id))
        return row, key


async def revoke_api_key(rt: Runtime, principal: Principal, api_key_id: uuid.UUID) -> ApiKey:
    async with transaction(rt.sessionmaker) as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.id == api_key_id, ApiKey.organization_id == principal.organization_id))).scalar_one_or_none()
        if row is None:
            raise InputError.single("NOT_FOUND", "La llave de API no existe.", "id")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            await emit(session, outbox, ApiKeyRevoked(api_key_id=row.id), organization_id=principal.organization_id,
                       actor_id=principal.user_id, aggregate_id=str(row.id))
        return row


async def exchange_api_key(rt: Runtime, key: str, ip: str) -> tuple[str, int]:
    """A short-lived access token carrying the key's permissions, narrowed to those its creator
    still holds (a demoted creator's keys lose what the creator lost)."""
    throttle = _throttle(rt, "apikey")
    if wait := await throttle.retry_after("apikey", ip):
        raise _too_many(wait)
    async with transaction(rt.sessionmaker) as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_token(key.strip())))).scalar_one_or_none()
        role = await _role(session, row.created_by, row.organization_id) if row is not None and row.revoked_at is None else None
        if role is not None:
            perms = sorted(set(row.permissions) & set(permissions_for_role(role)))
            row.last_used_at = utcnow()
            token = await _access_token(session, rt, row.created_by, row.organization_id, perms, akid=row.id)
    if role is None:
        await throttle.failed("apikey", ip)
        raise InputError.single("INVALID_API_KEY", "La llave de API no es válida o fue revocada.", "key")
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
        select(Invitation).where(Invitation.organization_id == org_id, Invitation.accepted_at.is_(None), Invitation.expires_at > func.now())
        .order_by(Invitation.created_at.desc())
    )).scalars())


async def ensure_demo(rt: Runtime, *, email: str, password: str) -> bool:
    """Seed the demo organization and user on first start; False when it already exists."""
    async with rt.sessionmaker() as session:
        exists = (await session.execute(select(User.id).where(User.email == email))).first()
    if exists:
        return False
    await sign_up(rt, email=email, password=password, full_name="Usuario Demo", organization_name="Escuela Kemper Urgate (demo)")
    async with transaction(rt.sessionmaker) as session:
        await session.execute(update(User).where(User.email == email).values(email_verified_at=utcnow()))
    return True

