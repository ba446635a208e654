"""The typed draft (one shape from input to row to engine) and amounts in one client shape."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from sat import cfdi
from subgraphs.invoice import models as m
from subgraphs.invoice.draft import Draft, engine_concepts, parse
from subgraphs.invoice.service import money
from tests.invoice.conftest import concept

GET_TAXES = """query($id: ID!) { invoice(id: $id) { total subtotal totalTaxesTransferred
  concepts { quantity unitPrice taxes { tax factorType rate base withholding } } } }"""


@pytest.mark.parametrize("currency,value,expected", [
    ("MXN", "3480.000000", "3480.00"), ("MXN", "0.005", "0.01"), ("JPY", "1500.000000", "1500"),
    ("BHD", "12.345600", "12.346"), ("CLF", "1.000050", "1.0001"), ("USD", "7", "7.00"),
])
def test_money_has_the_currency_decimals(currency, value, expected):
    assert str(money(Decimal(value), currency)) == expected


async def test_an_amount_reads_the_same_everywhere(org, runtime):
    """createInvoice, invoice(id) and the event data: one decimal string with the currency's decimals."""
    inv = await org.create_invoice(concepts=[concept("1500.00", "2")])
    assert (inv["subtotal"], inv["totalTaxesTransferred"], inv["total"]) == ("3000.00", "480.00", "3480.00")
    got = (await org.ok(GET_TAXES, {"id": inv["id"]}))["invoice"]
    assert (got["subtotal"], got["totalTaxesTransferred"], got["total"]) == ("3000.00", "480.00", "3480.00")
    await org.stamp(inv["id"], "amounts")
    async with runtime.sessionmaker() as session:
        payload = await session.scalar(select(m.outbox.c.payload).where(
            m.outbox.c.aggregate_id == f"invoice:{inv['id']}", m.outbox.c.type == "invoice.stamping_requested"))
    assert payload["total"] == "3480.00"


async def test_a_tax_base_stated_by_the_client_is_carried_to_the_engine(org, runtime):
    line = {**concept("24.00", "40"), "taxes": [
        {"tax": "003", "factorType": "Cuota", "rate": "6.450000", "base": "40"},
        {"tax": "002", "factorType": "Tasa", "rate": "0.160000"},
        {"tax": "002", "factorType": "Exento", "base": "960.00", "withholding": False},
    ]}
    inv = await org.create_invoice(concepts=[line])
    got = (await org.ok(GET_TAXES, {"id": inv["id"]}))["invoice"]
    assert got["concepts"][0]["taxes"] == [
        {"tax": "003", "factorType": "Cuota", "rate": "6.450000", "base": "40", "withholding": False},
        {"tax": "002", "factorType": "Tasa", "rate": "0.160000", "base": None, "withholding": False},
        {"tax": "002", "factorType": "Exento", "rate": None, "base": "960.00", "withholding": False},
    ]
    async with runtime.sessionmaker() as session:
        row = await session.get(m.Invoice, uuid.UUID(inv["id"]))
    taxes = engine_concepts(Draft.model_validate(row.document))[0].transferred_taxes
    assert [(t.tax, t.factor_type, t.rate, t.base) for t in taxes] == [
        ("003", "Cuota", Decimal("6.450000"), Decimal("40")), ("002", "Tasa", Decimal("0.160000"), None),
        ("002", "Exento", None, Decimal("960.00"))]


def test_the_draft_round_trips_through_its_row_exactly():
    draft, problems = parse({"customer_id": str(uuid.uuid4()), "exchange_rate": "17.5", "concepts": [
        {"product_code": "84111506", "quantity": "1.5", "unit_code": "E48", "description": "x", "unit_price": "0.10",
         "taxes": [{"tax": "002", "rate": "0.160000", "base": "0.15"}]}]})
    assert problems == []
    again = Draft.model_validate(draft.row())
    assert again == draft and again.row() == draft.row()
    assert draft.row()["concepts"][0]["unit_price"] == "0.10"  # the exact string entered, never a float


def test_every_problem_is_named_by_the_clients_path():
    _, problems = parse({"type": "I", "concepts": [
        {"product_code": "1", "quantity": "-1", "unit_code": "E48", "description": " ", "unit_price": "NaN",
         "taxes": [{"tax": "002", "factor_type": "Tasa", "rate": "0.1234567", "base": "-1"}]}]})
    assert {(".".join(p.field), p.code) for p in problems} == {
        ("input.concepts.0.quantity", "MUST_BE_POSITIVE"), ("input.concepts.0.description", "REQUIRED"),
        ("input.concepts.0.unitPrice", "INVALID_NUMBER"), ("input.concepts.0.taxes.0.rate", "TOO_MANY_DECIMALS"),
        ("input.concepts.0.taxes.0.base", "MUST_NOT_BE_NEGATIVE")}
    _, problems = parse({"type": "E", "concepts": []})
    assert {(".".join(p.field), p.code) for p in problems} == {
        ("input.customerId", "REQUIRED"), ("input.concepts", "REQUIRED"), ("input.related", "REQUIRED")}
