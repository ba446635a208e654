"""(Beside the invoice tests so they share the session's invoice and auth apps.)

An organization's PAC accounts in Postgres: sealed, ordered, replaced atomically, per tenant,
and opened into the FailoverPac the worker stamps with."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from shared.crypto import SecretDecryptionError
from shared.errors import InputError
from sat import cfdi
from subgraphs.invoice import models as m
from sat.pac.accounts import PacAccount, PacSettings
from subgraphs.invoice.pac_accounts import list_pac_accounts, organization_pac, set_pac_accounts
from tests.cfdi.conftest import make_invoice
from tests.pac.conftest import (  # noqa: F401 - fixtures: the PAC simulators and test CSDs
    FINKOK_PASSWORD, FINKOK_USER, SW_TOKEN, _clean_faults, csd_issuer, csd_receiver, new_cfdi, redis, sims,
)
from tests.pac.simulators.core import Record


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


SET = """mutation($a: [PacAccountInput!]!) { setPacAccounts(accounts: $a) {
  pacAccounts { position provider usernameHint } userErrors { field code message } } }"""
LIST = "{ pacAccounts { position provider usernameHint } }"
REQUESTS = "{ cancellationRequests }"
ANSWER = """mutation($a: [CancellationAnswerInput!]!) { answerCancellationRequests(answers: $a) {
  answers { uuid code } userErrors { field code message } } }"""


def received_cfdi_with_cancellation_request(sims, csd_receiver) -> str:
    """A CFDI XIA190128J61 issued to EKU9003173C9 (our test organization) through another PAC,
    whose issuer has asked SAT to cancel it."""
    invoice = cfdi.compute_totals(make_invoice(
        issuer=cfdi.Issuer("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "601"),
        receiver=cfdi.Receiver("EKU9003173C9", "ESCUELA KEMPER URGATE", "42501", "601", "G03"),
        folio=uuid.uuid4().hex[:10]))
    tree = cfdi.build_tree(invoice)
    cfdi.sign_cfdi(tree, csd_receiver)
    record = Record(str(uuid.uuid4()).upper(), cfdi.to_bytes(tree), "XIA190128J61", "EKU9003173C9", invoice.total,
                    invoice, "other-pac", cancellation_status="En proceso")
    sims.ledger.register(record)
    return record.uuid


async def test_graphql_accounts_and_received_cancellation_requests(org, sims, monkeypatch, csd_receiver):
    monkeypatch.setenv("FINKOK_URL", sims.finkok.url)
    monkeypatch.setenv("SAT_STATUS_URL", f"{sims.sat.url}/ConsultaCFDIService.svc")
    bad = (await org.ok(SET, {"a": [{"provider": "FINKOK", "username": FINKOK_USER}]}))["setPacAccounts"]
    assert bad["userErrors"][0]["field"] == ["accounts", "0", "password"] and bad["pacAccounts"] is None
    no_pac = await org.execute(REQUESTS)
    assert no_pac.errors and no_pac.errors[0]["extensions"]["code"] == "PAC_NOT_CONFIGURED"

    out = (await org.ok(SET, {"a": [{"provider": "FINKOK", "username": FINKOK_USER,
                                     "password": FINKOK_PASSWORD}]}))["setPacAccounts"]
    assert out["userErrors"] == [] and out["pacAccounts"] == [{"position": 0, "provider": "FINKOK",
                                                               "usernameHint": "sim…om"}]
    assert (await org.ok(LIST))["pacAccounts"] == out["pacAccounts"]

    uuid_ = received_cfdi_with_cancellation_request(sims, csd_receiver)
    assert uuid_ in (await org.ok(REQUESTS))["cancellationRequests"]
    answered = (await org.ok(ANSWER, {"a": [{"uuid": uuid_.lower(), "accept": False}]}))["answerCancellationRequests"]
    assert answered == {"answers": [{"uuid": uuid_, "code": "1000"}], "userErrors": []}
    assert sims.ledger.get(uuid_).cancellation_status == "Solicitud rechazada"
    assert uuid_ not in (await org.ok(REQUESTS))["cancellationRequests"]
