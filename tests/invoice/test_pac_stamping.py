"""The invoice service stamps and cancels through the organization's own PACs (setPacAccounts):
Finkok first, SW Sapien when Finkok is down, a lost answer recovered from the PAC that stamped."""

from __future__ import annotations

import pytest
from arq import Retry

from tests.invoice.conftest import CANCEL
from tests.invoice.test_pac_accounts import SET
from tests.pac.conftest import (  # noqa: F401 - fixtures: the PAC simulators
    FINKOK_PASSWORD, FINKOK_USER, SW_TOKEN, _clean_faults, csd_issuer, redis, sims,
)
from workers import stamping
from workers.stamping import cancel_invoice_job, poll_cancellation_job, stamp_invoice_job


@pytest.fixture
async def org_with_pacs(org, sims, monkeypatch):
    monkeypatch.setenv("FINKOK_URL", sims.finkok.url)
    monkeypatch.setenv("SW_URL", sims.sw.url)
    monkeypatch.setenv("SAT_STATUS_URL", f"{sims.sat.url}/ConsultaCFDIService.svc")
    monkeypatch.setenv("PAC_READ_TIMEOUT_SECONDS", "1.5")  # the simulators answer in ms unless told to hang
    out = (await org.ok(SET, {"a": [{"provider": "FINKOK", "username": FINKOK_USER, "password": FINKOK_PASSWORD},
                                    {"provider": "SWSAPIEN", "token": SW_TOKEN}]}))["setPacAccounts"]
    assert out["userErrors"] == []
    return org


async def stamped_invoice(org, job_ctx, key: str) -> dict:
    inv = await org.create_invoice()
    await org.stamp(inv["id"], key)
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    return await org.get(inv["id"])


async def test_stamps_with_the_first_pac_and_fails_over_to_the_second(org_with_pacs, sims, job_ctx, redis):
    first = await stamped_invoice(org_with_pacs, job_ctx, "org-first")
    also_first = await stamped_invoice(org_with_pacs, job_ctx, "org-first-2")
    assert sims.ledger.get(first["uuid"]).pac == sims.ledger.get(also_first["uuid"]).pac == "finkok"
    assert len(sims.finkok_faults.peers) == 1  # one kept-alive connection across invoices
    sims.finkok_faults.inject("503")
    second = await stamped_invoice(org_with_pacs, job_ctx, "org-second")
    assert sims.ledger.get(second["uuid"]).pac == "swsapien"


async def test_the_worker_stamps_through_the_organizations_pac_not_its_default(org_with_pacs, new_org, sims,
                                                                             job_ctx, redis):
    """As the worker runs the job: its startup puts the configured provider (the sandbox) in the
    job context. That PAC is the default for organizations without accounts, never a replacement
    for an organization's own (it was: every stamp went to the worker's PAC)."""
    ctx = dict(job_ctx)
    await stamping.startup(ctx)
    own = await stamped_invoice(org_with_pacs, ctx, "worker-own")
    assert sims.ledger.get(own["uuid"]).pac == "finkok"
    other = await new_org()  # no PAC accounts: the worker's default PAC
    plain = await stamped_invoice(other, ctx, "worker-default")
    assert plain["status"] == "STAMPED" and sims.ledger.get(plain["uuid"]) is None


async def test_lost_answer_is_recovered_from_the_pac_that_stamped(org_with_pacs, sims, job_ctx, redis):
    inv = await org_with_pacs.create_invoice()
    await org_with_pacs.stamp(inv["id"], "org-lost")
    sims.finkok_faults.inject("hang_after")
    with pytest.raises(Retry):
        await stamp_invoice_job(job_ctx, inv["id"])
    assert (await org_with_pacs.get(inv["id"]))["status"] == "STAMPING"
    assert await stamp_invoice_job({**job_ctx, "job_try": 2}, inv["id"]) == "STAMPED"
    got = await org_with_pacs.get(inv["id"])
    record = sims.ledger.get(got["uuid"])
    assert record.pac == "finkok" and "recuperado" in got["history"][-1]["reason"]
    assert sum(1 for r in sims.ledger.records.values() if r.invoice.seal == record.invoice.seal) == 1


async def test_cancels_through_the_organizations_pac(org_with_pacs, sims, job_ctx, redis):
    inv = await stamped_invoice(org_with_pacs, job_ctx, "org-cancel")
    out = (await org_with_pacs.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert out["userErrors"] == [] and out["invoice"]["status"] == "CANCELLING"
    assert await cancel_invoice_job(job_ctx, inv["id"]) == "CANCELLED"
    assert sims.ledger.get(inv["uuid"]).state == "Cancelado"


async def test_cancellation_waiting_for_the_receiver_is_polled_through_sat(org_with_pacs, sims, job_ctx, runtime,
                                                                          redis):
    inv = await stamped_invoice(org_with_pacs, job_ctx, "org-pending")
    sims.ledger.force_acceptance = True
    out = (await org_with_pacs.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert out["userErrors"] == []
    assert await cancel_invoice_job(job_ctx, inv["id"]) == "CANCELLATION_PENDING"
    assert await poll_cancellation_job(job_ctx, inv["id"]) == "CANCELLATION_PENDING"
    assert sims.ledger.answer("XIA190128J61", inv["uuid"], accept=True) == "1000"  # the receiver accepts
    assert await poll_cancellation_job(job_ctx, inv["id"]) == "CANCELLED"
