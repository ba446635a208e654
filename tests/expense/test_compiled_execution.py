"""The expense subgraph's part of the persisted queries (as the gateway cuts it) gives the same
JSON on the compiled and generic paths."""

from __future__ import annotations

from subgraphs.expense.schema import schema as expense_schema
from tests.compiled_diff import assert_persisted_queries_match

CREATE = "mutation { createExpense(input: {amount: \"10.00\", date: \"2026-11-20\", paymentMethod: CASH}) { expense { id } } }"


async def test_persisted_expense_queries_match(team):
    ids = [(await team.ok(team.member, CREATE))["createExpense"]["expense"]["id"] for _ in range(2)]
    for who in (team.member, team.owner):
        names = await assert_persisted_queries_match(
            expense_schema, lambda q, v: team.api.execute(q, v, token=who.token),
            [{"id": ids[0], "first": 5}, {"id": "00000000-0000-4000-8000-000000000000", "first": 1},
             {"id": "nope", "first": -1, "after": "garbage"}])
    assert {"Expense", "Expenses"} <= set(names), names
