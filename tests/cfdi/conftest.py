"""Shared fixtures for the CFDI engine tests: test CSDs, corpus, and an invoice factory."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from sat.cfdi.csd import Csd, load_csd
from sat.cfdi.models import Concept, Invoice, Issuer, Receiver, Tax

FIXTURES = Path(__file__).with_name("fixtures")
CSD_DIR = FIXTURES / "csd"
CORPUS_DIR = FIXTURES / "corpus"
SAT_CERTS_DIR = FIXTURES / "sat-certs"
PASSWORD = "12345678a"

# Inside every test CSD's validity window, so tests do not start failing when time passes.
CSD_2023_NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
OLD_CSD_NOW = datetime(2021, 6, 1, tzinfo=timezone.utc)


def read_csd_files(stem: str) -> tuple[bytes, bytes]:
    return (CSD_DIR / f"{stem}.cer").read_bytes(), (CSD_DIR / f"{stem}.key").read_bytes()


@pytest.fixture(scope="session")
def csd_eku() -> Csd:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    return load_csd(cer, key, PASSWORD, now=CSD_2023_NOW)


@pytest.fixture(scope="session")
def csd_xia() -> Csd:
    cer, key = read_csd_files("xia190128j61_csd")
    return load_csd(cer, key, PASSWORD, now=OLD_CSD_NOW)


def iva16() -> Tax:
    return Tax(tax="002", factor_type="Tasa", rate=Decimal("0.160000"))


def make_invoice(**overrides) -> Invoice:
    """A valid income invoice EKU9003173C9 -> XIA190128J61 (both personas morales), uncomputed."""
    invoice = Invoice(
        issued_at=datetime(2025, 6, 1, 10, 30, 0),
        place_of_issue="42501",
        voucher_type="I",
        exportation="01",
        currency="MXN",
        series="A",
        folio="123",
        payment_form="03",
        payment_method="PUE",
        issuer=Issuer(rfc="EKU9003173C9", name="ESCUELA KEMPER URGATE", tax_regime="601"),
        receiver=Receiver(
            rfc="XIA190128J61",
            name="XENON INDUSTRIAL ARTICLES",
            tax_zip_code="76343",
            tax_regime="601",
            cfdi_use="G03",
        ),
        concepts=[
            Concept(
                product_code="84111506",
                quantity=Decimal("2"),
                unit_code="E48",
                description="Servicio de facturación",
                unit_price=Decimal("1234.56"),
                tax_object="02",
                transferred_taxes=[iva16()],
            )
        ],
    )
    return replace(invoice, **overrides)


def make_payment_invoice() -> Invoice:
    """A CFDI de pago (type P) settling half of a PPD invoice, with IVA per related document."""
    from sat.cfdi.models import Payment, PaymentsComplement, PaymentTax, PaymentTotals, RelatedDocument

    doc_tax = PaymentTax("002", "Tasa", Decimal("0.160000"), Decimal("1000.00"), Decimal("160.00"))
    payment = Payment(
        paid_at=datetime(2025, 5, 30, 12, 0, 0),
        payment_form="03",
        currency="MXN",
        amount=Decimal("1160.00"),
        exchange_rate=Decimal("1"),
        related_documents=[
            RelatedDocument(
                uuid="5FB2822E-396D-4725-8521-CDC4BDD20CCF",
                currency="MXN",
                installment=1,
                previous_balance=Decimal("2320.00"),
                amount_paid=Decimal("1160.00"),
                remaining_balance=Decimal("1160.00"),
                tax_object="02",
                series="A",
                folio="100",
                exchange_rate=Decimal("1"),
                transferred_taxes=[doc_tax],
            )
        ],
        transferred_taxes=[PaymentTax("002", "Tasa", Decimal("0.160000"), Decimal("1000.00"), Decimal("160.00"))],
    )
    return make_invoice(
        voucher_type="P",
        currency="XXX",
        payment_form=None,
        payment_method=None,
        series="P",
        folio="7",
        receiver=Receiver("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "76343", "601", "CP01"),
        concepts=[Concept("84111506", Decimal("1"), "ACT", "Pago", Decimal("0"), "01")],
        payments=PaymentsComplement(
            totals=PaymentTotals(
                total_amount=Decimal("1160.00"),
                transferred_base_iva16=Decimal("1000.00"),
                transferred_iva16=Decimal("160.00"),
            ),
            payments=[payment],
        ),
    )
