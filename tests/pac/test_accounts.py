"""PAC settings, organization accounts sealed at rest, and the organization's PAC assembled from them."""

from __future__ import annotations

import uuid

import pytest

from shared.crypto import SecretDecryptionError
from sat.pac import finkok, swsapien
from sat.pac.accounts import PacAccount, PacSettings, build_pac, open_account, seal_account
from sat.pac.failover import FailoverPac

from .conftest import FINKOK_PASSWORD, FINKOK_USER, SW_TOKEN


def test_endpoints_follow_the_environment_and_can_be_overridden(monkeypatch):
    assert PacSettings().url("finkok") == finkok.TEST_URL
    monkeypatch.setenv("PAC_ENVIRONMENT", "production")
    monkeypatch.setenv("SW_URL", "http://127.0.0.1:9/")
    s = PacSettings()
    assert s.url("finkok") == finkok.PRODUCTION_URL and s.url("swsapien") == "http://127.0.0.1:9/"
    monkeypatch.setenv("PAC_READ_TIMEOUT_SECONDS", "7.5")
    assert PacSettings().timeouts.read == 7.5
    assert swsapien.PRODUCTION_URL.startswith("https://")


def test_account_is_sealed_and_bound_to_its_organization(settings):
    org = uuid.uuid4()
    account = PacAccount("finkok", username="user@example.com", password="s3cr3t-Password")
    sealed = seal_account(account, organization_id=org, settings=settings)
    assert "s3cr3t" not in sealed and "user@example.com" not in sealed
    assert open_account(sealed, organization_id=org, provider="finkok", settings=settings) == account
    with pytest.raises(SecretDecryptionError):
        open_account(sealed, organization_id=uuid.uuid4(), provider="finkok", settings=settings)
    with pytest.raises(SecretDecryptionError):
        open_account(sealed, organization_id=org, provider="swsapien", settings=settings)


@pytest.mark.parametrize("account, field", [
    (PacAccount("finkok", username="u"), "password"),
    (PacAccount("finkok", password="p"), "username"),
    (PacAccount("swsapien"), "token"),
    (PacAccount("otro", token="t"), "provider"),
])
def test_incomplete_accounts_say_which_field(account, field):
    assert [p[0] for p in account.problems()] == [field]


def test_complete_accounts_have_no_problems():
    assert PacAccount("swsapien", token="t").problems() == []
    assert PacAccount("swsapien", username="u", password="p").problems() == []


async def test_the_organizations_pacs_in_order_stamp_through_failover(monkeypatch, sims, redis, csd_issuer, new_cfdi):
    monkeypatch.setenv("FINKOK_URL", sims.finkok.url)
    monkeypatch.setenv("SW_URL", sims.sw.url)
    monkeypatch.setenv("SAT_STATUS_URL", f"{sims.sat.url}/ConsultaCFDIService.svc")
    pac = build_pac([PacAccount("finkok", username=FINKOK_USER, password=FINKOK_PASSWORD),
                     PacAccount("swsapien", token=SW_TOKEN)], PacSettings(), redis, csd=csd_issuer)
    assert isinstance(pac, FailoverPac) and [p.name for p in pac.pacs] == ["finkok", "swsapien"]
    sims.finkok_faults.inject("503")
    result = await pac.stamp(new_cfdi(), idempotency_key="accounts-order")
    await pac.aclose()
    assert sims.ledger.get(result.uuid).pac == "swsapien"
