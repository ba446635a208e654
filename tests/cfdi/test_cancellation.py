from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from sat.cfdi.cancellation import (
    acceptance_exemption,
    cancellation_deadline,
    check_cancellation_request,
    requires_receiver_acceptance,
)
from sat.cfdi.models import GlobalInformation, Receiver
from sat.cfdi.totals import compute_totals

from .conftest import make_invoice, make_payment_invoice

UUID_A = "5FB2822E-396D-4725-8521-CDC4BDD20CCF"
UUID_B = "6F0B4A9E-4A5B-4F6C-9D2E-1234567890AB"
# make_invoice(): Sunday 2025-06-01, total 2864.18 MXN. The next business day is Monday 06-02.
LATER = datetime(2025, 6, 10, 9, 0)


def test_reason_01_requires_replacement_uuid() -> None:
    assert [i.code for i in check_cancellation_request("01", None, UUID_A)] == ["REPLACEMENT_REQUIRED"]
    assert [i.code for i in check_cancellation_request("01", "nope", UUID_A)] == ["INVALID_UUID"]
    assert [i.code for i in check_cancellation_request("01", UUID_A, UUID_A)] == ["SELF_REPLACEMENT"]
    assert check_cancellation_request("01", UUID_B, UUID_A) == []
    assert [i.code for i in check_cancellation_request("02", UUID_B, UUID_A)] == ["REPLACEMENT_NOT_ALLOWED"]
    assert [i.code for i in check_cancellation_request("05", None, UUID_A)] == ["INVALID_REASON"]
    for reason in ("02", "03", "04"):
        assert check_cancellation_request(reason, None, UUID_A) == []


def test_income_above_1000_after_next_business_day_needs_acceptance() -> None:
    inv = compute_totals(make_invoice())
    assert requires_receiver_acceptance(inv, LATER)
    assert not requires_receiver_acceptance(inv, datetime(2025, 6, 2, 23, 0))  # next business day
    assert requires_receiver_acceptance(inv, datetime(2025, 6, 3, 0, 1))


def test_exempt_cases() -> None:
    inv = compute_totals(make_invoice())
    assert not requires_receiver_acceptance(replace(inv, total=Decimal("1000.00")), LATER)
    assert requires_receiver_acceptance(replace(inv, total=Decimal("1000.01")), LATER)
    # Converted by the exchange rate: 100 USD x 17 = 1700 MXN needs acceptance.
    assert requires_receiver_acceptance(
        replace(inv, total=Decimal("100"), currency="USD", exchange_rate=Decimal("17")), LATER
    )
    assert not requires_receiver_acceptance(
        replace(inv, total=Decimal("50"), currency="USD", exchange_rate=Decimal("17")), LATER
    )
    for voucher_type in ("E", "T", "N"):
        assert not requires_receiver_acceptance(replace(inv, voucher_type=voucher_type), LATER)
    public = replace(
        inv,
        receiver=Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01"),
        global_information=GlobalInformation("04", "05", 2025),
    )
    assert acceptance_exemption(public, LATER) == "Operaciones con el público en general"
    foreign = replace(inv, receiver=Receiver("XEXX010101000", "ACME", "42501", "616", "S01", "USA"))
    assert not requires_receiver_acceptance(foreign, LATER)
    assert not requires_receiver_acceptance(inv, LATER, issuer_exempt=True)


def test_payment_cfdi_small_total_still_needs_acceptance() -> None:
    # Fraction I (<= $1,000) excludes CFDIs with the payments complement (their Total is 0).
    pago = compute_totals(make_payment_invoice())
    assert requires_receiver_acceptance(pago, LATER)


def test_deadline() -> None:
    assert cancellation_deadline(make_invoice()).isoformat() == "2026-01-31"
