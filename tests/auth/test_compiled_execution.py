"""The auth subgraph's persisted queries give the same JSON on the compiled and generic paths."""

from __future__ import annotations

from subgraphs.auth.schema import schema as auth_schema
from tests.compiled_diff import assert_persisted_queries_match


async def test_persisted_auth_queries_match(gql, sign_up):
    account = await sign_up()
    names = await assert_persisted_queries_match(
        auth_schema, lambda q, v: gql.execute(q, v, token=account.token), [{}])
    assert "Me" in names
    # Anonymous: the errors (UNAUTHENTICATED, null data) match too.
    await assert_persisted_queries_match(auth_schema, gql.execute, [{}])
