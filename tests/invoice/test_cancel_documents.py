from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlsplit

from sqlalchemy import select

from shared.events import parse_event
from subgraphs.invoice import models as m
from sat.cfdi import parse_cfdi
from tests.invoice.conftest import CANCEL, CREATE_INVOICE, concept, pac_env
from workers.stamping import cancel_invoice_job, poll_cancellation_job, poll_cancellations, stamp_invoice_job


async def _stamped(org, job_ctx, **kw) -> dict:
    inv = await org.create_invoice(**kw)
    await org.stamp(inv["id"])
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    return await org.get(inv["id"])


async def _age(runtime, invoice_id, days=5):
    """Make a stamped invoice look older (the next-business-day exemption no longer applies)."""
    from sat.pac.sandbox import _PREFIX

    async with runtime.sessionmaker() as session:
        inv = await session.get(m.Invoice, uuid.UUID(invoice_id))
        raw = await runtime.redis.get(f"{_PREFIX}:cfdi:{inv.uuid}")
        rec = json.loads(raw)
        old = (datetime.now() - timedelta(days=days)).replace(microsecond=0).isoformat()
        before = rec["xml"]
        rec["xml"] = re.sub(r'FechaTimbrado="[^"]+"', f'FechaTimbrado="{old}"', before)
        rec["xml"] = re.sub(r' Fecha="[^"]+"', f' Fecha="{old}"', rec["xml"])
        assert rec["xml"] != before
        await runtime.redis.set(f"{_PREFIX}:cfdi:{inv.uuid}", json.dumps(rec).encode())


async def _events(runtime, invoice_id) -> list[str]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(select(m.outbox.c.type).where(m.outbox.c.aggregate_id == f"invoice:{invoice_id}")
                                     .order_by(m.outbox.c.id))
        return [r[0] for r in rows.all()]


async def test_small_invoice_cancels_directly(org, job_ctx, runtime):
    inv = await _stamped(org, job_ctx, concepts=[concept("500.00")])  # 580 MXN <= 1000
    out = (await org.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert out["userErrors"] == []
    assert out["invoice"]["status"] == "CANCELLING"  # recorded; the worker talks to the PAC
    assert out["invoice"]["cancellationReason"] == "02"
    assert await cancel_invoice_job(job_ctx, inv["id"]) == "CANCELLED"
    assert (await _events(runtime, inv["id"]))[-2:] == ["invoice.cancellation_requested", "invoice.cancelled"]
    again = (await org.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert again["invoice"]["status"] == "CANCELLED" and again["userErrors"] == []


async def test_large_invoice_to_persona_moral_waits_for_acceptance(org, job_ctx, runtime):
    inv = await _stamped(org, job_ctx, concepts=[concept("5000.00")])
    await _age(runtime, inv["id"])
    with pac_env(PAC_SANDBOX_ACCEPTANCE="pending"):
        out = (await org.ok(CANCEL, {"id": inv["id"], "r": "03", "u": None}))["cancelInvoice"]
        assert out["userErrors"] == [] and out["invoice"]["status"] == "CANCELLING"
        assert await cancel_invoice_job(job_ctx, inv["id"]) == "CANCELLATION_PENDING"
        assert await poll_cancellation_job(job_ctx, inv["id"]) == "CANCELLATION_PENDING"
    with pac_env(PAC_SANDBOX_ACCEPTANCE="accept"):
        assert await poll_cancellations(job_ctx) >= 1
    got = await org.get(inv["id"])
    assert got["status"] == "CANCELLED"
    assert [h["toStatus"] for h in got["history"]][-2:] == ["CANCELLATION_PENDING", "CANCELLED"]


async def test_receiver_rejects_the_cancellation(org, job_ctx, runtime):
    inv = await _stamped(org, job_ctx, concepts=[concept("5000.00")])
    await _age(runtime, inv["id"])
    with pac_env(PAC_SANDBOX_ACCEPTANCE="reject"):
        out = (await org.ok(CANCEL, {"id": inv["id"], "r": "02", "u": None}))["cancelInvoice"]
        assert out["invoice"]["status"] == "CANCELLING"
        assert await cancel_invoice_job(job_ctx, inv["id"]) == "CANCELLATION_PENDING"
        assert await poll_cancellation_job(job_ctx, inv["id"]) == "CANCELLATION_REJECTED"
    assert (await _events(runtime, inv["id"]))[-1] == "invoice.cancellation_rejected"


async def test_reason_01_requires_replacement_uuid(org, job_ctx):
    inv = await _stamped(org, job_ctx)
    out = (await org.ok(CANCEL, {"id": inv["id"], "r": "01", "u": None}))["cancelInvoice"]
    assert out["invoice"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(["replacementUuid"], "REPLACEMENT_REQUIRED")]
    out = (await org.ok(CANCEL, {"id": inv["id"], "r": "09", "u": None}))["cancelInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["INVALID_REASON"]
    assert (await org.get(inv["id"]))["status"] == "STAMPED"
    draft = await org.create_invoice()
    out = (await org.ok(CANCEL, {"id": draft["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["INVALID_STATUS"]


async def test_documents_download_with_signed_links(org, job_ctx, invoice_http, runtime):
    inv = await _stamped(org, job_ctx)
    q = "query($id: ID!) { invoice(id: $id) { downloadUrls { xml pdf expiresAt } } }"
    urls = (await org.ok(q, {"id": inv["id"]}))["invoice"]["downloadUrls"]
    xml_url, pdf_url = urlsplit(urls["xml"]), urlsplit(urls["pdf"])
    r = await invoice_http.get(f"{xml_url.path}?{xml_url.query}")
    assert r.status_code == 200 and r.content.decode() == inv["xml"]
    r = await invoice_http.get(f"{pdf_url.path}?{pdf_url.query}")
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    # Tampered signature, another invoice's path, or an expired link: 403.
    assert (await invoice_http.get(f"{xml_url.path}?{xml_url.query[:-2]}xx")).status_code == 403
    assert (await invoice_http.get(f"{pdf_url.path}?{xml_url.query}")).status_code == 403
    from subgraphs.invoice.service import document_path

    expired = document_path(runtime.settings, inv["id"], "xml", datetime.now(timezone.utc) - timedelta(seconds=5))
    assert (await invoice_http.get(expired)).status_code == 403
    assert (await invoice_http.get(f"{xml_url.path}")).status_code == 403
    # The InvoiceStamped event carries 7-day signed paths that work.
    async with runtime.sessionmaker() as session:
        row = (await session.execute(select(m.outbox).where(m.outbox.c.aggregate_id == f"invoice:{inv['id']}",
                                                            m.outbox.c.type == "invoice.stamped"))).one()
    payload = parse_event({"id": str(row.event_id), "type": row.type, "version": row.version,
                           "organization_id": row.organization_id, "actor_id": row.actor_id,
                           "aggregate_id": row.aggregate_id, "occurred_at": row.occurred_at,
                           "payload": row.payload}).typed_payload()
    assert payload.uuid == inv["uuid"]
    assert int(payload.xml_path.split("exp=")[1].split("&")[0]) > time.time() + 6 * 86400
    assert (await invoice_http.get(payload.pdf_path)).status_code == 200


async def test_credit_note_related_to_stamped_invoice(org, job_ctx):
    original = await _stamped(org, job_ctx)
    note = await org.create_invoice(type="EGRESS", concepts=[concept("100.00")], cfdiUse="G02",
                                    related=[{"relationType": "01", "uuids": [original["uuid"]]}])
    assert note["issues"] == [], note["issues"]
    await org.stamp(note["id"])
    assert await stamp_invoice_job(job_ctx, note["id"]) == "STAMPED"
    parsed = parse_cfdi((await org.get(note["id"]))["xml"].encode())
    assert parsed.voucher_type == "E"
    assert parsed.related[0].relation_type == "01" and parsed.related[0].uuids == [original["uuid"]]
    out = (await org.ok(CREATE_INVOICE, {"i": {"type": "EGRESS", "customerId": org.customer_id,
                                                "concepts": [concept()]}}))["createInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["REQUIRED"]


async def test_payment_complement_installments(org, job_ctx):
    ppd = await _stamped(org, job_ctx, paymentMethod="PPD", paymentForm="99")  # total 1160
    now = datetime.now().replace(microsecond=0).isoformat()

    async def pay(amount: str) -> dict:
        p = await org.create_invoice(type="PAYMENT", concepts=None, paymentForm=None, paymentMethod=None, payments=[{
            "paidAt": now, "paymentForm": "03", "currency": "MXN",
            "relatedDocuments": [{"invoiceId": ppd["id"], "amountPaid": amount}]}])
        assert p["issues"] == [], p["issues"]
        await org.stamp(p["id"])
        assert await stamp_invoice_job(job_ctx, p["id"]) == "STAMPED", (await org.get(p["id"]))["pacMessage"]
        return await org.get(p["id"])

    first = await pay("400.00")
    doc1 = parse_cfdi(first["xml"].encode()).payments.payments[0].related_documents[0]
    assert (doc1.installment, doc1.previous_balance, doc1.remaining_balance) == (1, Decimal("1160.00"), Decimal("760.00"))
    second = await pay("760.00")
    doc2 = parse_cfdi(second["xml"].encode()).payments.payments[0].related_documents[0]
    assert (doc2.installment, doc2.previous_balance, doc2.remaining_balance) == (2, Decimal("760.00"), Decimal("0.00"))
    assert doc2.uuid == ppd["uuid"]
    # A PUE invoice cannot be paid with a complement.
    pue = await _stamped(org, job_ctx)
    out = (await org.ok(CREATE_INVOICE, {"i": {"type": "PAYMENT", "customerId": org.customer_id, "payments": [{
        "paidAt": now, "paymentForm": "03", "relatedDocuments": [{"invoiceId": pue["id"], "amountPaid": "1"}]}]}}))
    errs = out["createInvoice"]["userErrors"]
    assert [(e["field"], e["code"]) for e in errs] == [
        (["input", "payments", "0", "relatedDocuments", "0", "invoiceId"], "DOCUMENT_NOT_PAYABLE")]


async def test_global_invoice_for_publico_en_general(org, job_ctx):
    now = datetime.now()
    inv = await _stamped(org, job_ctx, customerId=None, paymentForm="01", globalInformation={
        "periodicity": "04", "months": f"{now.month:02d}", "year": now.year})
    parsed = parse_cfdi(inv["xml"].encode())
    assert parsed.receiver.rfc == "XAXX010101000" and parsed.receiver.name == "PUBLICO EN GENERAL"
    assert parsed.global_information.periodicity == "04"


async def test_reason_01_with_a_stamped_replacement(org, job_ctx):
    wrong = await _stamped(org, job_ctx, concepts=[concept("100.00")])
    out = (await org.ok(CANCEL, {"id": wrong["id"], "r": "01", "u": "6F1A2B3C-0000-4000-8000-000000000001"}))["cancelInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["REPLACEMENT_NOT_FOUND"]
    fixed = await _stamped(org, job_ctx, concepts=[concept("110.00")],
                           related=[{"relationType": "04", "uuids": [wrong["uuid"]]}])
    out = (await org.ok(CANCEL, {"id": wrong["id"], "r": "01", "u": fixed["uuid"]}))["cancelInvoice"]
    assert out["userErrors"] == [] and out["invoice"]["status"] == "CANCELLING"
    assert await cancel_invoice_job(job_ctx, wrong["id"]) == "CANCELLED"


async def test_concurrent_payments_of_one_document_get_consecutive_installments(org, job_ctx, runtime):
    import asyncio

    ppd = await _stamped(org, job_ctx, paymentMethod="PPD", paymentForm="99")
    now = datetime.now().replace(microsecond=0).isoformat()
    ids = []
    for amount in ("100.00", "200.00", "300.00"):
        p = await org.create_invoice(type="PAYMENT", concepts=None, paymentForm=None, paymentMethod=None, payments=[{
            "paidAt": now, "paymentForm": "03", "relatedDocuments": [{"invoiceId": ppd["id"], "amountPaid": amount}]}])
        await org.stamp(p["id"])
        ids.append(p["id"])
    results = await asyncio.gather(*[stamp_invoice_job({"runtime": runtime, "job_try": 1}, i) for i in ids])
    assert results == ["STAMPED"] * 3
    docs = [parse_cfdi((await org.get(i))["xml"].encode()).payments.payments[0].related_documents[0] for i in ids]
    assert sorted(d.installment for d in docs) == [1, 2, 3]
    assert sum(d.amount_paid for d in docs) == Decimal("600.00")
    assert min(d.remaining_balance for d in docs) == Decimal("560.00")


async def _payment_draft(org, invoice_id: str, amount: str) -> dict:
    now = datetime.now().replace(microsecond=0).isoformat()
    return (await org.ok(CREATE_INVOICE, {"i": {"type": "PAYMENT", "customerId": org.customer_id, "payments": [{
        "paidAt": now, "paymentForm": "03", "relatedDocuments": [{"invoiceId": invoice_id, "amountPaid": amount}]}]}}))["createInvoice"]


async def test_a_payment_cannot_exceed_the_balance(org, job_ctx):
    ppd = await _stamped(org, job_ctx, paymentMethod="PPD", paymentForm="99")  # total 1160
    out = await _payment_draft(org, ppd["id"], "1160.01")
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [
        (["input", "payments", "0", "relatedDocuments", "0", "amountPaid"], "AMOUNT_EXCEEDS_BALANCE")]
    assert out["invoice"] is None


async def test_an_id_written_in_another_case_counts_toward_the_same_balance(org, job_ctx):
    ppd = await _stamped(org, job_ctx, paymentMethod="PPD", paymentForm="99")
    first = (await _payment_draft(org, ppd["id"], "400.00"))["invoice"]
    await org.stamp(first["id"])
    assert await stamp_invoice_job(job_ctx, first["id"]) == "STAMPED"
    # Same document, id in upper case: still 760 owed, so 800 is refused and 760 is installment 2.
    assert (await _payment_draft(org, ppd["id"].upper(), "800.00"))["userErrors"][0]["code"] == "AMOUNT_EXCEEDS_BALANCE"
    second = (await _payment_draft(org, ppd["id"].upper(), "760.00"))["invoice"]
    await org.stamp(second["id"])
    assert await stamp_invoice_job(job_ctx, second["id"]) == "STAMPED"
    doc = parse_cfdi((await org.get(second["id"]))["xml"].encode()).payments.payments[0].related_documents[0]
    assert (doc.installment, doc.previous_balance) == (2, Decimal("760.00"))


async def test_paying_a_document_cancelled_after_the_draft_fails_to_stamp(org, job_ctx):
    ppd = await _stamped(org, job_ctx, paymentMethod="PPD", paymentForm="99", concepts=[concept("500.00")])  # 580
    draft = (await _payment_draft(org, ppd["id"], "100.00"))["invoice"]
    out = (await org.ok(CANCEL, {"id": ppd["id"], "r": "02", "u": None}))["cancelInvoice"]
    assert out["invoice"]["status"] == "CANCELLING"
    assert await cancel_invoice_job(job_ctx, ppd["id"]) == "CANCELLED"
    stamp = await org.ok("""mutation($id: ID!) { stampInvoice(id: $id, idempotencyKey: "k") {
        invoice { status } userErrors { code } } }""", {"id": draft["id"]})
    if stamp["stampInvoice"]["userErrors"]:  # refused at request time, or ...
        assert stamp["stampInvoice"]["userErrors"][0]["code"] == "DOCUMENT_NOT_PAYABLE"
    else:  # ... by the worker, with the reason kept
        assert await stamp_invoice_job(job_ctx, draft["id"]) == "STAMP_FAILED"
        assert (await org.get(draft["id"]))["pacCode"] == "DOCUMENT_NOT_PAYABLE"


async def test_a_links_only_instance_serves_signed_documents_but_no_graphql(org, job_ctx, invoice_http, settings, auth_http):
    """compose publishes `invoice-links` (SERVE_GRAPHQL=false), never the subgraph's own port."""
    from tests.conftest import running_app
    from tests.invoice.conftest import make_invoice_app

    inv = await _stamped(org, job_ctx)
    q = "query($id: ID!) { invoice(id: $id) { downloadUrls { xml } } }"
    xml_url = urlsplit((await org.ok(q, {"id": inv["id"]}))["invoice"]["downloadUrls"]["xml"])
    links_app = make_invoice_app(settings.model_copy(update={"serve_graphql": False}), auth_http)
    async with running_app(links_app) as links:
        assert (await links.post("/graphql", json={"query": "{ __typename }"})).status_code == 404
        assert (await links.get("/graphql")).status_code == 404
        r = await links.get(f"{xml_url.path}?{xml_url.query}")
        assert r.status_code == 200 and r.content.decode() == inv["xml"]
        assert (await links.get("/health/live")).status_code == 200
    # the full subgraph still answers GraphQL
    assert (await invoice_http.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
