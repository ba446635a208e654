"""Expenses through the subgraph's GraphQL API against real Postgres: the workflow, policy,
categories, reports, the outbox, and that no organization reaches another's expenses."""

from __future__ import annotations

from sqlalchemy import text

FIELDS = "id status amount currency amountMxn date paymentMethod submitter { id } policyFlags { code } " \
         "approvalChain { level role approvedBy { id } } history { action fromStatus toStatus comment actor { id } }"
CREATE = "mutation($i: ExpenseInput!) { createExpense(input: $i) { expense { %s } userErrors { field code message } } }" % FIELDS
UPDATE = "mutation($id: ID!, $i: ExpenseInput!) { updateExpense(id: $id, input: $i) { expense { %s } userErrors { field code message } } }" % FIELDS
SUBMIT = "mutation($id: ID!) { submitExpense(id: $id, comment: \"listo\") { expense { %s } userErrors { field code message } } }" % FIELDS
APPROVE = "mutation($id: ID!) { approveExpense(id: $id, comment: \"ok\") { expense { %s } userErrors { field code message } } }" % FIELDS
REJECT = "mutation($id: ID!, $r: String!) { rejectExpense(id: $id, reason: $r) { expense { %s } userErrors { field code message } } }" % FIELDS
REIMBURSE = "mutation($id: ID!) { reimburseExpense(id: $id) { expense { %s } userErrors { field code message } } }" % FIELDS
GET = "query($id: ID!) { expense(id: $id) { %s } }" % FIELDS
LIST = "query($f: ExpenseFilter, $n: Int, $a: String) { expenses(filter: $f, first: $n, after: $a) { edges { node { id status } } pageInfo { hasNextPage endCursor } } }"
PENDING = "{ pendingApprovals { nodes { id } } }"
CATEGORY = "mutation($i: CategoryInput!) { createExpenseCategory(input: $i) { category { id name limitMxn limitAction } userErrors { field code message } } }"
POLICY = "mutation($i: ApprovalPolicyInput!) { updateApprovalPolicy(input: $i) { policy { steps { aboveMxn role } } userErrors { field code message } } }"
REPORT = "mutation($i: ExpenseReportInput!) { createExpenseReport(input: $i) { report { id } userErrors { field code message } } }"
SUBMIT_REPORT = "mutation($id: ID!) { submitExpenseReport(id: $id) { report { id status totalMxn expenses { status } } userErrors { field code message } } }"
REPORTS = "{ expenseReports { nodes { id title status } } }"


def draft(amount="1200.50", **kw) -> dict:
    return {"amount": amount, "date": "2026-11-20", "paymentMethod": "PERSONAL_CARD", "merchantName": "Papelería Sol",
            "description": "Material de oficina", "projectTag": "CC-100", **kw}


async def create(team, who=None, **kw) -> dict:
    out = (await team.ok(who or team.member, CREATE, {"i": draft(**kw)}))["createExpense"]
    assert out["userErrors"] == [], out
    return out["expense"]


async def act(team, who, mutation, expense_id, **variables) -> dict:
    name = mutation.split("{", 2)[1].split("(")[0].strip()
    return (await team.ok(who, mutation, {"id": expense_id, **variables}))[name]


async def test_small_expense_one_approver_then_reimbursed(team, runtime):
    e = await create(team)
    assert e["status"] == "DRAFT" and e["amountMxn"] == "1200.50" and e["submitter"]["id"]
    sub = await act(team, team.member, SUBMIT, e["id"])
    assert sub["userErrors"] == [] and sub["expense"]["status"] == "SUBMITTED"
    assert [s["level"] for s in sub["expense"]["approvalChain"]] == [1]
    assert e["id"] in [n["id"] for n in (await team.ok(team.approver, PENDING))["pendingApprovals"]["nodes"]]
    assert e["id"] not in [n["id"] for n in (await team.ok(team.member, PENDING))["pendingApprovals"]["nodes"]]
    ok = await act(team, team.approver, APPROVE, e["id"])
    assert ok["userErrors"] == [] and ok["expense"]["status"] == "APPROVED"
    paid = await act(team, team.owner, REIMBURSE, e["id"])
    assert paid["userErrors"] == [] and paid["expense"]["status"] == "REIMBURSED"
    assert [h["action"] for h in paid["expense"]["history"]] == ["CREATE", "SUBMIT", "APPROVE", "REIMBURSE"]
    assert paid["expense"]["history"][1]["comment"] == "listo"
    async with runtime.sessionmaker() as s:
        types = (await s.execute(text("SELECT type FROM expense.outbox WHERE aggregate_id = :a ORDER BY id"),
                                 {"a": e["id"]})).scalars().all()
    assert types == ["expense.submitted", "expense.approved", "expense.reimbursed"]


async def test_two_approvers_above_5000_and_owner_above_50000(team):
    e = await create(team, amount="60000.00")
    await act(team, team.member, SUBMIT, e["id"])
    first = await act(team, team.approver, APPROVE, e["id"])
    assert first["expense"]["status"] == "SUBMITTED"
    again = await act(team, team.approver, APPROVE, e["id"])
    assert [u["code"] for u in again["userErrors"]] == ["ALREADY_APPROVED"]
    second = await act(team, team.approver2, APPROVE, e["id"])
    assert second["userErrors"] == [] and second["expense"]["status"] == "SUBMITTED"
    assert e["id"] not in [n["id"] for n in (await team.ok(team.approver, PENDING))["pendingApprovals"]["nodes"]]
    assert e["id"] in [n["id"] for n in (await team.ok(team.owner, PENDING))["pendingApprovals"]["nodes"]]
    last = await act(team, team.owner, APPROVE, e["id"])
    assert last["userErrors"] == [] and last["expense"]["status"] == "APPROVED"
    assert [s["approvedBy"] is not None for s in last["expense"]["approvalChain"]] == [True, True, True]


async def test_no_self_approval_reject_with_reason_and_resubmit_restarts(team):
    e = await create(team, who=team.approver, amount="7000.00")
    await act(team, team.approver, SUBMIT, e["id"])
    own = await act(team, team.approver, APPROVE, e["id"])
    assert [u["code"] for u in own["userErrors"]] == ["SELF_APPROVAL"]
    await act(team, team.approver2, APPROVE, e["id"])
    no_reason = await act(team, team.owner, REJECT, e["id"], r="  ")
    assert [u["code"] for u in no_reason["userErrors"]] == ["REASON_REQUIRED"]
    rej = await act(team, team.owner, REJECT, e["id"], r="Falta el comprobante")
    assert rej["userErrors"] == [] and rej["expense"]["status"] == "REJECTED"
    fixed = (await team.ok(team.approver, UPDATE, {"id": e["id"], "i": {"description": "con comprobante"}}))["updateExpense"]
    assert fixed["userErrors"] == []
    again = await act(team, team.approver, SUBMIT, e["id"])
    assert again["expense"]["status"] == "SUBMITTED"
    # A new round: the earlier approval no longer counts.
    assert [s["approvedBy"] for s in again["expense"]["approvalChain"]] == [None, None]
    assert (await act(team, team.approver2, APPROVE, e["id"]))["expense"]["status"] == "SUBMITTED"


async def test_refused_transitions_and_permissions(team):
    e = await create(team)
    r = await act(team, team.approver, APPROVE, e["id"])
    assert [u["code"] for u in r["userErrors"]] == ["INVALID_TRANSITION"]
    r = await act(team, team.owner, REIMBURSE, e["id"])
    assert [u["code"] for u in r["userErrors"]] == ["INVALID_TRANSITION"]
    denied = await team.api.execute(APPROVE, {"id": e["id"]}, token=team.member.token)
    assert denied.error_codes == ["FORBIDDEN"]
    await act(team, team.member, SUBMIT, e["id"])
    r = (await team.ok(team.member, UPDATE, {"id": e["id"], "i": {"amount": "1"}}))["updateExpense"]
    assert [u["code"] for u in r["userErrors"]] == ["NOT_EDITABLE"]
    r = await act(team, team.member, SUBMIT, e["id"])
    assert [u["code"] for u in r["userErrors"]] == ["INVALID_TRANSITION"]


async def test_input_errors_are_user_errors(team):
    out = (await team.ok(team.member, CREATE, {"i": draft(amount="-3", currency="USD", merchantRfc="NOPE")}))["createExpense"]
    assert out["expense"] is None
    assert {(tuple(u["field"]), u["code"]) for u in out["userErrors"]} == {
        (("input", "amount"), "INVALID_AMOUNT"), (("input", "exchangeRate"), "EXCHANGE_RATE_REQUIRED"),
        (("input", "merchantRfc"), "INVALID_RFC")}
    usd = await create(team, amount="100.00", currency="USD", exchangeRate="17.5")
    assert usd["amountMxn"] == "1750.00"


async def test_category_limits_flag_or_block(team):
    flag = (await team.ok(team.owner, CATEGORY, {"i": {"name": "Comidas", "satHint": "90101501", "limitMxn": "500"}}))["createExpenseCategory"]
    block = (await team.ok(team.owner, CATEGORY, {"i": {"name": "Vuelos", "limitMxn": "500", "limitAction": "BLOCK"}}))["createExpenseCategory"]
    assert flag["userErrors"] == [] and block["userErrors"] == []
    bad = (await team.ok(team.owner, CATEGORY, {"i": {"name": "X", "satHint": "00000000"}}))["createExpenseCategory"]
    assert [u["code"] for u in bad["userErrors"]] == ["UNKNOWN_PRODUCT_CODE"]
    e1 = await create(team, amount="800.00", categoryId=flag["category"]["id"])
    out = await act(team, team.member, SUBMIT, e1["id"])
    assert out["expense"]["status"] == "SUBMITTED" and [f["code"] for f in out["expense"]["policyFlags"]] == ["CATEGORY_LIMIT_EXCEEDED"]
    e2 = await create(team, amount="800.00", categoryId=block["category"]["id"])
    out = await act(team, team.member, SUBMIT, e2["id"])
    assert [u["code"] for u in out["userErrors"]] == ["CATEGORY_LIMIT_EXCEEDED"]
    assert (await team.ok(team.member, GET, {"id": e2["id"]}))["expense"]["status"] == "DRAFT"


async def test_policy_as_data(team):
    default = await team.ok(team.owner, "{ approvalPolicy { steps { aboveMxn role } } }")
    assert [s["aboveMxn"] for s in default["approvalPolicy"]["steps"]] == ["0", "5000", "50000"]
    denied = await team.api.execute(POLICY, {"i": {"steps": [{"aboveMxn": "0"}]}}, token=team.approver.token)
    assert denied.error_codes == ["FORBIDDEN"]
    bad = (await team.ok(team.owner, POLICY, {"i": {"steps": [{"aboveMxn": "0", "role": "REY"}]}}))["updateApprovalPolicy"]
    assert bad["userErrors"][0]["field"] == ["input", "steps", "0", "role"]
    # Everything above 100 MXN needs the owner, and only the owner.
    ok = (await team.ok(team.owner, POLICY, {"i": {"steps": [{"aboveMxn": "100", "role": "OWNER"}]}}))["updateApprovalPolicy"]
    assert ok["userErrors"] == []
    e = await create(team, amount="200.00")
    await act(team, team.member, SUBMIT, e["id"])
    assert [u["code"] for u in (await act(team, team.approver, APPROVE, e["id"]))["userErrors"]] == ["NOT_YOUR_STEP"]
    assert (await act(team, team.owner, APPROVE, e["id"]))["expense"]["status"] == "APPROVED"


async def test_reports_submit_together_and_lists_page(team):
    a, b = await create(team, amount="10.00"), await create(team, amount="20.00")
    rep = (await team.ok(team.member, REPORT, {"i": {"title": "Viaje a Monterrey", "expenseIds": [a["id"], b["id"]]}}))["createExpenseReport"]
    assert rep["userErrors"] == []
    out = (await team.ok(team.member, SUBMIT_REPORT, {"id": rep["report"]["id"]}))["submitExpenseReport"]
    assert out["userErrors"] == [] and out["report"]["status"] == "SUBMITTED" and out["report"]["totalMxn"] == "30.00"
    assert [x["status"] for x in out["report"]["expenses"]] == ["SUBMITTED", "SUBMITTED"]
    assert [r["title"] for r in (await team.ok(team.member, REPORTS))["expenseReports"]["nodes"]] == ["Viaje a Monterrey"]
    page1 = (await team.ok(team.member, LIST, {"n": 1}))["expenses"]
    page2 = (await team.ok(team.member, LIST, {"n": 1, "a": page1["pageInfo"]["endCursor"]}))["expenses"]
    assert page1["pageInfo"]["hasNextPage"] and page1["edges"][0]["node"]["id"] == b["id"]
    assert page2["edges"][0]["node"]["id"] == a["id"]


async def test_members_see_their_own_readers_see_all(team):
    mine = await create(team)
    theirs = await create(team, who=team.approver)
    member_view = {e["node"]["id"] for e in (await team.ok(team.member, LIST))["expenses"]["edges"]}
    assert mine["id"] in member_view and theirs["id"] not in member_view
    assert (await team.ok(team.member, GET, {"id": theirs["id"]}))["expense"] is None
    owner_view = {e["node"]["id"] for e in (await team.ok(team.owner, LIST))["expenses"]["edges"]}
    assert {mine["id"], theirs["id"]} <= owner_view


async def test_no_operation_reaches_another_organization(team, new_team):
    other = await new_team()
    e = await create(team)
    await act(team, team.member, SUBMIT, e["id"])
    x = other.owner
    assert (await other.ok(x, GET, {"id": e["id"]}))["expense"] is None
    assert e["id"] not in {n["node"]["id"] for n in (await other.ok(x, LIST))["expenses"]["edges"]}
    assert e["id"] not in {n["id"] for n in (await other.ok(x, PENDING))["pendingApprovals"]["nodes"]}
    for mutation, extra in ((APPROVE, {}), (REJECT, {"r": "no"}), (REIMBURSE, {}), (SUBMIT, {})):
        r = await other.api.execute(mutation, {"id": e["id"], **extra}, token=x.token)
        assert r.error_codes == ["NOT_FOUND"], (mutation, r.errors)
    r = await other.api.execute(UPDATE, {"id": e["id"], "i": {"description": "x"}}, token=x.token)
    assert r.error_codes == ["NOT_FOUND"]
    r = await other.api.execute("mutation($id: ID!) { attachSupplierCfdi(expenseId: $id, xml: \"<x/>\") { userErrors { code } } }",
                                {"id": e["id"]}, token=x.token)
    assert r.error_codes == ["NOT_FOUND"]
    rep = (await team.ok(team.member, REPORT, {"i": {"title": "R", "expenseIds": []}}))["createExpenseReport"]["report"]
    r = await other.api.execute(SUBMIT_REPORT, {"id": rep["id"]}, token=x.token)
    assert r.error_codes == ["NOT_FOUND"]
    assert rep["id"] not in {n["id"] for n in (await other.ok(x, REPORTS))["expenseReports"]["nodes"]}
    cat = (await team.ok(team.owner, CATEGORY, {"i": {"name": "Hospedaje"}}))["createExpenseCategory"]["category"]
    mine = (await other.ok(other.member, CREATE, {"i": draft(categoryId=cat["id"])}))["createExpense"]
    assert [u["code"] for u in mine["userErrors"]] == ["UNKNOWN_CATEGORY"]
    bad_policy = (await other.ok(x, POLICY, {"i": {"steps": [{"aboveMxn": "0", "categoryIds": [cat["id"]]}]}}))["updateApprovalPolicy"]
    assert [u["code"] for u in bad_policy["userErrors"]] == ["UNKNOWN_CATEGORY"]
    assert (await team.ok(team.member, GET, {"id": e["id"]}))["expense"]["status"] == "SUBMITTED"


async def test_anonymous_is_refused(api):
    r = await api.execute("{ expenses { nodes { id } } }")
    assert r.error_codes == ["UNAUTHENTICATED"]
