"""Receipts: a signed, expiring upload URL served by the expense service; the bytes decide the type;
oversize, disguised executables and PDF bombs are refused; downloads only through signed links."""

from __future__ import annotations

import io
import uuid
import zlib
from urllib.parse import urlsplit

import pytest
from PIL import Image

from subgraphs.expense.receipts import ReceiptRefused, check_receipt, inflated_size_exceeds, sniff

REQUEST = """mutation($id: ID!, $t: String!, $s: Int!) { requestReceiptUpload(expenseId: $id, contentType: $t, size: $s) {
  receiptId uploadUrl expiresAt userErrors { field code message } } }"""
RECEIPTS = "query($id: ID!) { expense(id: $id) { receipts { id contentType size uploaded downloadUrl } } }"
CREATE = "mutation { createExpense(input: {amount: \"99.90\", date: \"2026-11-20\", paymentMethod: CASH}) { expense { id } } }"


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 180, 20)).save(buf, "JPEG")
    return buf.getvalue()


def pdf_with_stream(payload: bytes) -> bytes:
    data = zlib.compress(payload, 9)
    head = b"%PDF-1.4\n1 0 obj\n<< /Length " + str(len(data)).encode() + b" /Filter /FlateDecode >>\nstream\n"
    return head + data + b"\nendstream\nendobj\n%%EOF\n"


EXE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 200
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 200


def test_sniffing_ignores_names_and_headers():
    assert sniff(jpeg()) == "image/jpeg"
    assert sniff(pdf_with_stream(b"hola")) == "application/pdf"
    assert sniff(b"<?xml version='1.0'?><a/>") == "application/xml"
    assert sniff(EXE) is None and sniff(ELF) is None
    with pytest.raises(ReceiptRefused) as exc:
        check_receipt(EXE, "image/jpeg", 10_000)
    assert exc.value.code == "RECEIPT_TYPE_NOT_ALLOWED"
    with pytest.raises(ReceiptRefused) as exc:
        check_receipt(jpeg(), "application/pdf", 10_000)
    assert exc.value.code == "RECEIPT_TYPE_MISMATCH"


def test_a_pdf_bomb_is_refused_without_inflating_it_all():
    bomb = pdf_with_stream(b"\x00" * (60 * 1024 * 1024))  # 60 MB of zeros, ~60 KB compressed
    assert len(bomb) < 100_000 and inflated_size_exceeds(bomb)
    with pytest.raises(ReceiptRefused) as exc:
        check_receipt(bomb, "application/pdf", 1024 * 1024)
    assert exc.value.code == "RECEIPT_PDF_BOMB"
    assert check_receipt(pdf_with_stream(b"BT /F1 12 Tf (Total 99.90) Tj ET"), "application/pdf", 10_000) == "application/pdf"


def test_hostile_xml_is_refused():
    with pytest.raises(ReceiptRefused) as exc:
        check_receipt(b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", "application/xml", 10_000)
    assert exc.value.code == "RECEIPT_XML_INVALID"


async def storage_key(runtime, receipt_id: str) -> str:
    from subgraphs.expense.models import Receipt

    async with runtime.sessionmaker() as session:
        return (await session.get(Receipt, uuid.UUID(receipt_id))).storage_key


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_upload_download_and_refusals_through_the_service(team, receipt_backend, new_team, runtime):
    """The same flow over each object-store backend: the bytes go through the expense app into the store."""
    expense_http = receipt_backend.http
    e = (await team.ok(team.member, CREATE))["createExpense"]["expense"]
    bad = (await team.ok(team.member, REQUEST, {"id": e["id"], "t": "application/x-msdownload", "s": 10}))["requestReceiptUpload"]
    assert [(u["field"], u["code"]) for u in bad["userErrors"]] == [(["contentType"], "RECEIPT_TYPE_NOT_ALLOWED")]
    big = (await team.ok(team.member, REQUEST, {"id": e["id"], "t": "image/jpeg", "s": 5 * 1024 * 1024}))["requestReceiptUpload"]
    assert [u["code"] for u in big["userErrors"]] == ["RECEIPT_TOO_LARGE"]
    other = await new_team()
    foreign = await other.api.execute(REQUEST, {"id": e["id"], "t": "image/jpeg", "s": 10}, token=other.member.token)
    assert foreign.error_codes == ["NOT_FOUND"]

    image = jpeg()
    ok = (await team.ok(team.member, REQUEST, {"id": e["id"], "t": "image/jpeg", "s": len(image)}))["requestReceiptUpload"]
    assert ok["userErrors"] == [] and "sig=" in ok["uploadUrl"]
    url = path_of(ok["uploadUrl"])
    assert (await expense_http.put(url.replace("sig=", "sig=x"), content=image)).status_code == 403
    assert (await expense_http.put(url, content=image + b"extra")).status_code == 413
    r = await expense_http.put(url, content=image)
    assert r.status_code == 201 and r.json()["contentType"] == "image/jpeg"
    assert receipt_backend.read(await storage_key(runtime, ok["receiptId"])) == image  # really in that store
    assert (await expense_http.put(url, content=image)).status_code == 409  # one upload per link

    disguised = (await team.ok(team.member, REQUEST, {"id": e["id"], "t": "image/jpeg", "s": len(EXE)}))["requestReceiptUpload"]
    r = await expense_http.put(path_of(disguised["uploadUrl"]), content=EXE)
    assert r.status_code == 415 and r.json()["code"] == "RECEIPT_TYPE_NOT_ALLOWED"
    bomb = pdf_with_stream(b"\x00" * (60 * 1024 * 1024))
    bombed = (await team.ok(team.member, REQUEST, {"id": e["id"], "t": "application/pdf", "s": len(bomb)}))["requestReceiptUpload"]
    r = await expense_http.put(path_of(bombed["uploadUrl"]), content=bomb)
    assert r.status_code == 415 and r.json()["code"] == "RECEIPT_PDF_BOMB"

    listed = (await team.ok(team.owner, RECEIPTS, {"id": e["id"]}))["expense"]["receipts"]
    uploaded = [x for x in listed if x["uploaded"]]
    assert len(uploaded) == 1 and uploaded[0]["size"] == len(image) and uploaded[0]["downloadUrl"]
    assert all(x["downloadUrl"] is None for x in listed if not x["uploaded"])
    got = await expense_http.get(path_of(uploaded[0]["downloadUrl"]))
    assert got.status_code == 200 and got.content == image and got.headers["x-content-type-options"] == "nosniff"
    assert (await expense_http.get(path_of(uploaded[0]["downloadUrl"]).replace("sig=", "sig=0"))).status_code == 403
    assert (await expense_http.get(f"/receipts/{uploaded[0]['id']}/file")).status_code == 403
    # Another organization never gets a link: the expense is invisible to it.
    assert (await other.ok(other.owner, RECEIPTS, {"id": e["id"]}))["expense"] is None
