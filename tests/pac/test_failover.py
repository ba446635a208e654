"""FailoverPac over two simulated PACs (Finkok first, SW Sapien second): moves on when the first
is down, never lets a CFDI the first may have stamped be stamped by the second."""

from __future__ import annotations

import pytest

from sat.cfdi.xmlsafe import parse_xml
from sat.pac.base import PacError
from sat.pac.failover import FailoverPac
from sat.pac.transport import PacInDoubt

from .conftest import build_adapter


@pytest.fixture
async def pair(sims, csd_issuer, redis):
    first = build_adapter("finkok", "sim", csd_issuer, sims)
    second = build_adapter("swsapien", "sim", csd_issuer, sims)
    yield FailoverPac([first, second], redis, cooldown_seconds=300)
    await first.aclose()
    await second.aclose()


def timbres(sims, xml: bytes) -> list:
    return sims.records(parse_xml(xml).get("Sello"))


def stamp_calls(sims) -> tuple[int, int]:
    return sims.finkok_faults.calls.get("stamp", 0), sims.sw_faults.calls.get("stamp", 0)


async def test_first_pac_down_moves_to_the_next(pair, sims, new_cfdi):
    sims.finkok_faults.inject("503")
    xml = new_cfdi()
    result = await pair.stamp(xml, idempotency_key="fo-down")
    [record] = timbres(sims, xml)
    assert record.pac == "swsapien" and record.uuid == result.uuid


async def test_a_pac_that_failed_is_skipped_for_new_cfdis_while_it_cools_down(pair, sims, new_cfdi):
    sims.finkok_faults.inject("503")
    await pair.stamp(new_cfdi(), idempotency_key="fo-cool-1")
    finkok_calls = stamp_calls(sims)[0]
    xml = new_cfdi()
    await pair.stamp(xml, idempotency_key="fo-cool-2")
    assert stamp_calls(sims)[0] == finkok_calls and timbres(sims, xml)[0].pac == "swsapien"


async def test_answer_lost_after_stamping_stays_with_that_pac_and_is_recovered(pair, sims, new_cfdi):
    sims.finkok_faults.inject("hang_after")
    xml = new_cfdi()
    sw_before = stamp_calls(sims)[1]
    with pytest.raises(PacInDoubt):
        await pair.stamp(xml, idempotency_key="fo-lost")
    # Finkok is now cooling down, yet the retry asks Finkok (stamped) instead of going to SW.
    result = await pair.stamp(xml, idempotency_key="fo-lost")
    [record] = timbres(sims, xml)
    assert record.pac == "finkok" and result.uuid == record.uuid and result.previously_stamped
    assert stamp_calls(sims)[1] == sw_before


async def test_cfdi_in_doubt_waits_while_its_pac_is_still_unreachable(pair, sims, new_cfdi):
    sims.finkok_faults.inject("hang_after")
    xml = new_cfdi()
    with pytest.raises(PacInDoubt):
        await pair.stamp(xml, idempotency_key="fo-wait")
    sims.finkok_faults.inject("503", op="stamped")
    sw_before = stamp_calls(sims)[1]
    with pytest.raises(PacError) as caught:
        await pair.stamp(xml, idempotency_key="fo-wait")
    assert caught.value.transient and stamp_calls(sims)[1] == sw_before
    assert len(timbres(sims, xml)) == 1
    assert (await pair.stamp(xml, idempotency_key="fo-wait")).previously_stamped  # once Finkok answers


async def test_pac_that_never_stamped_frees_the_cfdi_for_the_next(pair, sims, new_cfdi):
    sims.finkok_faults.inject("hang")  # timed out before doing anything
    xml = new_cfdi()
    with pytest.raises(PacInDoubt):
        await pair.stamp(xml, idempotency_key="fo-free")
    result = await pair.stamp(xml, idempotency_key="fo-free")  # Finkok: "no timbre previo" (603)
    [record] = timbres(sims, xml)
    assert record.pac == "swsapien" and record.uuid == result.uuid and not result.previously_stamped
    assert sims.finkok_faults.calls.get("stamped", 0) >= 1


async def test_a_worker_that_died_mid_request_leaves_the_cfdi_with_that_pac(pair, sims, new_cfdi, redis):
    """The note is written before the request: a crash between send and answer is covered too."""
    xml = new_cfdi()
    await pair.stamp(xml, idempotency_key="fo-crash")  # stamped by Finkok
    await redis.set("pac:failover:attempt:fo-crash", b"finkok")  # as if the answer was lost in a crash
    sims.finkok_faults.inject("503", op="stamp", times=5)
    again = await pair.stamp(xml, idempotency_key="fo-crash")
    assert again.previously_stamped and len(timbres(sims, xml)) == 1


async def test_a_rejected_cfdi_is_not_sent_to_the_next_pac(pair, sims, new_cfdi):
    xml = new_cfdi().replace(b'Folio="', b'Folio="7')
    sw_before = stamp_calls(sims)[1]
    with pytest.raises(PacError) as caught:
        await pair.stamp(xml, idempotency_key="fo-bad")
    assert not caught.value.transient and stamp_calls(sims)[1] == sw_before


async def test_every_pac_down_is_a_temporary_error(pair, sims, new_cfdi):
    sims.finkok_faults.inject("503")
    sims.sw_faults.inject("503")
    with pytest.raises(PacError) as caught:
        await pair.stamp(new_cfdi(), idempotency_key="fo-all-down")
    assert caught.value.transient and not isinstance(caught.value, PacInDoubt)


async def test_receiver_side_goes_to_the_first_pac_that_answers(pair, sims, new_cfdi, csd_receiver):
    sims.ledger.force_acceptance = True
    stamped = await pair.stamp(new_cfdi(), idempotency_key="fo-recv")
    assert (await pair.cancel(stamped.uuid, "EKU9003173C9", "02", None)).status == "PENDING"
    for pac in pair.pacs:
        pac.csd = csd_receiver
    sims.finkok_faults.inject("503", op="get_pending")
    assert stamped.uuid in await pair.pending_cancellations("XIA190128J61")
    assert await pair.answer_cancellations("XIA190128J61", {stamped.uuid: True}) == {stamped.uuid: "1000"}
