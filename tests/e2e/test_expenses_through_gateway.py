"""Issue 9's whole flow with real processes: a supplier CFDI imported through the gateway, submitted,
the approver told (in-app and e-mail) by the worker from the outbox, approved, reimbursed. Roles
reach expense and notification only through auth's membership events."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone

import pytest

from sat.cfdi import build_tree, compute_totals, load_csd, sign_cfdi, stamp_cfdi, to_bytes
from tests.cfdi.conftest import CSD_2023_NOW, PASSWORD as CSD_PASSWORD, make_invoice, read_csd_files
from tests.conftest import unique_email
from tests.e2e.conftest import sign_up_by_mail

pytestmark = pytest.mark.e2e
PASSWORD = "correcto-caballo-bateria"
INVITE = "mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { userErrors { code } } }"
ACCEPT = "mutation($t: String!) { acceptInvitation(token: $t) { tokens { accessToken } userErrors { code } } }"
INBOX = "{ notifications(first: 20) { nodes { type title body data } } }"


def supplier_cfdi() -> str:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    csd = load_csd(cer, key, CSD_PASSWORD, now=CSD_2023_NOW)
    tree = build_tree(compute_totals(make_invoice()))  # EKU9003173C9 -> XIA190128J61, PUE
    sign_cfdi(tree, csd)
    stamp_cfdi(tree, csd, "SPR190613I52", datetime(2025, 6, 1, 11, 0, tzinfo=timezone.utc).replace(tzinfo=None))
    return to_bytes(tree).decode()


async def sign_up(gateway, mailbox, name: str) -> tuple[str, str]:
    email = unique_email(name)
    tokens = await sign_up_by_mail(gateway, mailbox, {"email": email, "password": PASSWORD, "fullName": name.title(),
                                                      "organizationName": f"Org {name}"})
    return email, tokens["accessToken"]


async def join(gateway, mailbox, owner_token: str, name: str, role: str) -> tuple[str, str]:
    email, token = await sign_up(gateway, mailbox, name)
    assert (await gateway.ok(INVITE, {"e": email, "r": role}, token=owner_token))["inviteMember"]["userErrors"] == []
    mails = await mailbox.wait_for(email, count=2)  # the sign-up link, then the invitation
    text = "".join(m.get_body(preferencelist=("plain",)).get_content() for m in mails)
    invitation = re.search(r"invitacion\?token=([\w-]+)", text).group(1)
    out = (await gateway.ok(ACCEPT, {"t": invitation}, token=token))["acceptInvitation"]
    assert out["userErrors"] == []
    return email, out["tokens"]["accessToken"]


async def eventually(fn, timeout: float = 30):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fn()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.2)


async def test_import_submit_notify_approve_reimburse_through_the_gateway(gateway, mailbox):
    _, owner = await sign_up(gateway, mailbox, "duena")
    member_email, member = await join(gateway, mailbox, owner, "empleado", "MEMBER")
    approver_email, approver = await join(gateway, mailbox, owner, "aprobadora", "APPROVER")
    profile = await gateway.ok('mutation { setExpenseFiscalProfile(rfc: "XIA190128J61", legalName: "XENON") { userErrors { code } } }',
                               token=owner)
    assert profile["setExpenseFiscalProfile"]["userErrors"] == []

    imported = (await gateway.ok(
        "mutation($x: String!) { importSupplierCfdi(xml: $x) { expense { id status amount merchantRfc deductibleReady } "
        "userErrors { code message } } }", {"x": supplier_cfdi()}, token=member))["importSupplierCfdi"]
    assert imported["userErrors"] == [] and imported["expense"]["deductibleReady"] is True
    expense_id = imported["expense"]["id"]
    submitted = await gateway.ok("mutation($id: ID!) { submitExpense(id: $id) { expense { status } userErrors { code } } }",
                                 {"id": expense_id}, token=member)
    assert submitted["submitExpense"] == {"expense": {"status": "SUBMITTED"}, "userErrors": []}

    async def approver_told():
        nodes = (await gateway.ok(INBOX, token=approver))["notifications"]["nodes"]
        return [n for n in nodes if n["type"] == "expense.submitted" and n["data"]["expenseId"] == expense_id]

    [notice] = await eventually(approver_told)
    assert "espera tu aprobación" in notice["body"]
    mails = await mailbox.wait_for(approver_email, count=3)
    assert any("Gasto por aprobar" in str(m["subject"]) for m in mails)
    pending = await gateway.ok("{ pendingApprovals { nodes { id submitter { id email } } } }", token=approver)
    assert expense_id in [n["id"] for n in pending["pendingApprovals"]["nodes"]]

    approved = await gateway.ok("mutation($id: ID!) { approveExpense(id: $id, comment: \"ok\") { expense { status } userErrors { code } } }",
                                {"id": expense_id}, token=approver)
    assert approved["approveExpense"] == {"expense": {"status": "APPROVED"}, "userErrors": []}
    paid = await gateway.ok("mutation($id: ID!) { reimburseExpense(id: $id) { expense { status history { action actor { email } } } userErrors { code } } }",
                            {"id": expense_id}, token=owner)
    assert paid["reimburseExpense"]["expense"]["status"] == "REIMBURSED"
    assert [h["action"] for h in paid["reimburseExpense"]["expense"]["history"]] == ["IMPORT_CFDI", "SUBMIT", "APPROVE", "REIMBURSE"]

    async def member_told():
        nodes = (await gateway.ok(INBOX, token=member))["notifications"]["nodes"]
        return {n["type"] for n in nodes if n["data"].get("expenseId") == expense_id} >= {"expense.approved", "expense.reimbursed"}

    assert await eventually(member_told)
    assert any("reembolsado" in str(m["subject"]) for m in await mailbox.wait_for(member_email, count=4))
