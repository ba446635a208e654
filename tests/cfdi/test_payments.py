from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sat.cfdi.models import Payment, PaymentsComplement, PaymentTax, PaymentTotals, RelatedDocument
from sat.cfdi.payments import compute_payments


def _doc(uuid: str, currency: str, paid: str, eq: str | None, base: str, iva: str, isr: str | None = None):
    return RelatedDocument(
        uuid=uuid,
        currency=currency,
        installment=2,
        previous_balance=Decimal("5000.00"),
        amount_paid=Decimal(paid),
        remaining_balance=Decimal("0"),
        tax_object="02",
        exchange_rate=Decimal(eq) if eq else None,
        transferred_taxes=[PaymentTax("002", "Tasa", Decimal("0.160000"), Decimal(base), Decimal(iva))],
        withheld_taxes=[PaymentTax("001", "Tasa", Decimal("0.100000"), Decimal(base), Decimal(isr))] if isr else [],
    )


def test_usd_payment_settling_mxn_and_usd_documents() -> None:
    # 100 USD paid at 17.50 MXN/USD: settles 580.00 MXN of one invoice (EquivalenciaDR 17.5 MXN
    # per USD) and 58.00 USD of another (EquivalenciaDR 1).
    payment = Payment(
        paid_at=datetime(2025, 6, 2, 12, 0),
        payment_form="03",
        currency="USD",
        amount=None,
        exchange_rate=Decimal("17.50"),
        related_documents=[
            _doc("5FB2822E-396D-4725-8521-CDC4BDD20CCF", "MXN", "700.00", "17.5", "500.00", "80.00", "50.00"),
            _doc("6F0B4A9E-4A5B-4F6C-9D2E-1234567890AB", "USD", "58.00", "1", "50.00", "8.00"),
        ],
    )
    result = compute_payments(PaymentsComplement(totals=PaymentTotals(Decimal(0)), payments=[payment]))
    (p,) = result.payments
    assert p.amount == Decimal("98.00")  # 700/17.5 + 58
    assert [d.remaining_balance for d in p.related_documents] == [Decimal("4300.00"), Decimal("4942.00")]
    (iva,) = p.transferred_taxes
    assert (iva.base, iva.amount) == (Decimal("78.571429"), Decimal("12.571429"))  # 500/17.5+50, 80/17.5+8
    (isr,) = p.withheld_taxes
    assert isr.amount == Decimal("2.857143")
    t = result.totals
    assert t.total_amount == Decimal("1715.00")  # 98 USD x 17.50
    assert (t.transferred_base_iva16, t.transferred_iva16) == (Decimal("1375.00"), Decimal("220.00"))
    assert t.withheld_isr == Decimal("50.00") and t.withheld_iva is None


def test_unrounded_amount_paid_prints_half_up_everywhere() -> None:
    # Regression: build.fmt_money used Decimal's default (half-even) rounding, so an unrounded
    # amount_paid printed ImpPagado="2.34" while Monto (round_money, half-up) was "2.35".
    from sat.cfdi.build import fmt_money, payments_element
    from sat.cfdi.models import PAGO20_NS

    assert fmt_money(Decimal("2.345"), 2) == "2.35"
    assert fmt_money(Decimal("0.125"), 2) == "0.13"
    doc = RelatedDocument(
        uuid="5FB2822E-396D-4725-8521-CDC4BDD20CCF",
        currency="MXN",
        installment=1,
        previous_balance=Decimal("10.00"),
        amount_paid=Decimal("2.345"),
        remaining_balance=Decimal("0"),
        tax_object="01",
    )
    payment = Payment(
        paid_at=datetime(2025, 6, 2, 12, 0),
        payment_form="03",
        currency="MXN",
        amount=None,
        exchange_rate=Decimal("1"),
        related_documents=[doc],
    )
    result = compute_payments(PaymentsComplement(totals=PaymentTotals(Decimal(0)), payments=[payment]))
    pago = payments_element(result).find(f"{{{PAGO20_NS}}}Pago")
    (docto,) = pago.findall(f"{{{PAGO20_NS}}}DoctoRelacionado")
    assert docto.get("ImpPagado") == "2.35"
    assert pago.get("Monto") == "2.35"
    assert Decimal(pago.get("Monto")) == sum(Decimal(d.get("ImpPagado")) for d in pago.findall(f"{{{PAGO20_NS}}}DoctoRelacionado"))


def test_prorate_document_taxes_follows_the_share_paid() -> None:
    """TrasladosDR of a partial payment: the invoice's summary scaled by ImpPagado / Total, each
    ImporteDR = round(BaseDR × TasaOCuotaDR); an exempt line keeps only its base."""
    from sat.cfdi.models import TaxTotal
    from sat.cfdi.payments import prorate_document_taxes

    summary = [
        TaxTotal("002", Decimal("160.00"), "Tasa", Decimal("0.160000"), Decimal("1000.00")),
        TaxTotal("002", None, "Exento", None, Decimal("500.00")),
    ]
    iva, exempt = prorate_document_taxes(summary, Decimal("1660.00"), Decimal("830.00"), 2)
    assert (iva.base, iva.amount, iva.rate) == (Decimal("500.00"), Decimal("80.00"), Decimal("0.160000"))
    assert (exempt.base, exempt.amount, exempt.rate) == (Decimal("250.00"), None, None)
    assert prorate_document_taxes(summary, Decimal("0"), Decimal("1"), 2)[0].base == Decimal("0.00")
