"""An organization's PAC accounts in Postgres: sealed, ordered, replaced atomically, per tenant,
and opened into the FailoverPac the worker stamps with."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from shared.crypto import SecretDecryptionError
from shared.errors import InputError
from subgraphs.invoice import models as m
from subgraphs.invoice.pac.accounts import PacAccount, PacSettings
from subgraphs.invoice.pac_accounts import list_pac_accounts, organization_pac, set_pac_accounts
from tests.invoice.conftest import auth_app, auth_http, auth_settings, invoice_app, invoice_http, runtime  # noqa: F401

from .conftest import FINKOK_PASSWORD, FINKOK_USER, SW_TOKEN


async def test_accounts_are_stored_sealed_in_order_and_replaced(runtime):
    org = uuid.uuid4()
    await set_pac_accounts(runtime, org, None, [PacAccount("swsapien", token="tok-0123456789-secret"),
                                                 PacAccount("FINKOK ", username="user@example.com", password="Pw-1")])
    async with runtime.sessionmaker() as session:
        rows = await list_pac_accounts(session, org)
        assert [(r.position, r.provider) for r in rows] == [(0, "swsapien"), (1, "finkok")]
        assert all("secret" not in r.account_sealed and "Pw-1" not in r.account_sealed for r in rows)
        assert rows[1].username_hint == "use…om"
    await set_pac_accounts(runtime, org, None, [PacAccount("finkok", username="other@example.com", password="Pw-2")])
    async with runtime.sessionmaker() as session:
        assert [r.provider for r in await list_pac_accounts(session, org)] == ["finkok"]
        assert await list_pac_accounts(session, uuid.uuid4()) == []  # another tenant sees nothing


async def test_bad_lists_are_refused_whole_with_field_paths(runtime):
    org = uuid.uuid4()
    await set_pac_accounts(runtime, org, None, [PacAccount("finkok", username="u@example.com", password="p")])
    with pytest.raises(InputError) as caught:
        await set_pac_accounts(runtime, org, None, [PacAccount("swsapien", token="t"), PacAccount("swsapien"),
                                                     PacAccount("finkok", username="only-user")])
    fields = {(tuple(e.field), e.code) for e in caught.value.errors}
    assert fields == {(("accounts", "1", "token"), "REQUIRED"), (("accounts", "1", "provider"), "DUPLICATE_PAC"),
                      (("accounts", "2", "password"), "REQUIRED"), (("accounts",), "TOO_MANY_PACS")}
    async with runtime.sessionmaker() as session:  # nothing half-written: the old list stands
        assert [r.provider for r in await list_pac_accounts(session, org)] == ["finkok"]


async def test_the_stored_accounts_open_into_the_organizations_pac(runtime, sims, redis, csd_issuer, new_cfdi):
    org = uuid.uuid4()
    await set_pac_accounts(runtime, org, None, [PacAccount("finkok", username=FINKOK_USER, password=FINKOK_PASSWORD),
                                                 PacAccount("swsapien", token=SW_TOKEN)])
    settings = PacSettings(finkok_url=sims.finkok.url, sw_url=sims.sw.url,
                           sat_status_url=f"{sims.sat.url}/ConsultaCFDIService.svc")
    async with runtime.sessionmaker() as session:
        assert await organization_pac(runtime, session, uuid.uuid4(), redis, csd=csd_issuer) is None
        pac = await organization_pac(runtime, session, org, redis, csd=csd_issuer, settings=settings)
    result = await pac.stamp(new_cfdi(), idempotency_key=f"org-{org}")
    await pac.aclose()
    assert sims.ledger.get(result.uuid).pac == "finkok"


async def test_a_sealed_account_copied_to_another_organization_cannot_be_opened(runtime, redis):
    org, other = uuid.uuid4(), uuid.uuid4()
    await set_pac_accounts(runtime, org, None, [PacAccount("swsapien", token="tok-0123456789")])
    await set_pac_accounts(runtime, other, None, [PacAccount("swsapien", token="tok-other-0000")])
    async with runtime.sessionmaker() as session:
        mine = await session.scalar(select(m.PacAccount).where(m.PacAccount.organization_id == org))
        theirs = await session.scalar(select(m.PacAccount).where(m.PacAccount.organization_id == other))
        theirs.account_sealed = mine.account_sealed
        await session.commit()
        with pytest.raises(SecretDecryptionError):
            await organization_pac(runtime, session, other, redis, csd=None)
