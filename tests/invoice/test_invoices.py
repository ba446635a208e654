from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from arq import Retry
import pytest
from sqlalchemy import func, select

from subgraphs.invoice import models as m
from sat.cfdi import parse_cfdi, validate_xsd, verify_cfdi
from sat.pac.sandbox import certificate_lookup
from tests.invoice.conftest import CREATE_INVOICE, GET_INVOICE, STAMP, concept, pac_env
from workers.stamping import stamp_invoice_job


async def _count(runtime, model, **where) -> int:
    async with runtime.sessionmaker() as session:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return await session.scalar(q)


async def test_create_invoice_computes_totals_with_decimal(org):
    inv = await org.create_invoice(concepts=[concept("1234.56", "2"), concept("0.10", "3", iva=False)])
    assert inv["status"] == "DRAFT"
    assert inv["type"] == "INCOME"
    assert inv["series"].startswith("T") and inv["folio"] == 1
    assert Decimal(inv["subtotal"]) == Decimal("2469.42")
    assert Decimal(inv["totalTaxesTransferred"]) == Decimal("395.06")
    assert Decimal(inv["total"]) == Decimal("2864.48")
    assert inv["issues"] == []


async def test_bad_input_gives_user_errors_with_paths_and_writes_nothing(org, runtime):
    org_id = uuid.UUID(org.account.org_id)
    before = await _count(runtime, m.Invoice, organization_id=org_id)
    bad = {"customerId": str(uuid.uuid4()), "concepts": [{**concept(), "quantity": "0", "description": " "}]}
    out = (await org.ok(CREATE_INVOICE, {"i": bad}))["createInvoice"]
    assert out["invoice"] is None
    got = {(tuple(e["field"]), e["code"]) for e in out["userErrors"]}
    assert (("input", "customerId"), "CUSTOMER_NOT_FOUND") in got
    assert (("input", "concepts", "0", "quantity"), "MUST_BE_POSITIVE") in got
    assert (("input", "concepts", "0", "description"), "REQUIRED") in got
    assert await _count(runtime, m.Invoice, organization_id=org_id) == before
    async with runtime.sessionmaker() as session:
        series = await session.scalar(select(m.Series).where(m.Series.organization_id == org_id))
    assert series.next_folio == 1  # no folio was consumed either


async def test_rule_issues_are_returned_and_block_stamping(org):
    # PPD must go with FormaPago 99: the engine reports it as an issue (draft kept, not stampable).
    inv = await org.create_invoice(paymentMethod="PPD", paymentForm="03")
    assert inv["issues"], inv
    assert all(i["code"] and i["field"] and i["message"] for i in inv["issues"])
    out = (await org.ok(STAMP, {"id": inv["id"], "k": "k1"}))["stampInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["INVOICE_HAS_ISSUES"]
    upd = """mutation($id: ID!, $i: InvoiceUpdateInput!) { updateInvoice(id: $id, input: $i) {
      invoice { status issues { code } } userErrors { code } } }"""
    fixed = (await org.ok(upd, {"id": inv["id"], "i": {"paymentForm": "99"}}))["updateInvoice"]
    assert fixed["userErrors"] == [] and fixed["invoice"]["issues"] == []


async def test_stamp_end_to_end_with_worker_job(org, job_ctx):
    inv = await org.create_invoice()
    stamping = await org.stamp(inv["id"], "key-1")
    assert stamping["status"] == "STAMPING"
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    got = await org.get(inv["id"])
    assert got["status"] == "STAMPED"
    assert got["uuid"] == got["uuid"].upper() and uuid.UUID(got["uuid"]).version == 4
    xml = got["xml"].encode()
    assert validate_xsd(xml) == []
    result = verify_cfdi(xml, certificate_lookup)
    assert result.ok, result.errors
    parsed = parse_cfdi(xml)
    assert parsed.stamp.uuid == got["uuid"]
    assert parsed.total == Decimal(got["total"])
    assert [h["toStatus"] for h in got["history"]] == ["DRAFT", "STAMPING", "STAMPED"]
    # Same idempotency key: same answer, no new job or transition; the job again does nothing.
    again = await org.stamp(inv["id"], "key-1")
    assert again["status"] == "STAMPED" and again["uuid"] == got["uuid"]
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    assert len((await org.get(inv["id"]))["history"]) == 3
    # A new key on a stamped invoice is refused.
    out = (await org.ok(STAMP, {"id": inv["id"], "k": "key-2"}))["stampInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["INVALID_STATUS"]


async def test_concurrent_jobs_stamp_once(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    results = await asyncio.gather(*[stamp_invoice_job({"runtime": runtime, "job_try": 1}, inv["id"])
                                     for _ in range(6)])
    assert results.count("STAMPED") >= 1
    got = await org.get(inv["id"])
    assert got["status"] == "STAMPED"
    assert [h["toStatus"] for h in got["history"]].count("STAMPED") == 1


async def test_concurrent_stamp_requests_with_same_key(org, job_ctx):
    inv = await org.create_invoice()
    outs = await asyncio.gather(*[org.execute(STAMP, {"id": inv["id"], "k": "same"}) for _ in range(5)])
    assert all(o.data["stampInvoice"]["userErrors"] == [] for o in outs)
    await stamp_invoice_job(job_ctx, inv["id"])
    got = await org.get(inv["id"])
    assert [h["toStatus"] for h in got["history"]] == ["DRAFT", "STAMPING", "STAMPED"]


async def test_folios_unique_under_concurrency(org, runtime):
    created = await asyncio.gather(*[org.create_invoice() for _ in range(20)])
    folios = [c["folio"] for c in created]
    assert len(set(folios)) == 20
    assert sorted(folios) == list(range(min(folios), min(folios) + 20))
    await asyncio.gather(*[org.stamp(c["id"]) for c in created[:5]])
    await asyncio.gather(*[stamp_invoice_job({"runtime": runtime, "job_try": 1}, c["id"]) for c in created[:5]])
    stamped = [await org.get(c["id"]) for c in created[:5]]
    assert {s["status"] for s in stamped} == {"STAMPED"}
    assert len({s["uuid"] for s in stamped}) == 5
    assert {parse_cfdi(s["xml"].encode()).folio for s in stamped} == {str(c["folio"]) for c in created[:5]}


async def test_transient_pac_failure_retries_then_succeeds(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    with pac_env(PAC_SANDBOX_FAIL="timeout", PAC_SANDBOX_FAIL_MODE="once"):
        with pytest.raises(Retry):
            await stamp_invoice_job({"runtime": runtime, "job_try": 1}, inv["id"])
        mid = await org.get(inv["id"])
        assert mid["status"] == "STAMPING" and mid["pacCode"] == "PAC_TIMEOUT"
        assert await stamp_invoice_job({"runtime": runtime, "job_try": 2}, inv["id"]) == "STAMPED"
    assert (await org.get(inv["id"]))["pacCode"] is None


async def test_transient_failures_exhausted_end_in_stamp_failed(org, runtime):
    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    with pac_env(PAC_SANDBOX_FAIL="5xx", PAC_SANDBOX_FAIL_MODE="always"):
        assert await stamp_invoice_job({"runtime": runtime, "job_try": 5}, inv["id"]) == "STAMP_FAILED"
    assert (await org.get(inv["id"]))["pacCode"] == "PAC_UNAVAILABLE"


async def test_permanent_rejection_then_fix_and_retry(org, job_ctx):
    inv = await org.create_invoice()
    await org.stamp(inv["id"], "first")
    with pac_env(PAC_SANDBOX_FAIL="reject:CFDI40108", PAC_SANDBOX_FAIL_MODE="always"):
        assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMP_FAILED"
    got = await org.get(inv["id"])
    assert got["status"] == "STAMP_FAILED"
    assert got["pacCode"] == "CFDI40108" and "CFDI40108" in got["pacMessage"]
    # Fix and retry with a new key.
    await org.stamp(inv["id"], "second")
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    hist = [h["toStatus"] for h in (await org.get(inv["id"]))["history"]]
    assert hist == ["DRAFT", "STAMPING", "STAMP_FAILED", "STAMPING", "STAMPED"]


async def test_previously_stamped_answer_recovers_the_timbre(org, runtime, job_ctx):
    """A crash after the PAC stamped but before our commit: the retry gets the same timbre back."""
    from sat.pac import get_pac

    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    pac = get_pac(runtime.redis)
    seen = {}

    class CrashAfterStamp:
        async def stamp(self, xml):
            seen["first"] = await pac.stamp(xml)
            raise RuntimeError("worker crashed")

    with pytest.raises(Retry):  # the answer was lost: retried later
        await stamp_invoice_job({**job_ctx, "pac": CrashAfterStamp()}, inv["id"])
    assert (await org.get(inv["id"]))["status"] == "STAMPING"
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    got = await org.get(inv["id"])
    assert got["uuid"] == seen["first"].uuid
    assert "recuperado" in got["history"][-1]["reason"]


async def test_other_organization_cannot_see_or_touch(org, new_org, job_ctx):
    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    await stamp_invoice_job(job_ctx, inv["id"])
    stamped = await org.get(inv["id"])
    intruder = await new_org(with_csd=False)
    assert (await intruder.ok(GET_INVOICE, {"id": inv["id"]}))["invoice"] is None
    by_uuid = "query($u: String!) { invoiceByUuid(uuid: $u) { id } }"
    assert (await intruder.ok(by_uuid, {"u": stamped["uuid"]}))["invoiceByUuid"] is None
    assert (await org.ok(by_uuid, {"u": stamped["uuid"].lower()}))["invoiceByUuid"]["id"] == inv["id"]
    lst = "{ invoices(first: 50) { nodes { id } } }"
    assert inv["id"] not in [n["id"] for n in (await intruder.ok(lst))["invoices"]["nodes"]]
    r = await intruder.execute(STAMP, {"id": inv["id"], "k": "x"})
    assert r.error_codes == ["NOT_FOUND"]
    r = await intruder.execute("""mutation($id: ID!) { cancelInvoice(id: $id, reason: "02") { userErrors { code } } }""",
                               {"id": inv["id"]})
    assert r.error_codes == ["NOT_FOUND"]
    ent = """query($r: [_Any!]!) { _entities(representations: $r) { ... on Invoice { id status } } }"""
    rep = [{"__typename": "Invoice", "id": inv["id"]}]
    assert (await intruder.ok(ent, {"r": rep}))["_entities"] == [None]
    assert (await org.ok(ent, {"r": rep}))["_entities"] == [{"id": inv["id"], "status": "STAMPED"}]


async def test_member_role_permissions_are_checked(org, api):
    # Anonymous calls are refused; a token is needed for every operation.
    r = await api.execute(CREATE_INVOICE, {"i": {"customerId": org.customer_id, "concepts": [concept()]}})
    assert r.error_codes == ["UNAUTHENTICATED"]


async def test_invoices_list_filters_and_query_count_constant(org, runtime):
    """A page costs the same statements whatever its size (no N+1), and one transaction: the page
    query and the customer loader share the request's read session (one pool checkout)."""
    from sqlalchemy import event

    for _ in range(6):
        await org.create_invoice()
    statements: list[str] = []
    transactions: list[object] = []
    checkouts: list[object] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    q = """query($f: Int) { invoices(first: $f, filter: {status: DRAFT}) { edges { cursor node { id folio status
      customer { id rfc } createdBy { id } organization { id } history { toStatus } } } pageInfo { hasNextPage endCursor } } }"""
    sync_engine = runtime.engine.sync_engine
    listeners = [(sync_engine, "before_cursor_execute", count),
                 (sync_engine, "begin", lambda conn: transactions.append(conn)),
                 (sync_engine.pool, "checkout", lambda *a: checkouts.append(a))]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        statements.clear()
        small = await org.ok(q, {"f": 2})
        n_small, t_small, c_small = len(statements), len(transactions), len(checkouts)
        statements.clear(), transactions.clear(), checkouts.clear()
        big = await org.ok(q, {"f": 6})
        n_big, t_big, c_big = len(statements), len(transactions), len(checkouts)
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)
    assert (t_small, c_small) == (1, 1), (t_small, c_small)
    assert (t_big, c_big) == (1, 1), (t_big, c_big)
    assert len(small["invoices"]["edges"]) == 2 and small["invoices"]["pageInfo"]["hasNextPage"]
    assert len(big["invoices"]["edges"]) == 6
    assert n_small == n_big, (n_small, n_big)
    # Paging: the second page continues after the first.
    page2 = """query($a: String) { invoices(first: 2, after: $a) { nodes { id } } }"""
    nxt = await org.ok(page2, {"a": small["invoices"]["pageInfo"]["endCursor"]})
    first_ids = [e["node"]["id"] for e in small["invoices"]["edges"]]
    assert not set(first_ids) & {n["id"] for n in nxt["invoices"]["nodes"]}
    search = await org.ok("""query { invoices(first: 50, filter: {search: "XENON"}) { nodes { id } } }""")
    assert len(search["invoices"]["nodes"]) >= 6


async def test_dashboard_totals_by_month_and_status(org, job_ctx):
    a = await org.create_invoice()
    await org.create_invoice(concepts=[concept("500.00")])
    await org.stamp(a["id"])
    await stamp_invoice_job(job_ctx, a["id"])
    from datetime import datetime

    year = datetime.now().year
    rows = (await org.ok("query($y: Int!) { invoiceDashboard(year: $y) { month status count total } }",
                         {"y": year}))["invoiceDashboard"]
    by_status = {r["status"]: r for r in rows}
    assert by_status["STAMPED"]["count"] == 1 and Decimal(by_status["STAMPED"]["total"]) == Decimal("1160.00")
    assert by_status["DRAFT"]["count"] == 1 and Decimal(by_status["DRAFT"]["total"]) == Decimal("580.00")


async def test_only_drafts_and_failed_invoices_can_be_edited(org, job_ctx):
    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    upd = """mutation($id: ID!, $i: InvoiceUpdateInput!) { updateInvoice(id: $id, input: $i) { userErrors { code } } }"""
    out = (await org.ok(upd, {"id": inv["id"], "i": {"paymentConditions": "Contado"}}))["updateInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["INVALID_STATUS"]  # STAMPING
    await stamp_invoice_job(job_ctx, inv["id"])
    out = (await org.ok(upd, {"id": inv["id"], "i": {"paymentConditions": "Contado"}}))["updateInvoice"]
    assert [e["code"] for e in out["userErrors"]] == ["INVALID_STATUS"]  # STAMPED


async def test_narrowed_api_key_permissions_are_enforced(org, gql):
    created = (await gql.ok("""mutation { createApiKey(name: "lectura", permissions: ["invoice:read"]) { key
      userErrors { code } } }""", token=org.token))["createApiKey"]
    ex = (await gql.ok("mutation($k: String!) { exchangeApiKey(key: $k) { accessToken userErrors { code } } }",
                       {"k": created["key"]}))["exchangeApiKey"]
    reader = ex["accessToken"]
    inv = await org.create_invoice()
    r = await org.api.execute(GET_INVOICE, {"id": inv["id"]}, token=reader)
    assert r.data["invoice"]["id"] == inv["id"]
    r = await org.api.execute(STAMP, {"id": inv["id"], "k": "x"}, token=reader)
    assert r.error_codes == ["FORBIDDEN"]
    r = await org.api.execute("""mutation($id: ID!) { cancelInvoice(id: $id, reason: "02") { userErrors { code } } }""",
                              {"id": inv["id"]}, token=reader)
    assert r.error_codes == ["FORBIDDEN"]
    r = await org.api.execute("""mutation { uploadCsd(certificate: "", privateKey: "", password: "") { userErrors { code } } }""",
                              token=reader)
    assert r.error_codes == ["FORBIDDEN"]


async def test_a_slow_creation_does_not_hold_back_the_series(org, monkeypatch):
    """The folio is taken after validation and totals (README, "Folios"): a creation still
    evaluating holds no lock on the series, so another one in the same series completes meanwhile,
    and each gets its own folio."""
    from subgraphs.invoice.service import drafts

    entered, release = asyncio.Event(), asyncio.Event()
    evaluate = drafts.evaluate

    async def slow_evaluate(session, inv, issuer):
        if inv.document["concepts"][0]["description"] == "Lenta":
            entered.set()
            await release.wait()
        return await evaluate(session, inv, issuer)

    monkeypatch.setattr(drafts, "evaluate", slow_evaluate)
    await org.create_invoice()  # the series row exists: a folio taken now would lock it
    slow = asyncio.create_task(org.create_invoice(concepts=[{**concept(), "description": "Lenta"}]))
    await asyncio.wait_for(entered.wait(), 30)
    try:
        # Would wait on the series row until `slow` commits if its folio were taken before evaluating.
        quick = await asyncio.wait_for(org.create_invoice(), 30)
        assert not slow.done()
    finally:
        release.set()
    done = await slow
    assert quick["folio"] != done["folio"] and done["folio"] == quick["folio"] + 1


async def test_no_lock_on_the_invoice_while_the_pac_answers(org, runtime):
    """The job claims the invoice in a short transaction, then seals and asks the PAC holding no
    lock: the row can be locked meanwhile (NOWAIT would fail otherwise), and the outcome is
    recorded once when the PAC answers."""
    from sqlalchemy import text

    from sat.pac.sandbox import SandboxPac

    entered, release = asyncio.Event(), asyncio.Event()

    class SlowPac(SandboxPac):
        async def stamp(self, xml, **kw):
            entered.set()
            await release.wait()
            return await super().stamp(xml, **kw)

    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    job = asyncio.create_task(stamp_invoice_job({"runtime": runtime, "job_try": 1, "pac": SlowPac(runtime.redis)},
                                                inv["id"]))
    try:
        await asyncio.wait_for(entered.wait(), 30)
        async with runtime.sessionmaker() as session, session.begin():
            row = (await session.execute(text("SELECT status, stamp_attempts FROM invoice.invoices WHERE id = :id "
                                              "FOR UPDATE NOWAIT"), {"id": inv["id"]})).one()
        assert tuple(row) == ("STAMPING", 1)  # claimed (attempt counted and committed), not locked
    finally:
        release.set()
    assert await job == "STAMPED"
    got = await org.get(inv["id"])
    assert [h["toStatus"] for h in got["history"]] == ["DRAFT", "STAMPING", "STAMPED"]
