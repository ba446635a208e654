"""List fields and entity references are batched: the number of SQL statements for a page of
members does not grow with the page."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event

from tests.auth.test_organizations import _join

QUERY = "{ members(first: 50) { edges { node { role user { email fullName } organization { name } } } } }"


@contextmanager
def count_statements(engine):
    seen: list[str] = []

    def before(conn, cursor, statement, params, context, executemany):
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def test_members_page_costs_the_same_for_2_and_6_members(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    await _join(gql, sign_up, mail_token, owner, "MEMBER")
    await gql.ok(QUERY, token=owner.token)  # warm the signing-key cache and verifier
    with count_statements(auth_runtime.engine) as small:
        r = await gql.ok(QUERY, token=owner.token)
    assert len(r["members"]["edges"]) == 2
    for _ in range(4):
        await _join(gql, sign_up, mail_token, owner, "MEMBER")
    with count_statements(auth_runtime.engine) as large:
        r = await gql.ok(QUERY, token=owner.token)
    assert len(r["members"]["edges"]) == 6
    assert len(large) == len(small), (small, large)
    assert len(small) <= 4


async def test_entity_references_are_one_query_per_batch(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    members = [await _join(gql, sign_up, mail_token, owner, "MEMBER") for _ in range(3)]
    ids = [(await gql.ok("{ me { id } }", token=m.token))["me"]["id"] for m in members]
    reps = [{"__typename": "User", "id": i} for i in ids]
    q = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { email } } }"
    await gql.ok(q, {"r": reps[:1]}, token=owner.token)
    with count_statements(auth_runtime.engine) as one:
        await gql.ok(q, {"r": reps[:1]}, token=owner.token)
    with count_statements(auth_runtime.engine) as three:
        r = await gql.ok(q, {"r": reps}, token=owner.token)
    assert sorted(e["email"] for e in r["_entities"]) == sorted(m.email for m in members)
    assert len(three) == len(one)
