"""Each business rule refuses its bad input with its code; a good invoice has no issues."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from sat.cfdi.models import Concept, GlobalInformation, Receiver, Tax
from sat.cfdi.rules import check_invoice, person_type
from sat.cfdi.totals import compute_totals

from .conftest import iva16, make_invoice, make_payment_invoice

NOW = datetime(2025, 6, 1, 12, 0, 0)  # local time at LugarExpedicion; the invoice is from 10:30


def codes(inv, now=NOW) -> set[str]:
    return {i.code for i in check_invoice(inv, now)}


def receiver(**kw) -> Receiver:
    base = Receiver("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "76343", "601", "G03")
    return replace(base, **kw)


def concept(**kw) -> Concept:
    base = Concept("84111506", Decimal("1"), "E48", "Servicio", Decimal("100"), "02", transferred_taxes=[iva16()])
    return replace(base, **kw)


def test_valid_invoices_have_no_issues() -> None:
    assert check_invoice(make_invoice(), NOW) == []
    assert check_invoice(make_payment_invoice(), NOW) == []
    public = make_invoice(
        receiver=Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01"),
        global_information=GlobalInformation("04", "05", 2025),
    )
    assert check_invoice(public, NOW) == []
    fisica = make_invoice(
        receiver=receiver(rfc="CACX7605101P8", name="XOCHILT CASAS CHAVEZ", tax_regime="612", cfdi_use="D01")
    )
    assert check_invoice(fisica, NOW) == []


def test_issue_carries_path_and_spanish_message() -> None:
    (issue,) = check_invoice(make_invoice(receiver=receiver(cfdi_use="D01")), NOW)
    assert (issue.code, issue.field_path) == ("CFDI40161", "receiver.cfdi_use")
    assert "persona moral" in issue.message_es


@pytest.mark.parametrize(
    "overrides,code",
    [
        # UsoCFDI vs receiver regime / person type
        ({"receiver": receiver(cfdi_use="D01")}, "CFDI40161"),  # personal deduction for a moral
        ({"receiver": receiver(rfc="CACX7605101P8", tax_regime="605", cfdi_use="G03")}, "CFDI40161"),  # salaried
        ({"receiver": receiver(cfdi_use="P01")}, "CFDI40160"),  # removed in 4.0
        # Regime vs RFC type
        ({"receiver": receiver(tax_regime="612")}, "CFDI40158"),  # física regime, 12-char RFC
        ({"receiver": receiver(rfc="CACX7605101P8", tax_regime="601")}, "CFDI40158"),  # moral regime, 13-char RFC
        ({"receiver": receiver(rfc="ABC12")}, "APP_RFC_FORMATO"),  # 40143 is SAT's list: PAC-only
        ({"issuer": replace(make_invoice().issuer, tax_regime="612")}, "CFDI40141"),
        # Generic RFCs
        ({"receiver": Receiver("XAXX010101000", "JUAN PEREZ", "42501", "601", "S01")}, "CFDI40159"),
        ({"receiver": Receiver("XAXX010101000", "JUAN PEREZ", "42501", "616", "G03")}, "CFDI40161"),
        ({"receiver": Receiver("XAXX010101000", "JUAN PEREZ", "01000", "616", "S01")}, "CFDI40149"),
        ({"receiver": Receiver("XEXX010101000", "ACME INC", "01000", "616", "S01", "USA")}, "CFDI40149"),
        ({"receiver": Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01")}, "CFDI40130"),
        ({"global_information": GlobalInformation("04", "05", 2025)}, "APP_INFORMACION_GLOBAL"),
        (
            {
                "receiver": Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01"),
                "global_information": GlobalInformation("05", "05", 2025),
            },
            "CFDI40135",
        ),
        (
            {
                "receiver": Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01"),
                "global_information": GlobalInformation("04", "14", 2025),
            },
            "CFDI40134",
        ),
        (
            {
                "receiver": Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01"),
                "global_information": GlobalInformation("04", "05", 2019),
            },
            "CFDI40136",
        ),
        ({"receiver": receiver(tax_residence="USA")}, "CFDI40151"),
        ({"receiver": Receiver("XEXX010101000", "ACME", "42501", "616", "S01", "MEX")}, "CFDI40152"),
        ({"receiver": Receiver("XEXX010101000", "ACME", "42501", "616", "S01", None, "123456789")}, "CFDI40153"),
        # Exchange rate
        ({"currency": "USD"}, "CFDI40115"),
        ({"exchange_rate": Decimal("17.5")}, "CFDI40114"),
        # Payment method / form
        ({"payment_method": "PUE", "payment_form": "99"}, "APP_PUE_FORMA_PAGO_99"),
        ({"payment_method": "PPD", "payment_form": "03"}, "CFDI40105"),
        ({"payment_method": None}, "APP_PAGO_REQUERIDO"),
        # Tax object
        ({"concepts": [concept(transferred_taxes=[])]}, "CFDI40171"),
        ({"concepts": [concept(tax_object="01")]}, "CFDI40172"),
        # Discount
        ({"concepts": [concept(discount=Decimal("100.01"))]}, "CFDI40169"),
        # Catalog membership
        ({"payment_form": "77"}, "CFDI40104"),
        ({"currency": "ZZZ", "exchange_rate": Decimal("1.5")}, "CFDI40113"),
        ({"place_of_issue": "00001"}, "CFDI40126"),
        ({"exportation": "09"}, "CFDI40123"),
        ({"receiver": receiver(tax_regime="999")}, "CFDI40157"),
        ({"receiver": receiver(cfdi_use="Z99")}, "CFDI40160"),
        ({"concepts": [concept(product_code="99999999")]}, "CFDI40162"),
        ({"concepts": [concept(unit_code="XYZ1")]}, "CFDI40165"),
        ({"concepts": [concept(tax_object="99")]}, "CFDI40170"),
        ({"concepts": [concept(transferred_taxes=[Tax("009", "Tasa", Decimal("0.16"))])]}, "CFDI40175"),
        ({"concepts": [concept(transferred_taxes=[Tax("002", "Tasa", Decimal("0.15"))])]}, "CFDI40179"),
        ({"concepts": [concept(withheld_taxes=[Tax("001", "Tasa", Decimal("0.40"))])]}, "CFDI40185"),
        ({"concepts": [concept(withheld_taxes=[Tax("002", "Exento")])]}, "CFDI40184"),
        ({"concepts": [concept(unit_price=Decimal("0"))]}, "CFDI40166"),
        ({"concepts": [concept(discount=Decimal("100"))]}, "CFDI40174"),  # fully discounted, still taxed
        (
            {"concepts": [concept(discount=Decimal("100"), withheld_taxes=[Tax("001", "Tasa", Decimal("0.1"))])]},
            "CFDI40181",
        ),
    ],
)
def test_rule_refuses_bad_input(overrides: dict, code: str) -> None:
    assert code in codes(make_invoice(**overrides))


def test_catalog_codes_inside_payments_and_third_parties() -> None:
    from sat.cfdi.models import ThirdParty

    pago = make_payment_invoice()
    pago.payments.payments[0].payment_form = "77"
    pago.payments.payments[0].related_documents[0].currency = "ZZZ"
    issues = {(i.code, i.field_path) for i in check_invoice(pago, NOW)}
    assert ("APP_CATALOGO", "payments.payments[0].payment_form") in issues
    assert ("APP_CATALOGO", "payments.payments[0].related_documents[0].currency") in issues
    third = make_invoice(concepts=[concept(third_party=ThirdParty("CACX7605101P8", "X", "999", "42501"))])
    assert "CFDI40191" in codes(third)


def test_exchange_rate_on_payment_currency_xxx() -> None:
    assert "CFDI40116" in codes(replace(make_payment_invoice(), exchange_rate=Decimal("1")))


def test_payment_cfdi_constraints() -> None:
    bad = replace(
        make_payment_invoice(),
        payment_form="03",
        payment_method="PUE",
        currency="MXN",
        payments=None,
        receiver=receiver(cfdi_use="G03"),
    )
    assert {"CFDI40103", "CFDI40125", "APP_USO_CP01", "APP_PAGOS_REQUERIDO"} <= codes(bad)


def test_72_hour_window() -> None:
    inv = make_invoice()  # 2025-06-01T10:30:00 local
    assert "401" not in codes(inv, datetime(2025, 6, 4, 10, 0, 0))  # 71.5 h later
    assert "401" in codes(inv, datetime(2025, 6, 4, 11, 0, 0))  # 72.5 h later
    assert "CFDI40101" in codes(inv, datetime(2025, 6, 1, 10, 0, 0))  # Fecha 30 min in the future
    # An aware `now` is converted to central Mexico time (UTC-6): 16:40 UTC = 10:40 local.
    assert codes(inv, datetime(2025, 6, 1, 16, 40, tzinfo=timezone.utc)) == set()
    assert "CFDI40101" in codes(inv, datetime(2025, 6, 1, 16, 0, tzinfo=timezone.utc))


def test_date_window_uses_the_time_zone_of_the_place_of_issue() -> None:
    tijuana = make_invoice(place_of_issue="22000")  # 10:30 local; Tijuana is UTC-7 in June
    assert "CFDI40101" in codes(tijuana, datetime(2025, 6, 1, 17, 0, tzinfo=timezone.utc))  # 10:00 there
    assert "CFDI40101" not in codes(tijuana, datetime(2025, 6, 1, 17, 40, tzinfo=timezone.utc))
    cancun = make_invoice(place_of_issue="77500")  # UTC-5
    assert "CFDI40101" not in codes(cancun, datetime(2025, 6, 1, 15, 40, tzinfo=timezone.utc))
    assert "CFDI40101" in codes(make_invoice(), datetime(2025, 6, 1, 15, 40, tzinfo=timezone.utc))


def test_totals_consistency_on_stored_amounts() -> None:
    # Cantidad written with 3 decimals: SAT's tolerance is (2 ∓ 0.0005) x (1234.56 ∓ 0.005).
    good = compute_totals(make_invoice(concepts=[concept(quantity=Decimal("2.000"), unit_price=Decimal("1234.56"))]))
    assert check_invoice(good, NOW) == []
    c = good.concepts[0]
    wrong_amount = replace(good, concepts=[replace(c, amount=c.amount + Decimal("1.00"))])
    assert {"CFDI40167", "CFDI40108"} <= codes(wrong_amount)
    t = c.transferred_taxes[0]
    wrong_tax = replace(good, concepts=[replace(c, transferred_taxes=[replace(t, amount=t.amount + Decimal("0.05"))])])
    assert {"CFDI40180", "CFDI40221"} <= codes(wrong_tax)
    assert "CFDI40119" in codes(replace(good, total=good.total + Decimal("0.01")))
    assert "CFDI40205" in codes(replace(good, total_transferred=Decimal("1.00")))
    # Inside the tolerance (2469.12 ± 0.62) a different rounding is accepted.
    tolerated = replace(good, concepts=[replace(c, amount=Decimal("2469.50"))])
    assert "CFDI40167" not in codes(tolerated)


def test_integer_quantity_has_sat_loose_tolerance() -> None:
    # SAT's formula uses half a unit of the last written digit: Cantidad "2" admits 1.5..2.5 units.
    good = compute_totals(make_invoice())
    c = good.concepts[0]
    assert "CFDI40167" not in codes(replace(good, concepts=[replace(c, amount=c.amount + Decimal("500"))]))
    assert "CFDI40167" in codes(replace(good, concepts=[replace(c, amount=c.amount * 2)]))


def test_invoice_discount_above_subtotal() -> None:
    good = compute_totals(make_invoice())
    assert "CFDI40110" in codes(replace(good, discount=good.subtotal + 1))


def test_person_type() -> None:
    assert person_type("EKU9003173C9") == "moral"
    assert person_type("CACX7605101P8") == "fisica"
    assert person_type("XAXX010101000") == "generic_national"
    assert person_type("XEXX010101000") == "generic_foreign"
    assert person_type("X") is None


def test_traslado_and_payment_have_zero_totals() -> None:
    traslado = compute_totals(
        make_invoice(voucher_type="T", payment_form=None, payment_method=None, receiver=receiver(cfdi_use="S01"))
    )
    assert (traslado.subtotal, traslado.total, traslado.transferred_totals) == (Decimal("0.00"), Decimal("0.00"), [])
    assert check_invoice(traslado, NOW) == []
    assert "CFDI40109" in codes(replace(traslado, total=Decimal("10.00")))
    assert "CFDI40201" in codes(replace(traslado, withheld_totals=compute_totals(make_invoice()).transferred_totals))
