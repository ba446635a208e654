"""Issue 3 and 4's promises through the real gateway, with real subgraph processes, the real
worker (relay, stamping, e-mail) and a real SMTP listener:

a new user configures the issuer with the SAT test CSD, creates a customer, issues an invoice,
watches STAMPING -> STAMPED on a WebSocket subscription, gets the in-app notification on another
subscription and the CFDI by e-mail, downloads XML and PDF, and cancels it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sat.cfdi import verify_cfdi
from sat.pac import sandbox
from tests.conftest import unique_email
from tests.e2e.conftest import subscribe
from tests.gateway_flows import STAMP_MANY, create_invoice, new_issuer

pytestmark = pytest.mark.e2e


async def test_issue_stamp_watch_download_and_cancel_through_the_gateway(gateway, stack, mailbox):
    customer_email = unique_email("cliente")
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=customer_email)
    s = await gateway.ok("mutation { updateOrganizationNotificationSettings(sendCfdiToCustomer: true) { userErrors { code } } }",
                         token=token)
    assert s["updateOrganizationNotificationSettings"]["userErrors"] == []
    invoice = await create_invoice(gateway, token, customer_id, price="500.00")
    assert invoice["status"] == "DRAFT" and invoice["total"] == "580.00"

    status_ws, statuses = await subscribe(stack.urls["gateway"],
                                          "subscription($id: ID!) { invoiceStatusChanged(id: $id) { status uuid } }",
                                          {"id": invoice["id"]}, token)
    inbox_ws, inbox = await subscribe(stack.urls["gateway"],
                                      "subscription { notificationReceived { type title data } }", None, token)
    try:
        await asyncio.sleep(0.5)  # let the gateway open its upstream subscriptions
        stamped = await gateway.ok("""mutation($id: ID!, $k: String!) { stampInvoice(id: $id, idempotencyKey: $k) {
            invoice { status } userErrors { code } } }""", {"id": invoice["id"], "k": "e2e-1"}, token=token)
        assert stamped["stampInvoice"]["invoice"]["status"] == "STAMPING"
        seen = [(await statuses.next())["data"]["invoiceStatusChanged"]]
        while seen[-1]["status"] != "STAMPED":
            seen.append((await statuses.next())["data"]["invoiceStatusChanged"])
        assert [x["status"] for x in seen] == ["STAMPING", "STAMPED"]
        cfdi_uuid = seen[-1]["uuid"]
        note = (await inbox.next())["data"]["notificationReceived"]
        assert note["type"] == "invoice.stamped" and note["data"]["uuid"] == cfdi_uuid
    finally:
        await status_ws.close()
        await inbox_ws.close()

    got = (await gateway.ok("""query($id: ID!) { invoice(id: $id) { status uuid downloadUrls { xml pdf }
        createdBy { email } organization { name } } }""", {"id": invoice["id"]}, token=token))["invoice"]
    assert got["status"] == "STAMPED" and got["uuid"] == cfdi_uuid
    assert got["organization"]["name"] == "Escuela Kemper Urgate"  # resolved by the auth subgraph
    assert got["createdBy"]["email"].startswith("emisor-")
    async with httpx.AsyncClient(timeout=30) as http:
        xml = (await http.get(got["downloadUrls"]["xml"])).content
        pdf = await http.get(got["downloadUrls"]["pdf"])
        tampered = await http.get(got["downloadUrls"]["pdf"].replace("sig=", "sig=x"))
    assert verify_cfdi(xml, sandbox.certificate_lookup).ok
    assert pdf.content.startswith(b"%PDF") and pdf.headers["content-type"].startswith("application/pdf")
    assert tampered.status_code == 403

    # The customer receives the CFDI with XML and PDF attached.
    [mail] = await mailbox.wait_for(customer_email)
    names = sorted(part.get_filename() or "" for part in mail.iter_attachments())
    assert any(n.endswith(".xml") for n in names) and any(n.endswith(".pdf") for n in names), names

    cancelled = await gateway.ok("""mutation($id: ID!) { cancelInvoice(id: $id, reason: "02") { invoice { status }
        userErrors { code field } } }""", {"id": invoice["id"]}, token=token)
    # Recorded at once; the worker asks the PAC (≤ 1,000 MXN: no acceptance needed).
    assert cancelled["cancelInvoice"]["invoice"]["status"] == "CANCELLING"
    for _ in range(150):
        got = (await gateway.ok("query($id: ID!) { invoice(id: $id) { status total } }", {"id": invoice["id"]},
                                token=token))["invoice"]
        if got["status"] != "CANCELLING":
            break
        await asyncio.sleep(0.2)
    assert got == {"status": "CANCELLED", "total": "580.00"}


async def test_user_with_email_off_for_invoicing_gets_only_the_in_app_notification(gateway, stack, mailbox):
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("cliente"))
    me = (await gateway.ok("{ me { email } }", token=token))["me"]["email"]
    off = await gateway.ok("""mutation { updateNotificationPreference(category: INVOICING, channel: EMAIL, enabled: false) {
        userErrors { code } } }""", token=token)
    assert off["updateNotificationPreference"]["userErrors"] == []
    invoice = await create_invoice(gateway, token, customer_id, price="100.00")
    await gateway.ok("""mutation($id: ID!) { stampInvoice(id: $id, idempotencyKey: "once") { invoice { status } } }""",
                     {"id": invoice["id"]}, token=token)
    for _ in range(150):
        inbox = (await gateway.ok("{ notifications(first: 5) { edges { node { type } } } unreadCount }", token=token))
        if any(e["node"]["type"] == "invoice.stamped" for e in inbox["notifications"]["edges"]):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("no in-app notification for the stamped invoice")
    assert inbox["unreadCount"] >= 1
    await asyncio.sleep(2)  # the e-mail, had it been decided, is sent right after the in-app entry
    # Exactly one e-mail ever reached this user: the sign-up verification (account mail stays on).
    mails = mailbox.to(me)
    assert len(mails) == 1, [m["Subject"] for m in mails]
    assert "completar-registro" in mails[0].get_body(preferencelist=("plain",)).get_content()


async def test_stamp_the_selected_drafts_in_one_request_through_the_gateway(gateway, stack, mailbox):
    """stampInvoices: one request for several drafts; each answered on its own, the accepted ones
    pushed live as STAMPING and stamped once each by the real worker."""
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("cliente"))
    me = (await gateway.ok("{ me { email } }", token=token))["me"]["email"]
    drafts = [await create_invoice(gateway, token, customer_id, price=f"{100 + n}.00") for n in range(3)]
    events_ws, events = await subscribe(stack.urls["gateway"], "subscription { invoiceEvents { invoiceId status } }",
                                        None, token)
    try:
        await asyncio.sleep(0.5)  # let the gateway open its upstream subscription
        items = [{"id": d["id"], "idempotencyKey": f"lote-{n}"} for n, d in enumerate(drafts)]
        items.insert(1, {"id": "00000000-0000-4000-8000-000000000000", "idempotencyKey": "lote-x"})
        out = (await gateway.ok(STAMP_MANY, {"items": items}, token=token))["stampInvoices"]
        assert out["userErrors"] == []
        assert [(r["invoice"] or {}).get("status") for r in out["results"]] == ["STAMPING", None, "STAMPING", "STAMPING"]
        assert [(e["field"], e["code"]) for e in out["results"][1]["userErrors"]] == [(["items", "1", "id"], "NOT_FOUND")]
        seen: dict[str, list[str]] = {d["id"]: [] for d in drafts}
        while any(s[-1:] != ["STAMPED"] for s in seen.values()):
            ev = (await events.next())["data"]["invoiceEvents"]
            seen[ev["invoiceId"]].append(ev["status"])
        assert all(s == ["STAMPING", "STAMPED"] for s in seen.values()), seen
    finally:
        await events_ws.close()
    uuids: list[str] = []
    for d in drafts:
        got = (await gateway.ok("query($id: ID!) { invoice(id: $id) { status uuid history { toStatus } } }",
                                {"id": d["id"]}, token=token))["invoice"]
        assert got["status"] == "STAMPED" and got["uuid"]
        assert [h["toStatus"] for h in got["history"]] == ["DRAFT", "STAMPING", "STAMPED"]
        uuids.append(got["uuid"])
    # The creator hears of each invoice by e-mail exactly once: those the consumer read together
    # in one digest ("Se timbraron N facturas"), a lone one in its own mail.
    def mailed() -> list[str]:
        texts = [m.get_body(preferencelist=("plain",)).get_content() for m in mailbox.to(me) if "timbr" in m["Subject"]]
        return sorted(u for t in texts for u in uuids if u in t)

    for _ in range(150):
        if mailed() == sorted(uuids):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # a duplicate, were there one, would come right after
    assert mailed() == sorted(uuids), [m["Subject"] for m in mailbox.to(me)]
