"""The notification subgraph's persisted queries give the same JSON on the compiled and generic
paths."""

from __future__ import annotations

from subgraphs.notification.schema import schema as notification_schema
from tests.compiled_diff import assert_persisted_queries_match
from tests.notification.conftest import claims
from tests.notification.test_graphql import notify


async def test_persisted_notification_queries_match(rt, ngql, sign_up):
    account = await sign_up()
    await notify(rt, *claims(account.token), 3)
    names = await assert_persisted_queries_match(
        notification_schema, lambda q, v: ngql.execute(q, v, token=account.token),
        [{"first": 2}, {"first": 10, "unreadOnly": True}, {"first": -1, "after": "garbage"}])
    assert {"Inbox", "McpNotificationsList"} <= set(names), names
