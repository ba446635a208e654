"""Members, roles, invitations and API keys; and the walls between organizations."""

from __future__ import annotations

import jwt
from sqlalchemy import text

from tests.auth.conftest import LOG_IN, PASSWORD, new_uuid
from tests.conftest import unique_email

INVITE = """mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { invitation { id email role } userErrors { code field } } }"""
ACCEPT = "mutation($t: String!) { acceptInvitation(token: $t) { tokens { accessToken refreshToken organizationId } userErrors { code } } }"
MEMBERS = "{ members(first: 10) { edges { node { role user { email } } } pageInfo { hasNextPage endCursor } } }"
ROLE = """mutation($u: ID!, $r: Role!) { changeMemberRole(userId: $u, role: $r) { membership { role } userErrors { code field } } }"""
REMOVE = "mutation($u: ID!) { removeMember(userId: $u) { success userErrors { code } } }"


async def _invitation_token(mail_token, email: str) -> str:
    """The token exists only in the e-mail: mint it as the mail worker does."""
    return await mail_token("auth.member_invited", email)


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def _join(gql, sign_up, mail_token, owner, role: str):
    member = await sign_up(org="Personal")
    await gql.ok(INVITE, {"e": member.email, "r": role}, token=owner.token)
    token = await _invitation_token(mail_token, member.email)
    r = (await gql.ok(ACCEPT, {"t": token}, token=member.token))["acceptInvitation"]
    assert r["userErrors"] == [] and r["tokens"]["organizationId"] == owner.org_id
    member.tokens = {**member.tokens, **r["tokens"]}
    return member


async def test_invite_accept_and_list_members(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    member = await _join(gql, sign_up, mail_token, owner, "ACCOUNTANT")
    assert "invoice:issue" in _claims(member.token)["perms"] and "org:manage" not in _claims(member.token)["perms"]
    roles = {e["node"]["user"]["email"]: e["node"]["role"] for e in (await gql.ok(MEMBERS, token=owner.token))["members"]["edges"]}
    assert roles == {owner.email: "OWNER", member.email: "ACCOUNTANT"}


async def test_invitation_is_single_use_and_bound_to_the_email(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    invited_email = unique_email("inv")
    await gql.ok(INVITE, {"e": invited_email, "r": "MEMBER"}, token=owner.token)
    token = await _invitation_token(mail_token, invited_email)
    stranger = await sign_up()
    r = (await gql.ok(ACCEPT, {"t": token}, token=stranger.token))["acceptInvitation"]
    assert r["userErrors"][0]["code"] == "INVITATION_EMAIL_MISMATCH"
    invited = await sign_up(email=invited_email)
    assert (await gql.ok(ACCEPT, {"t": token}, token=invited.token))["acceptInvitation"]["userErrors"] == []
    again = (await gql.ok(ACCEPT, {"t": token}, token=invited.token))["acceptInvitation"]
    assert again["userErrors"][0]["code"] == "INVALID_INVITATION"


async def test_roles_are_enforced(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    member = await _join(gql, sign_up, mail_token, owner, "MEMBER")
    r = await gql.execute(INVITE, {"e": unique_email(), "r": "ADMIN"}, token=member.token)
    assert r.error_codes == ["FORBIDDEN"]
    r = await gql.execute(MEMBERS, token=member.token)
    assert r.error_codes == ["FORBIDDEN"]
    admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    # An ADMIN manages members but cannot touch owners.
    me_id = (await gql.ok("{ me { id } }", token=owner.token))["me"]["id"]
    r = await gql.execute(ROLE, {"u": me_id, "r": "MEMBER"}, token=admin.token)
    assert r.error_codes == ["FORBIDDEN"]


async def test_last_owner_cannot_leave_or_be_demoted(gql, sign_up):
    owner = await sign_up()
    me_id = (await gql.ok("{ me { id } }", token=owner.token))["me"]["id"]
    r = (await gql.ok(ROLE, {"u": me_id, "r": "ADMIN"}, token=owner.token))["changeMemberRole"]
    assert r["userErrors"] == [{"code": "LAST_OWNER", "field": ["role"]}]
    r = (await gql.ok(REMOVE, {"u": me_id}, token=owner.token))["removeMember"]
    assert r["userErrors"][0]["code"] == "LAST_OWNER"


async def test_removed_member_loses_access_and_sessions(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    member = await _join(gql, sign_up, mail_token, owner, "ACCOUNTANT")
    member_id = (await gql.ok("{ me { id } }", token=member.token))["me"]["id"]
    assert (await gql.ok(REMOVE, {"u": member_id}, token=owner.token))["removeMember"]["success"]
    r = (await gql.ok("mutation($t: String!) { refreshTokens(refreshToken: $t) { tokens { accessToken } userErrors { code } } }",
                      {"t": member.tokens["refreshToken"]}))["refreshTokens"]
    assert r["tokens"] is None
    # Logging in again lands in their own organization, not the one they were removed from.
    again = (await gql.ok(LOG_IN, {"input": {"email": member.email, "password": PASSWORD, "organizationId": owner.org_id}}))["logIn"]
    assert again["userErrors"][0]["code"] == "NOT_A_MEMBER"


async def test_organization_a_cannot_see_or_act_on_organization_b(gql, sign_up, auth_runtime):
    a, b = await sign_up(org="A SA"), await sign_up(org="B SA")
    b_user = (await gql.ok("{ me { id } }", token=b.token))["me"]["id"]
    # Entity lookups the gateway would make: B's user and organization are invisible to A.
    ents = await gql.ok("""query($r: [_Any!]!) { _entities(representations: $r) {
        ... on User { email } ... on Organization { name } } }""",
                        {"r": [{"__typename": "User", "id": b_user}, {"__typename": "Organization", "id": b.org_id}]}, token=a.token)
    assert ents["_entities"] == [None, None]
    # Acting on B's member from A fails: not a member of A's organization.
    r = (await gql.ok(REMOVE, {"u": b_user}, token=a.token))["removeMember"]
    assert r["userErrors"][0]["code"] == "NOT_A_MEMBER"
    r = (await gql.ok(ROLE, {"u": b_user, "r": "MEMBER"}, token=a.token))["changeMemberRole"]
    assert r["userErrors"][0]["code"] == "NOT_A_MEMBER"
    # Switching into B is refused.
    sw = (await gql.ok("mutation($o: ID!) { switchOrganization(organizationId: $o) { tokens { accessToken } userErrors { code } } }",
                       {"o": b.org_id}, token=a.token))["switchOrganization"]
    assert sw["userErrors"][0]["code"] == "NOT_A_MEMBER"
    # Members listing only ever shows A.
    emails = [e["node"]["user"]["email"] for e in (await gql.ok(MEMBERS, token=a.token))["members"]["edges"]]
    assert emails == [a.email]


async def test_switch_organization_between_memberships(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up(org="Principal")
    member = await _join(gql, sign_up, mail_token, owner, "APPROVER")
    own_org = _claims((await gql.ok(LOG_IN, {"input": {"email": member.email, "password": PASSWORD,
                                                         "organizationId": None}}))["logIn"]["tokens"]["accessToken"])["org"]
    sw = (await gql.ok("mutation($o: ID!) { switchOrganization(organizationId: $o) { tokens { accessToken organizationId } } }",
                       {"o": owner.org_id}, token=member.token))["switchOrganization"]["tokens"]
    assert sw["organizationId"] == owner.org_id
    assert "expense:approve" in _claims(sw["accessToken"])["perms"]
    assert own_org in (owner.org_id, member.tokens["organizationId"])


async def test_api_keys_are_hashed_limited_and_revocable(gql, sign_up, auth_runtime):
    owner = await sign_up()
    created = (await gql.ok("""mutation { createApiKey(name: "n8n facturas", permissions: ["invoice:read", "invoice:issue"]) {
        key apiKey { id prefix permissions } userErrors { code } } }""", token=owner.token))["createApiKey"]
    key = created["key"]
    assert key.startswith("fk_") and created["apiKey"]["prefix"] == key[:10]
    async with auth_runtime.sessionmaker() as s:
        stored = (await s.execute(text("SELECT key_hash FROM auth.api_keys WHERE id = :i"), {"i": created["apiKey"]["id"]})).scalar_one()
    assert key not in stored and len(stored) == 64

    ex = (await gql.ok("mutation($k: String!) { exchangeApiKey(key: $k) { accessToken userErrors { code } } }", {"k": key}))["exchangeApiKey"]
    claims = _claims(ex["accessToken"])
    assert claims["perms"] == ["invoice:issue", "invoice:read"] and claims["akid"] == created["apiKey"]["id"]
    # The key's token cannot manage the organization nor credentials.
    assert (await gql.execute("{ apiKeys { id } }", token=ex["accessToken"])).error_codes == ["FORBIDDEN"]
    enroll = await gql.execute("mutation { enrollTotp { secret } }", token=ex["accessToken"])
    assert enroll.error_codes == ["FORBIDDEN"]

    bad = (await gql.ok("""mutation { createApiKey(name: "x", permissions: ["root:everything"]) { key userErrors { code field } } }""",
                        token=owner.token))["createApiKey"]
    assert bad["key"] is None and bad["userErrors"] == [{"code": "INVALID_PERMISSION", "field": ["permissions"]}]

    await gql.ok("mutation($i: ID!) { revokeApiKey(id: $i) { apiKey { revokedAt } } }", {"i": created["apiKey"]["id"]}, token=owner.token)
    dead = (await gql.ok("mutation($k: String!) { exchangeApiKey(key: $k) { accessToken userErrors { code } } }", {"k": key}))["exchangeApiKey"]
    assert dead["accessToken"] is None and dead["userErrors"][0]["code"] == "INVALID_API_KEY"


async def test_api_key_cannot_carry_permissions_its_creator_lacks(gql, sign_up, auth_runtime, mail_token):
    owner = await sign_up()
    accountant = await _join(gql, sign_up, mail_token, owner, "ACCOUNTANT")
    # An accountant has no org:manage, so cannot create keys at all.
    r = await gql.execute("""mutation { createApiKey(name: "x", permissions: ["invoice:read"]) { key } }""", token=accountant.token)
    assert r.error_codes == ["FORBIDDEN"]


async def test_another_organizations_api_key_cannot_be_revoked(gql, sign_up):
    a, b = await sign_up(), await sign_up()
    created = (await gql.ok("""mutation { createApiKey(name: "b", permissions: ["invoice:read"]) { apiKey { id } } }""",
                            token=b.token))["createApiKey"]
    r = (await gql.ok("mutation($i: ID!) { revokeApiKey(id: $i) { apiKey { id } userErrors { code } } }",
                      {"i": created["apiKey"]["id"]}, token=a.token))["revokeApiKey"]
    assert r["userErrors"][0]["code"] == "NOT_FOUND"
    assert new_uuid()


async def test_members_pages_with_cursors_and_refuses_forged_ones(gql, sign_up, auth_runtime, mail_token):
    from shared.pagination import encode_cursor

    owner = await sign_up()
    for _ in range(2):
        await _join(gql, sign_up, mail_token, owner, "MEMBER")
    q = "query($a: String) { members(first: 2, after: $a) { edges { node { user { email } } } pageInfo { hasNextPage endCursor } } }"
    first = (await gql.ok(q, {"a": None}, token=owner.token))["members"]
    assert len(first["edges"]) == 2 and first["pageInfo"]["hasNextPage"]
    second = (await gql.ok(q, {"a": first["pageInfo"]["endCursor"]}, token=owner.token))["members"]
    assert len(second["edges"]) == 1 and not second["pageInfo"]["hasNextPage"]
    emails = {e["node"]["user"]["email"] for e in first["edges"] + second["edges"]}
    assert len(emails) == 3
    forged = await gql.execute(q, {"a": encode_cursor(["ayer", "nadie"])}, token=owner.token)
    assert forged.error_codes == ["INVALID_CURSOR"]
