"""stampInvoices: the accountant's "stamp the selected drafts" in one request. Each item answered
on its own, the accepted ones in one transaction with their outbox events, in statements whose
number does not depend on how many invoices are asked for."""

from __future__ import annotations

import uuid

from sqlalchemy import event, func, select

from subgraphs.invoice import models as m
from subgraphs.invoice.service.stamp_requests import MAX_BATCH
from tests.invoice.conftest import INVOICE_FIELDS, STAMP
from tests.invoice.test_worker import _relay, _run_worker

STAMP_MANY = """mutation($items: [StampInvoiceInput!]!) { stampInvoices(items: $items) {
  results { invoice { %s } userErrors { field code message } } userErrors { field code message } } }""" % INVOICE_FIELDS


async def _stamp_many(org, items: list[tuple[str, str]]) -> dict:
    out = await org.ok(STAMP_MANY, {"items": [{"id": i, "idempotencyKey": k} for i, k in items]})
    return out["stampInvoices"]


async def _recorded(runtime, invoice_ids: list[str]) -> tuple[dict, dict]:
    """Per invoice: its STAMPING history rows and its invoice.stamping_requested outbox rows."""
    ids = [uuid.UUID(i) for i in invoice_ids]
    async with runtime.sessionmaker() as session:
        history = dict((await session.execute(
            select(m.InvoiceEvent.invoice_id, func.count()).where(m.InvoiceEvent.invoice_id.in_(ids),
                                                                  m.InvoiceEvent.to_status == "STAMPING")
            .group_by(m.InvoiceEvent.invoice_id))).all())
        events = dict((await session.execute(
            select(m.outbox.c.aggregate_id, func.count()).where(
                m.outbox.c.aggregate_id.in_([f"invoice:{i}" for i in invoice_ids]),
                m.outbox.c.type == "invoice.stamping_requested").group_by(m.outbox.c.aggregate_id))).all())
    return ({str(i): history.get(i, 0) for i in ids}, {i: events.get(f"invoice:{i}", 0) for i in invoice_ids})


async def test_stamp_invoices_stamps_each_once_through_the_outbox_and_the_worker(org, runtime):
    invoices = [await org.create_invoice() for _ in range(4)]
    out = await _stamp_many(org, [(inv["id"], f"batch-{n}") for n, inv in enumerate(invoices)])
    assert out["userErrors"] == []
    assert [r["userErrors"] for r in out["results"]] == [[]] * 4
    assert [r["invoice"]["id"] for r in out["results"]] == [inv["id"] for inv in invoices]  # in the order asked
    assert {r["invoice"]["status"] for r in out["results"]} == {"STAMPING"}
    history, events = await _recorded(runtime, [inv["id"] for inv in invoices])
    assert set(history.values()) == {1} and set(events.values()) == {1}
    await _relay(runtime)
    await _run_worker(runtime)
    for inv in invoices:
        got = await org.get(inv["id"])
        assert got["status"] == "STAMPED", got
        assert [h["toStatus"] for h in got["history"]] == ["DRAFT", "STAMPING", "STAMPED"]
        assert [h["reason"] for h in got["history"]][1] == "Timbrado solicitado"
    # Asked again with the same keys: the same invoices as they are, nothing new.
    again = await _stamp_many(org, [(inv["id"], f"batch-{n}") for n, inv in enumerate(invoices)])
    assert {r["invoice"]["status"] for r in again["results"]} == {"STAMPED"}
    assert await _recorded(runtime, [inv["id"] for inv in invoices]) == (history, events)


async def test_a_mixed_batch_answers_each_item_and_accepts_the_rest_together(org, new_org, runtime):
    other = await new_org()
    foreign = await other.create_invoice()
    fine_a, fine_b = await org.create_invoice(), await org.create_invoice()
    with_issues = await org.create_invoice(paymentMethod="PPD", paymentForm="03")
    stamped = await org.create_invoice()
    await org.stamp(stamped["id"], "first")
    await _relay(runtime)
    await _run_worker(runtime)
    assert (await org.get(stamped["id"]))["status"] == "STAMPED"
    asked_before = await org.create_invoice()
    assert (await org.stamp(asked_before["id"], "earlier"))["status"] == "STAMPING"
    history_before, events_before = await _recorded(runtime, [asked_before["id"], stamped["id"]])

    items = [(fine_a["id"], "k-a"), (foreign["id"], "k-f"), (str(uuid.uuid4()), "k-missing"), ("no-es-un-id", "k-bad"),
             (with_issues["id"], "k-i"), (asked_before["id"], "earlier"), (stamped["id"], "another"),
             (fine_b["id"], " "), (fine_b["id"].upper(), "k-b")]
    out = await _stamp_many(org, items[:-1])
    assert out["userErrors"] == []
    r = out["results"]
    assert r[0]["userErrors"] == [] and r[0]["invoice"]["status"] == "STAMPING"
    for i in (1, 2, 3):  # another organization's, unknown, malformed: not found, whoever's it is
        assert r[i]["invoice"] is None
        assert [(e["field"], e["code"]) for e in r[i]["userErrors"]] == [(["items", str(i), "id"], "NOT_FOUND")]
    assert [(e["field"], e["code"]) for e in r[4]["userErrors"]] == [(["items", "4", "id"], "INVOICE_HAS_ISSUES")]
    assert r[5]["userErrors"] == [] and r[5]["invoice"]["status"] == "STAMPING"  # the same key: as it is
    assert [(e["field"], e["code"]) for e in r[6]["userErrors"]] == [(["items", "6", "id"], "INVALID_STATUS")]
    assert [(e["field"], e["code"]) for e in r[7]["userErrors"]] == [
        (["items", "7", "idempotencyKey"], "INVALID_IDEMPOTENCY_KEY")]
    assert all(e["message"] for x in r for e in x["userErrors"])

    history, events = await _recorded(runtime, [fine_a["id"], fine_b["id"], with_issues["id"]])
    assert history == {fine_a["id"]: 1, fine_b["id"]: 0, with_issues["id"]: 0}
    assert events == {fine_a["id"]: 1, fine_b["id"]: 0, with_issues["id"]: 0}
    assert await _recorded(runtime, [asked_before["id"], stamped["id"]]) == (history_before, events_before)
    assert (await other.get(foreign["id"]))["status"] == "DRAFT"
    assert (await org.get(with_issues["id"]))["status"] == "DRAFT"

    # The invalid key fixed, by another spelling of the same id.
    out = await _stamp_many(org, items[-1:])
    assert out["results"][0]["invoice"]["status"] == "STAMPING"


async def test_a_batch_is_accepted_or_rolled_back_as_a_whole(org, runtime, monkeypatch):
    """The accepted items commit together: a failure while writing leaves none of them."""
    from subgraphs.invoice.service import stamp_requests

    invoices = [await org.create_invoice() for _ in range(3)]

    def broken(*args):
        params = real(*args)
        params["r_history_id"][-1] = params["r_history_id"][0]  # two history rows with one primary key
        return params

    real = stamp_requests._requesting_params
    monkeypatch.setattr(stamp_requests, "_requesting_params", broken)
    r = await org.execute(STAMP_MANY, {"items": [{"id": inv["id"], "idempotencyKey": "k"} for inv in invoices]})
    assert r.error_codes == ["INTERNAL_SERVER_ERROR"]
    monkeypatch.undo()
    assert {(await org.get(inv["id"]))["status"] for inv in invoices} == {"DRAFT"}
    assert await _recorded(runtime, [inv["id"] for inv in invoices]) == (
        {inv["id"]: 0 for inv in invoices}, {inv["id"]: 0 for inv in invoices})


async def test_more_than_the_maximum_is_refused_whole(org, runtime):
    inv = await org.create_invoice()
    items = [(inv["id"], "k")] + [(str(uuid.uuid4()), "k") for _ in range(MAX_BATCH)]
    out = await _stamp_many(org, items)
    assert out["results"] == []
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(["items"], "TOO_MANY_ITEMS")]
    assert (await org.get(inv["id"]))["status"] == "DRAFT"


async def test_an_invoice_named_twice_is_refused_whole(org, runtime):
    a, b = await org.create_invoice(), await org.create_invoice()
    out = await _stamp_many(org, [(a["id"], "k1"), (b["id"], "k2"), (a["id"].upper(), "k3")])
    assert out["results"] == []
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(["items", "2", "id"], "DUPLICATE_INVOICE")]
    assert "elemento 0" in out["userErrors"][0]["message"]
    assert {(await org.get(i["id"]))["status"] for i in (a, b)} == {"DRAFT"}


async def test_stamp_invoices_needs_the_permission_to_issue(org, gql):
    created = (await gql.ok("""mutation { createApiKey(name: "lectura", permissions: ["invoice:read"]) { key
      userErrors { code } } }""", token=org.token))["createApiKey"]
    reader = (await gql.ok("mutation($k: String!) { exchangeApiKey(key: $k) { accessToken } }",
                           {"k": created["key"]}))["exchangeApiKey"]["accessToken"]
    inv = await org.create_invoice()
    r = await org.api.execute(STAMP_MANY, {"items": [{"id": inv["id"], "idempotencyKey": "x"}]}, token=reader)
    assert r.error_codes == ["FORBIDDEN"]
    r = await org.api.execute(STAMP_MANY, {"items": [{"id": inv["id"], "idempotencyKey": "x"}]})
    assert r.error_codes == ["UNAUTHENTICATED"]
    assert (await org.get(inv["id"]))["status"] == "DRAFT"


async def test_statements_of_a_batch_do_not_grow_with_its_size(org, runtime):
    """Two invoices or eight: the same statements (one locking read, one write), one transaction."""
    invoices = [await org.create_invoice() for _ in range(10)]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    sync_engine = runtime.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        small = await _stamp_many(org, [(inv["id"], "k") for inv in invoices[:2]])
        n_small, statements[:] = list(statements), []
        big = await _stamp_many(org, [(inv["id"], "k") for inv in invoices[2:]])
        n_big = list(statements)
        statements.clear()
        single = (await org.ok(STAMP, {"id": invoices[0]["id"], "k": "k"}))["stampInvoice"]  # asked again: a read
        n_single = list(statements)
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert {r["invoice"]["status"] for r in small["results"] + big["results"]} == {"STAMPING"}
    assert len(big["results"]) == 8 and single["invoice"]["status"] == "STAMPING"
    assert n_small == n_big, (n_small, n_big)
    assert len([s for s in n_big if "FOR UPDATE" in s]) == 1
    assert len([s for s in n_big if "INSERT INTO invoice.outbox" in s]) == 1
    assert len(n_single) == 1 and "FOR UPDATE" in n_single[0]


async def test_the_sat_rules_of_a_batch_run_in_one_thread_off_the_event_loop(org, monkeypatch):
    """A call may carry 100 invoices: their totals and SAT rules (CPU) must not hold the event
    loop, where every other tenant's requests run."""
    import threading

    from subgraphs.invoice.service import stamp_requests

    seen: list[int] = []
    real = stamp_requests.evaluate_plain

    def recording(inv, issuer):
        seen.append(threading.get_ident())
        return real(inv, issuer)

    monkeypatch.setattr(stamp_requests, "evaluate_plain", recording)
    invoices = [await org.create_invoice() for _ in range(3)]
    out = await _stamp_many(org, [(inv["id"], f"hilo-{n}") for n, inv in enumerate(invoices)])
    assert [r["userErrors"] for r in out["results"]] == [[]] * 3
    assert len(seen) == 3 and len(set(seen)) == 1  # one hop for the whole call
    assert seen[0] != threading.get_ident()  # not the event loop's thread


async def test_a_request_whose_write_fails_leaves_its_invoices_as_they_were(org, runtime, monkeypatch):
    """The request's transaction (a Core connection, shared.db.core_transaction) ends with the
    error: the write refused by the database (two history rows with one id) changes nothing, no
    history or outbox row is left, the row locks are released (the same request then goes through)."""
    import jwt
    import pytest
    from sqlalchemy.exc import IntegrityError

    from subgraphs.invoice.service import stamp_requests

    invoices = [await org.create_invoice() for _ in range(2)]
    real = stamp_requests._requesting_params

    def clashing(*args):
        params = real(*args)
        params["r_history_id"] = [params["r_history_id"][0]] * len(params["r_history_id"])
        return params

    monkeypatch.setattr(stamp_requests, "_requesting_params", clashing)
    actor = uuid.UUID(jwt.decode(org.token, options={"verify_signature": False})["sub"])
    with pytest.raises(IntegrityError):
        await stamp_requests.request_stamps(runtime, uuid.UUID(org.account.org_id), actor,
                                            [(inv["id"], "k") for inv in invoices])
    history, events = await _recorded(runtime, [inv["id"] for inv in invoices])
    assert [(await org.get(inv["id"]))["status"] for inv in invoices] == ["DRAFT", "DRAFT"]
    assert not any(history.values()) and not any(events.values()), (history, events)
    monkeypatch.setattr(stamp_requests, "_requesting_params", real)
    out = await _stamp_many(org, [(inv["id"], "k") for inv in invoices])
    assert [r["invoice"]["status"] for r in out["results"]] == ["STAMPING", "STAMPING"]
