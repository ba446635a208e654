"""GraphQL for an organization's PAC accounts and the cancellation requests it received. Thin:
each resolver checks the permission and calls one use case in pac_accounts.py."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from shared.context import RequestContext
from shared.errors import Payload, payload_or_errors
from shared.permissions import Permission as P
from subgraphs.invoice import pac_accounts as use
from sat.pac.accounts import PacAccount as Account

Ctx = Info[RequestContext, None]


@strawberry.enum(description="Proveedor Autorizado de Certificación.")
class PacProvider(Enum):
    FINKOK = "finkok"
    SWSAPIEN = "swsapien"


@strawberry.type(description="One PAC account of the organization; secrets are never returned.")
class PacAccount:
    position: int = strawberry.field(description="0 = stamps first; the next ones take over when it is down.")
    provider: PacProvider
    username_hint: str
    created_at: datetime


@strawberry.input
class PacAccountInput:
    provider: PacProvider
    username: str | None = None
    password: str | None = None
    token: str | None = strawberry.field(default=None, description="SW Sapien account token (instead of user/password).")


@strawberry.type
class PacAccountsPayload(Payload):
    pac_accounts: list[PacAccount] | None = None


@strawberry.input
class CancellationAnswerInput:
    uuid: str
    accept: bool


@strawberry.type
class CancellationAnswer:
    uuid: str
    code: str = strawberry.field(description="SAT's answer code (1000 = recorded).")


@strawberry.type
class CancellationAnswersPayload(Payload):
    answers: list[CancellationAnswer] | None = None


def _account(row) -> PacAccount:
    return PacAccount(position=row.position, provider=PacProvider(row.provider), username_hint=row.username_hint,
                      created_at=row.created_at)


@strawberry.type
class PacQueries:
    @strawberry.field(description="The organization's PAC accounts in order of preference.")
    async def pac_accounts(self, info: Ctx) -> list[PacAccount] | None:
        p = await info.context.require(P.ISSUER_MANAGE)
        async with info.context.runtime.sessionmaker() as session:
            return [_account(r) for r in await use.list_pac_accounts(session, p.organization_id)]

    @strawberry.field(description="Folios fiscales (UUID) received by the organization whose issuers asked to "
                                  "cancel them, waiting for our acceptance or rejection (asked to the PAC).")
    async def cancellation_requests(self, info: Ctx) -> list[str] | None:
        p = await info.context.require(P.INVOICE_CANCEL)
        return await use.cancellation_requests(info.context.runtime, p.organization_id, info.context.runtime.redis)


@strawberry.type
class PacMutations:
    @strawberry.mutation(description="Replace the organization's PAC accounts; the first stamps, the next take over "
                                     "when it is down. An empty list returns to the service's default PAC.")
    async def set_pac_accounts(self, info: Ctx, accounts: list[PacAccountInput]) -> PacAccountsPayload:
        p = await info.context.require(P.ISSUER_MANAGE)

        async def run():
            rows = await use.set_pac_accounts(info.context.runtime, p.organization_id, p.user_id, [
                Account(a.provider.value, a.username, a.password, a.token) for a in accounts])
            return PacAccountsPayload(pac_accounts=[_account(r) for r in rows])
        return await payload_or_errors(PacAccountsPayload, run)

    @strawberry.mutation(description="Accept or reject cancellation requests against CFDIs the organization received.")
    async def answer_cancellation_requests(self, info: Ctx, answers: list[CancellationAnswerInput]
                                           ) -> CancellationAnswersPayload:
        p = await info.context.require(P.INVOICE_CANCEL)

        async def run():
            codes = await use.answer_cancellation_requests(
                info.context.runtime, p.organization_id, info.context.runtime.redis,
                {a.uuid.strip().upper(): a.accept for a in answers})
            return CancellationAnswersPayload(answers=[CancellationAnswer(uuid=u, code=c) for u, c in codes.items()])
        return await payload_or_errors(CancellationAnswersPayload, run)
