"""Finkok and SW Sapien adapters: the same tests against the simulators and (with credentials) the
providers' test environments. Fault-injection tests skip themselves on the real environments."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sat import cfdi
from sat.cfdi.xmlsafe import parse_xml
from sat.pac.base import PacError
from sat.pac.sandbox import certificate_lookup
from sat.pac.transport import PacInDoubt


def seal_of(xml: bytes) -> str:
    return parse_xml(xml).get("Sello")


def timbres_for(target, xml: bytes) -> list:
    return target.sims.records(seal_of(xml)) if target.sims else []


async def test_stamp_returns_the_cfdi_with_a_valid_timbre(target, new_cfdi):
    xml = new_cfdi()
    result = await target.pac.stamp(xml, idempotency_key="k-" + seal_of(xml)[-12:])
    stamped = cfdi.parse_cfdi(result.xml)
    assert stamped.stamp.uuid == result.uuid and not result.previously_stamped
    assert stamped.stamp.cfd_seal == seal_of(xml)
    if target.sims:
        assert cfdi.verify_cfdi(result.xml, certificate_lookup).ok
        assert len(timbres_for(target, xml)) == 1


async def test_calls_reuse_one_connection(target, new_cfdi):
    faults = target.faults()
    for _ in range(3):
        await target.pac.stamp(new_cfdi())
    assert len(faults.peers) == 1


async def test_sending_the_same_cfdi_again_recovers_the_same_timbre(target, new_cfdi):
    xml = new_cfdi()
    first = await target.pac.stamp(xml, idempotency_key="same-" + seal_of(xml)[-12:])
    again = await target.pac.stamp(xml, idempotency_key="same-" + seal_of(xml)[-12:])
    assert again.uuid == first.uuid and again.previously_stamped
    assert (await target.pac.recover(xml, idempotency_key="same-" + seal_of(xml)[-12:])).uuid == first.uuid


async def test_an_answer_lost_after_stamping_is_recovered_not_stamped_twice(target, new_cfdi):
    faults = target.faults()
    xml = new_cfdi()
    faults.inject("hang_after")
    with pytest.raises(PacInDoubt):
        await target.pac.stamp(xml, idempotency_key="lost-" + seal_of(xml)[-12:])
    [record] = timbres_for(target, xml)  # the PAC did stamp it
    recovered = await target.pac.recover(xml, idempotency_key="lost-" + seal_of(xml)[-12:])
    assert recovered.uuid == record.uuid and recovered.previously_stamped
    retried = await target.pac.stamp(xml, idempotency_key="lost-" + seal_of(xml)[-12:])
    assert retried.uuid == record.uuid and retried.previously_stamped
    assert len(timbres_for(target, xml)) == 1


async def test_a_hang_before_stamping_is_in_doubt_and_nothing_was_stamped(target, new_cfdi):
    target.faults().inject("hang")
    xml = new_cfdi()
    with pytest.raises(PacInDoubt):
        await target.pac.stamp(xml)
    assert timbres_for(target, xml) == []


@pytest.mark.parametrize("status, in_doubt", [("503", False), ("500", True)])
async def test_server_errors_are_temporary_and_say_whether_the_work_may_be_done(target, new_cfdi, status, in_doubt):
    target.faults().inject(status)
    with pytest.raises(PacError) as caught:
        await target.pac.stamp(new_cfdi())
    assert caught.value.transient and isinstance(caught.value, PacInDoubt) is in_doubt


async def test_a_tampered_cfdi_is_refused_for_good(target, new_cfdi):
    xml = new_cfdi().replace(b'Folio="', b'Folio="9')
    with pytest.raises(PacError) as caught:
        await target.pac.stamp(xml)
    assert not caught.value.transient and caught.value.code in ("302", "CFDI40102", "301")


async def test_cancel_with_the_csd_and_read_the_status_from_sat(target, new_cfdi):
    if target.sims is None:
        pytest.skip("test-environment CFDIs never reach SAT's status service")
    result = await target.pac.stamp(new_cfdi())
    inv = cfdi.parse_cfdi(result.xml)
    answer = await target.pac.cancel(result.uuid, inv.issuer.rfc, "02", None,
                                     receiver_rfc=inv.receiver.rfc, total=inv.total)
    assert answer.status == "CANCELLED"  # same day as issued: no acceptance needed (RMF 2.7.1.35)
    assert await target.pac.status(result.uuid, issuer_rfc=inv.issuer.rfc, receiver_rfc=inv.receiver.rfc,
                                   total=inv.total) == "CANCELLED"
    again = await target.pac.cancel(result.uuid, inv.issuer.rfc, "02", None,
                                    receiver_rfc=inv.receiver.rfc, total=inv.total)
    assert again.status == "CANCELLED"  # 202: asked before, same outcome


async def test_cancelling_someone_elses_cfdi_is_refused(target, new_cfdi):
    if target.sims is None:
        pytest.skip("needs a CFDI of another issuer")
    result = await target.pac.stamp(new_cfdi())
    with pytest.raises(PacError) as caught:
        await target.pac.cancel(result.uuid, "XIA190128J61", "02", None)
    assert not caught.value.transient


async def test_receiver_lists_pending_requests_and_accepts_or_rejects(target, new_cfdi, csd_receiver):
    if target.sims is None:
        pytest.skip("needs cancellation requests against the test receiver")
    target.sims.ledger.force_acceptance = True
    stamped = [await target.pac.stamp(new_cfdi()) for _ in range(2)]
    for s in stamped:
        assert (await target.pac.cancel(s.uuid, "EKU9003173C9", "02", None)).status == "PENDING"
    target.pac.csd = csd_receiver  # the receiver answers with its own CSD
    pending = await target.pac.pending_cancellations("XIA190128J61")
    assert {s.uuid for s in stamped} <= set(pending)
    codes = await target.pac.answer_cancellations("XIA190128J61", {stamped[0].uuid: True, stamped[1].uuid: False})
    assert codes == {stamped[0].uuid: "1000", stamped[1].uuid: "1000"}
    assert not {s.uuid for s in stamped} & set(await target.pac.pending_cancellations("XIA190128J61"))
    statuses = [await target.pac.status(s.uuid, issuer_rfc="EKU9003173C9", receiver_rfc="XIA190128J61",
                                        total=cfdi.parse_cfdi(s.xml).total) for s in stamped]
    assert statuses == ["CANCELLED", "REJECTED"]


async def test_answering_with_a_csd_of_another_rfc_is_refused(target, new_cfdi, csd_issuer):
    if target.sims is None:
        pytest.skip("simulator only")
    target.pac.csd = csd_issuer
    with pytest.raises(PacError):
        await target.pac.answer_cancellations("XIA190128J61", {"5FB2822E-396D-4725-8521-CDC4BDD20CCF": True})


async def test_cancelling_without_a_csd_is_a_clear_error(target):
    target.pac.csd = None
    with pytest.raises(PacError) as caught:
        await target.pac.cancel("5FB2822E-396D-4725-8521-CDC4BDD20CCF", "EKU9003173C9", "02", None)
    assert caught.value.code == "CSD_REQUIRED"


async def test_status_needs_the_cfdi_expression(target):
    with pytest.raises(PacError) as caught:
        await target.pac.status("5FB2822E-396D-4725-8521-CDC4BDD20CCF")
    assert caught.value.code == "STATUS_NEEDS_CFDI"


async def test_unknown_cfdi_status_is_not_found(target):
    if target.sims is None:
        pytest.skip("simulator only")
    assert await target.pac.status("5FB2822E-396D-4725-8521-CDC4BDD20CCF", issuer_rfc="EKU9003173C9",
                                   receiver_rfc="XIA190128J61", total=Decimal("10.00")) == "NOT_FOUND"
