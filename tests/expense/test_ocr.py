"""Receipt OCR: the reading rules on text lines (always), the arq job's outcome with whatever engine
this machine has (DONE with the `ocr` extra, UNAVAILABLE without), and the engine on a generated
photo when it is installed."""

from __future__ import annotations

import random
import uuid
from datetime import date
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from bench.ocr_receipts import make_receipt
from subgraphs.expense import ocr, service
from workers.expense import ocr_receipt


def test_reading_rules_on_text_lines():
    s = ocr.suggestions_from_lines([
        "OXX0 TIENDA 1532", "RFC:CC08605231N4", "FECHA:28/03/202611:03", "CAFE 45.00",
        "SUBTOTAL 1,482.76", "IVA 16% 237.24", "TOTAL", "$1,720.00", "GRACIAS"])
    assert s == ocr.Suggestions(total=Decimal("1720.00"), date=date(2026, 3, 28), merchant_rfc="CCO8605231N4",
                                merchant_name="OXXO TIENDA 1532")
    assert ocr.suggestions_from_lines(["TOTAL $99.90", "12 NOV 2026"]).date == date(2026, 11, 12)
    assert ocr.suggestions_from_lines(["SUBTOTAL 10.00"]).total is None
    assert ocr.suggestions_from_lines(["RFC: XXX000000XX0"]).merchant_rfc is None  # not a valid RFC
    assert ocr.suggestions_from_lines([]) == ocr.Suggestions()


@pytest.mark.skipif(ocr.engine() is None, reason="the `ocr` extra is not installed")
def test_the_engine_reads_a_generated_noisy_rotated_jpeg():
    image, truth = make_receipt(random.Random(4))
    got = ocr.suggestions_from_lines(ocr.engine()(image))
    assert got.total == truth["total"] and got.merchant_rfc == truth["merchant_rfc"]


REQUEST = """mutation($id: ID!, $t: String!, $s: Int!) { requestReceiptUpload(expenseId: $id, contentType: $t, size: $s) {
  receiptId uploadUrl userErrors { code } } }"""
RECEIPTS = "query($id: ID!) { expense(id: $id) { receipts { id contentType ocr { status suggestions { total merchantRfc } } } } }"


async def test_an_uploaded_photo_gets_its_ocr_outcome(team, expense_http, runtime):
    e = (await team.ok(team.member, "mutation { createExpense(input: {amount: \"1\", date: \"2026-11-20\", "
                                    "paymentMethod: CASH}) { expense { id } } }"))["createExpense"]["expense"]
    image, truth = make_receipt(random.Random(4))
    up = (await team.ok(team.member, REQUEST, {"id": e["id"], "t": "image/jpeg", "s": len(image)}))["requestReceiptUpload"]
    parts = urlsplit(up["uploadUrl"])
    assert (await expense_http.put(f"{parts.path}?{parts.query}", content=image)).status_code == 201
    [r] = (await team.ok(team.member, RECEIPTS, {"id": e["id"]}))["expense"]["receipts"]
    assert r["ocr"] == {"status": "PENDING", "suggestions": None}
    status = await ocr_receipt({"runtime": runtime}, up["receiptId"])
    [r] = (await team.ok(team.member, RECEIPTS, {"id": e["id"]}))["expense"]["receipts"]
    if ocr.engine() is None:
        assert status == "UNAVAILABLE" and r["ocr"] == {"status": "UNAVAILABLE", "suggestions": None}
    else:
        assert status == "DONE" and r["ocr"]["suggestions"] == {"total": str(truth["total"]), "merchantRfc": truth["merchant_rfc"]}
    assert await service.run_ocr(runtime, uuid.UUID(up["receiptId"])) == status  # done once, not again
