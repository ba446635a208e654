"""The auth subgraph's GraphQL schema. Thin: each resolver checks who is asking and calls one
service function."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from shared.context import RequestContext
from shared.errors import InputError, NotFoundError, Payload, payload_or_errors
from shared.graphql import build_schema
from shared.pagination import Connection, build_connection, decode_cursor, page_size
from shared.permissions import Permission
from shared.validation import column_limits
from subgraphs.auth import loaders, service
from subgraphs.auth import models as m

Ctx = Info[RequestContext, None]


@strawberry.enum(description="A member's role; each grants a documented set of permissions.")
class Role(Enum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    ACCOUNTANT = "ACCOUNTANT"
    APPROVER = "APPROVER"
    MEMBER = "MEMBER"


_PRIVATE = "Only for yourself and for members:read; null otherwise."


@strawberry.federation.type(keys=["id"], description="A person who can sign in. Anyone in the organization sees a "
                                                     "member's name; contact and security details need members:read.")
class User:
    id: strawberry.ID
    full_name: str
    _row: strawberry.Private[m.User]
    _mine: strawberry.Private[bool] = False  # the caller's own account (me, profile, e-mail link)

    @classmethod
    def from_row(cls, u: m.User, *, mine: bool = False) -> "User":
        return cls(id=strawberry.ID(str(u.id)), full_name=u.full_name, _row=u, _mine=mine)

    async def _shown(self, info: Ctx) -> bool:
        if self._mine:
            return True
        p = await info.context.optional_principal()
        return p is not None and (self._row.id == p.user_id or p.has(Permission.MEMBERS_READ) or p.has(Permission.ORG_MANAGE))

    @strawberry.field(description=_PRIVATE)
    async def email(self, info: Ctx) -> str | None:
        return self._row.email if await self._shown(info) else None

    @strawberry.field(description="Preferred language: es-MX (default) or en. " + _PRIVATE)
    async def locale(self, info: Ctx) -> str | None:
        return self._row.locale if await self._shown(info) else None

    @strawberry.field(description=_PRIVATE)
    async def email_verified(self, info: Ctx) -> bool | None:
        return self._row.email_verified_at is not None if await self._shown(info) else None

    @strawberry.field(description=_PRIVATE)
    async def mfa_enabled(self, info: Ctx) -> bool | None:
        return self._row.totp_enabled if await self._shown(info) else None

    @classmethod
    async def resolve_reference(cls, info: Ctx, id: strawberry.ID) -> "User | None":
        # Other subgraphs ask for users by id (e.g. Invoice.createdBy); only members of the caller's
        # organization are visible, and their details only as members:read allows.
        p = await info.context.principal()
        row = await loaders.users(info.context, p.organization_id).load(_uuid(id))
        return cls.from_row(row) if row else None

    @strawberry.field(description="The organization the current access token is for.")
    async def organization(self, info: Ctx) -> "Organization | None":
        p = await info.context.principal()
        mships = await loaders.memberships(info.context).load(uuid.UUID(self.id))
        if not any(ms.organization_id == p.organization_id for ms in mships):
            return None
        row = await loaders.organizations(info.context).load(p.organization_id)
        return Organization.from_row(row) if row else None

    @strawberry.field(description="Every organization this user belongs to (only for yourself).")
    async def memberships(self, info: Ctx) -> list["Membership"]:
        p = await info.context.principal()
        if uuid.UUID(self.id) != p.user_id:
            return []
        return [Membership.from_row(ms) for ms in await loaders.memberships(info.context).load(p.user_id)]


@strawberry.type
class Membership:
    organization_id: strawberry.ID
    user_id: strawberry.ID
    role: Role
    joined_at: datetime

    @classmethod
    def from_row(cls, ms: m.Membership) -> "Membership":
        return cls(organization_id=strawberry.ID(str(ms.organization_id)), user_id=strawberry.ID(str(ms.user_id)),
                   role=Role(ms.role), joined_at=ms.created_at)

    @strawberry.field
    async def organization(self, info: Ctx) -> "Organization | None":
        row = await loaders.organizations(info.context).load(uuid.UUID(self.organization_id))
        return Organization.from_row(row) if row else None

    @strawberry.field
    async def user(self, info: Ctx) -> User | None:
        row = await loaders.users(info.context, None).load(uuid.UUID(self.user_id))
        return User.from_row(row) if row else None


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    prefix: str = strawberry.field(description="First characters of the key, to tell keys apart.")
    permissions: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, k: m.ApiKey) -> "ApiKey":
        return cls(id=strawberry.ID(str(k.id)), name=k.name, prefix=k.prefix, permissions=list(k.permissions),
                   created_at=k.created_at, last_used_at=k.last_used_at, revoked_at=k.revoked_at)


@strawberry.type
class Invitation:
    id: strawberry.ID
    email: str
    role: Role
    expires_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, i: m.Invitation) -> "Invitation":
        return cls(id=strawberry.ID(str(i.id)), email=i.email, role=Role(i.role), expires_at=i.expires_at, revoked_at=i.revoked_at)


@strawberry.federation.type(keys=["id"], description="A business that issues invoices and manages expenses.")
class Organization:
    id: strawberry.ID
    name: str
    created_at: datetime

    @classmethod
    def from_row(cls, o: m.Organization) -> "Organization":
        return cls(id=strawberry.ID(str(o.id)), name=o.name, created_at=o.created_at)

    @classmethod
    async def resolve_reference(cls, info: Ctx, id: strawberry.ID) -> "Organization | None":
        p = await info.context.principal()
        if _uuid(id) != p.organization_id:  # tenants never see each other
            return None
        row = await loaders.organizations(info.context).load(p.organization_id)
        return cls.from_row(row) if row else None

    @strawberry.field(description="Members of the organization (needs members:read).")
    async def members(self, info: Ctx, first: int | None = None, after: str | None = None) -> Connection[Membership]:
        return await _members(info, uuid.UUID(self.id), first, after)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError() from None


async def _members(info: Ctx, org_id: uuid.UUID, first, after) -> Connection[Membership]:
    p = await info.context.principal()
    if org_id != p.organization_id:
        raise NotFoundError()
    if not (p.has(Permission.MEMBERS_READ) or p.has(Permission.ORG_MANAGE)):
        await info.context.require(Permission.MEMBERS_READ)
    size = page_size(first)
    async with info.context.runtime.sessionmaker() as session:
        rows = await service.members(session, org_id, after=decode_cursor(after, datetime.fromisoformat, uuid.UUID), limit=size + 1)
    return build_connection(rows, size, to_node=Membership.from_row, key_of=lambda r: [r.created_at.isoformat(), str(r.id)], after=after)


# --- payloads -----------------------------------------------------------------------------------

@strawberry.type
class AuthTokens:
    access_token: str
    refresh_token: str
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    token_type: str
    organization_id: strawberry.ID

    @classmethod
    def from_pair(cls, t: service.TokenPair) -> "AuthTokens":
        return cls(access_token=t.access_token, refresh_token=t.refresh_token, expires_in=t.expires_in,
                   token_type="Bearer", organization_id=strawberry.ID(str(t.organization_id)))


@strawberry.type
class MfaRequired:
    challenge_token: str = strawberry.field(description="Send it with a TOTP or recovery code to verifyMfa.")
    expires_in: int


@strawberry.type
class AuthPayload(Payload):
    tokens: AuthTokens | None = None


@strawberry.type
class LogInPayload(Payload):
    tokens: AuthTokens | None = None
    mfa_required: MfaRequired | None = None


@strawberry.type
class SuccessPayload(Payload):
    success: bool = False


@strawberry.type
class EnrollTotpPayload(Payload):
    secret: str | None = None
    otpauth_uri: str | None = None
    qr_code_svg: str | None = None


@strawberry.type
class ConfirmTotpPayload(Payload):
    recovery_codes: list[str] | None = strawberry.field(default=None, description="Shown once; each works once.")


@strawberry.type
class InviteMemberPayload(Payload):
    invitation: Invitation | None = None


@strawberry.type
class MemberPayload(Payload):
    membership: Membership | None = None


@strawberry.type
class CreateApiKeyPayload(Payload):
    api_key: ApiKey | None = None
    key: str | None = strawberry.field(default=None, description="The secret key; shown only this once.")


@strawberry.type
class ApiKeyPayload(Payload):
    api_key: ApiKey | None = None


@strawberry.type
class ExchangeApiKeyPayload(Payload):
    access_token: str | None = None
    expires_in: int | None = None


@strawberry.type
class UserPayload(Payload):
    user: User | None = None


@strawberry.input
class SignUpInput:
    email: str
    password: str
    full_name: str = strawberry.field(metadata=column_limits(m.User.full_name))
    organization_name: str = strawberry.field(metadata=column_limits(m.Organization.name))
    locale: str = "es-MX"


@strawberry.input
class LogInInput:
    email: str
    password: str
    organization_id: strawberry.ID | None = None


@strawberry.input
class VerifyMfaInput:
    challenge_token: str
    code: str = strawberry.field(description="A 6-digit TOTP code or an unused recovery code.")


@strawberry.input
class UpdateProfileInput:
    full_name: str | None = strawberry.field(default=None, metadata=column_limits(m.User.full_name))
    locale: str | None = None


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.input
class ResetPasswordInput:
    token: str
    new_password: str


def _opt_uuid(value, field: str | list[str]) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InputError.single("INVALID_ID", "Identificador inválido.", field) from None


def _tokens(pair) -> AuthPayload:
    return AuthPayload(tokens=AuthTokens.from_pair(pair))


@strawberry.type
class Query:
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Ctx) -> User | None:
        p = await info.context.principal()
        row = await loaders.users(info.context, None).load(p.user_id)
        if row is None:
            raise NotFoundError()
        return User.from_row(row, mine=True)

    @strawberry.field(description="The organization of the current access token.")
    async def organization(self, info: Ctx) -> Organization | None:
        p = await info.context.principal()
        row = await loaders.organizations(info.context).load(p.organization_id)
        return Organization.from_row(row)

    @strawberry.field(description="Members of the current organization (needs members:read).")
    async def members(self, info: Ctx, first: int | None = None, after: str | None = None) -> Connection[Membership] | None:
        p = await info.context.principal()
        return await _members(info, p.organization_id, first, after)

    @strawberry.field(description="API keys of the current organization (needs org:manage).")
    async def api_keys(self, info: Ctx) -> list[ApiKey] | None:
        p = await info.context.require(Permission.ORG_MANAGE)
        async with info.context.runtime.sessionmaker() as session:
            return [ApiKey.from_row(k) for k in await service.api_keys(session, p.organization_id)]

    @strawberry.field(description="Pending invitations of the current organization (needs org:manage).")
    async def invitations(self, info: Ctx) -> list[Invitation] | None:
        p = await info.context.require(Permission.ORG_MANAGE)
        async with info.context.runtime.sessionmaker() as session:
            return [Invitation.from_row(i) for i in await service.pending_invitations(session, p.organization_id)]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start an account: a link to finish (completeSignUp) is mailed to the address. The "
                                     "answer is the same whether or not the address already has an account (its owner "
                                     "is told by e-mail instead); limited per address and per client.")
    async def sign_up(self, info: Ctx, input: SignUpInput) -> SuccessPayload:
        ctx = info.context

        async def run():
            await service.sign_up(ctx.runtime, email=input.email, password=input.password, full_name=input.full_name,
                                  organization_name=input.organization_name, locale=input.locale, ip=ctx.client_ip)
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation(description="The mailed sign-up link: creates the account and its organization (you become OWNER) "
                                     "and signs you in.")
    async def complete_sign_up(self, info: Ctx, token: str) -> AuthPayload:
        return await payload_or_errors(AuthPayload, lambda: _wrap(service.complete_sign_up(info.context.runtime, token)))

    @strawberry.mutation(description="Tokens, or `mfaRequired` with a challenge when MFA is on.")
    async def log_in(self, info: Ctx, input: LogInInput) -> LogInPayload:
        ctx = info.context

        async def run():
            result = await service.log_in(ctx.runtime, email=input.email, password=input.password,
                                          organization_id=_opt_uuid(input.organization_id, "organizationId"), ip=ctx.client_ip)
            if isinstance(result, service.MfaChallenge):
                return LogInPayload(mfa_required=MfaRequired(challenge_token=result.challenge_token, expires_in=result.expires_in))
            return LogInPayload(tokens=AuthTokens.from_pair(result))
        return await payload_or_errors(LogInPayload, run)

    @strawberry.mutation
    async def verify_mfa(self, info: Ctx, input: VerifyMfaInput) -> AuthPayload:
        ctx = info.context
        return await payload_or_errors(AuthPayload, lambda: _wrap(service.verify_mfa(ctx.runtime, challenge_token=input.challenge_token,
                                                                                    code=input.code, ip=ctx.client_ip)))

    @strawberry.mutation(description="Rotate: the given refresh token stops working.")
    async def refresh_tokens(self, info: Ctx, refresh_token: str) -> AuthPayload:
        return await payload_or_errors(AuthPayload, lambda: _wrap(service.refresh_tokens(info.context.runtime, refresh_token)))

    @strawberry.mutation
    async def log_out(self, info: Ctx, refresh_token: str) -> SuccessPayload:
        async def run():
            await service.log_out(info.context.runtime, refresh_token)
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation(description="Start TOTP enrolment: secret, otpauth:// URI and QR code.")
    async def enroll_totp(self, info: Ctx) -> EnrollTotpPayload:
        p = await info.context.principal()

        async def run():
            e = await service.enroll_totp(info.context.runtime, p)
            return EnrollTotpPayload(secret=e.secret, otpauth_uri=e.otpauth_uri, qr_code_svg=e.qr_svg)
        return await payload_or_errors(EnrollTotpPayload, run)

    @strawberry.mutation(description="Turn MFA on with a first code; returns 10 single-use recovery codes.")
    async def confirm_totp(self, info: Ctx, code: str) -> ConfirmTotpPayload:
        p = await info.context.principal()

        async def run():
            return ConfirmTotpPayload(recovery_codes=await service.confirm_totp(info.context.runtime, p, code))
        return await payload_or_errors(ConfirmTotpPayload, run)

    @strawberry.mutation
    async def disable_totp(self, info: Ctx, code: str) -> SuccessPayload:
        p = await info.context.principal()

        async def run():
            await service.disable_totp(info.context.runtime, p, code)
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation
    async def switch_organization(self, info: Ctx, organization_id: strawberry.ID) -> AuthPayload:
        p = await info.context.principal()
        return await payload_or_errors(AuthPayload, lambda: _wrap(service.switch_organization(
            info.context.runtime, p, _opt_uuid(organization_id, ["organizationId"]))))

    @strawberry.mutation(description="Invite someone by e-mail (needs org:manage).")
    async def invite_member(self, info: Ctx, email: str, role: Role) -> InviteMemberPayload:
        p = await info.context.require(Permission.ORG_MANAGE)

        async def run():
            inv = await service.invite_member(info.context.runtime, p, email=email, role=role.value)
            return InviteMemberPayload(invitation=Invitation.from_row(inv))
        return await payload_or_errors(InviteMemberPayload, run)

    @strawberry.mutation(description="Withdraw a pending invitation; its link stops working (needs org:manage).")
    async def revoke_invitation(self, info: Ctx, id: strawberry.ID) -> InviteMemberPayload:
        p = await info.context.require(Permission.ORG_MANAGE)

        async def run():
            inv = await service.revoke_invitation(info.context.runtime, p, _opt_uuid(id, ["id"]))
            return InviteMemberPayload(invitation=Invitation.from_row(inv))
        return await payload_or_errors(InviteMemberPayload, run)

    @strawberry.mutation
    async def accept_invitation(self, info: Ctx, token: str) -> AuthPayload:
        p = await info.context.principal()
        return await payload_or_errors(AuthPayload, lambda: _wrap(service.accept_invitation(info.context.runtime, p, token)))

    @strawberry.mutation(description="Needs org:manage; only an OWNER grants or removes OWNER.")
    async def change_member_role(self, info: Ctx, user_id: strawberry.ID, role: Role) -> MemberPayload:
        p = await info.context.require(Permission.ORG_MANAGE)

        async def run():
            ms = await service.change_member_role(info.context.runtime, p, user_id=_opt_uuid(user_id, ["userId"]), role=role.value)
            return MemberPayload(membership=Membership.from_row(ms))
        return await payload_or_errors(MemberPayload, run)

    @strawberry.mutation
    async def remove_member(self, info: Ctx, user_id: strawberry.ID) -> SuccessPayload:
        p = await info.context.require(Permission.ORG_MANAGE)

        async def run():
            await service.remove_member(info.context.runtime, p, user_id=_opt_uuid(user_id, ["userId"]))
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation(description="Create an organization API key; the key is returned only once.")
    async def create_api_key(self, info: Ctx, name: str, permissions: list[str]) -> CreateApiKeyPayload:
        p = await info.context.require(Permission.ORG_MANAGE)

        async def run():
            row, key = await service.create_api_key(info.context.runtime, p, name=name, permissions=permissions)
            return CreateApiKeyPayload(api_key=ApiKey.from_row(row), key=key)
        return await payload_or_errors(CreateApiKeyPayload, run)

    @strawberry.mutation
    async def revoke_api_key(self, info: Ctx, id: strawberry.ID) -> ApiKeyPayload:
        p = await info.context.require(Permission.ORG_MANAGE)

        async def run():
            return ApiKeyPayload(api_key=ApiKey.from_row(await service.revoke_api_key(info.context.runtime, p, _opt_uuid(id, ["id"]))))
        return await payload_or_errors(ApiKeyPayload, run)

    @strawberry.mutation(description="Trade an API key for a short-lived access token with the key's permissions.")
    async def exchange_api_key(self, info: Ctx, key: str) -> ExchangeApiKeyPayload:
        async def run():
            token, ttl = await service.exchange_api_key(info.context.runtime, key, info.context.client_ip)
            return ExchangeApiKeyPayload(access_token=token, expires_in=ttl)
        return await payload_or_errors(ExchangeApiKeyPayload, run)

    @strawberry.mutation
    async def update_profile(self, info: Ctx, input: UpdateProfileInput) -> UserPayload:
        p = await info.context.principal()

        async def run():
            return UserPayload(user=User.from_row(await service.update_profile(info.context.runtime, p, full_name=input.full_name, locale=input.locale),
                                                  mine=True))
        return await payload_or_errors(UserPayload, run)

    @strawberry.mutation(description="Change your password; every other session is signed out.")
    async def change_password(self, info: Ctx, input: ChangePasswordInput) -> SuccessPayload:
        p = await info.context.principal()

        async def run():
            await service.change_password(info.context.runtime, p, current_password=input.current_password, new_password=input.new_password)
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation(description="Succeeds whether or not the e-mail has an account (a link is mailed only when it "
                                     "has one); limited per address and per client (TOO_MANY_ATTEMPTS).")
    async def request_password_reset(self, info: Ctx, email: str) -> SuccessPayload:
        async def run():
            await service.request_password_reset(info.context.runtime, email, info.context.client_ip)
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation(description="Set a new password with the e-mailed token; signs out every session.")
    async def reset_password(self, info: Ctx, input: ResetPasswordInput) -> SuccessPayload:
        async def run():
            await service.reset_password(info.context.runtime, input.token, input.new_password)
            return SuccessPayload(success=True)
        return await payload_or_errors(SuccessPayload, run)

    @strawberry.mutation
    async def verify_email(self, info: Ctx, token: str) -> UserPayload:
        async def run():
            return UserPayload(user=User.from_row(await service.verify_email(info.context.runtime, token), mine=True))
        return await payload_or_errors(UserPayload, run)

    @strawberry.mutation
    async def resend_email_verification(self, info: Ctx) -> SuccessPayload:
        p = await info.context.principal()
        await service.request_email_verification(info.context.runtime, p)
        return SuccessPayload(success=True)


async def _wrap(coro) -> AuthPayload:
    return _tokens(await coro)


schema = build_schema(query=Query, mutation=Mutation, types=[User, Organization])
