"""Smaller items of issue #7: revoking invitations, what a member may see of other members, and
error `field` paths that name what the client sent."""

from __future__ import annotations

from tests.auth.test_organizations import INVITE, _join
from tests.conftest import unique_email

REVOKE = "mutation($i: ID!) { revokeInvitation(id: $i) { invitation { id revokedAt } userErrors { code field } } }"
ACCEPT = "mutation($t: String!) { acceptInvitation(token: $t) { tokens { accessToken } userErrors { code } } }"
PENDING = "{ invitations { id email } }"
USERS = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id fullName email mfaEnabled emailVerified locale } } }"


async def _invite(gql, owner, email: str) -> str:
    r = (await gql.ok(INVITE, {"e": email, "r": "MEMBER"}, token=owner.token))["inviteMember"]
    assert r["userErrors"] == []
    return r["invitation"]["id"]


async def test_revoked_invitation_cannot_be_accepted_nor_its_link_mailed(gql, sign_up, mail_token):
    owner = await sign_up()
    email = unique_email("inv")
    inv = await _invite(gql, owner, email)
    token = await mail_token("auth.member_invited", email)
    r = (await gql.ok(REVOKE, {"i": inv}, token=owner.token))["revokeInvitation"]
    assert r["userErrors"] == [] and r["invitation"]["revokedAt"]
    assert inv not in [i["id"] for i in (await gql.ok(PENDING, token=owner.token))["invitations"]]
    invited = await sign_up(email=email)
    assert (await gql.ok(ACCEPT, {"t": token}, token=invited.token))["acceptInvitation"]["userErrors"][0]["code"] == "INVALID_INVITATION"
    assert await mail_token("auth.member_invited", email) is None  # a queued e-mail would not get a link either


async def test_another_organizations_invitation_cannot_be_revoked(gql, sign_up, mail_token):
    a, b = await sign_up(org="A"), await sign_up(org="B")
    email = unique_email("inv")
    inv = await _invite(gql, b, email)
    r = (await gql.ok(REVOKE, {"i": inv}, token=a.token))["revokeInvitation"]
    assert r["userErrors"] == [{"code": "NOT_FOUND", "field": ["id"]}]
    assert inv in [i["id"] for i in (await gql.ok(PENDING, token=b.token))["invitations"]]
    member = await _join(gql, sign_up, mail_token, b, "MEMBER")  # and a member of B lacks org:manage
    assert (await gql.execute(REVOKE, {"i": inv}, token=member.token)).error_codes == ["FORBIDDEN"]
    bad = (await gql.ok(REVOKE, {"i": "no-es-uuid"}, token=b.token))["revokeInvitation"]
    assert bad["userErrors"] == [{"code": "INVALID_ID", "field": ["id"]}]


async def test_member_sees_other_members_names_but_not_their_email_or_mfa(gql, sign_up, mail_token):
    """Invoice.createdBy and history actors resolve through this entity: a MEMBER (no members:read)
    sees a colleague's name only; themselves in full; members:read sees everyone in full."""
    owner = await sign_up()
    member = await _join(gql, sign_up, mail_token, owner, "MEMBER")
    accountant = await _join(gql, sign_up, mail_token, owner, "ACCOUNTANT")
    owner_id = (await gql.ok("{ me { id } }", token=owner.token))["me"]["id"]
    member_id = (await gql.ok("{ me { id } }", token=member.token))["me"]["id"]
    reps = [{"__typename": "User", "id": owner_id}, {"__typename": "User", "id": member_id}]

    seen_by_member = (await gql.ok(USERS, {"r": reps}, token=member.token))["_entities"]
    assert seen_by_member[0] == {"id": owner_id, "fullName": "Ana López", "email": None, "mfaEnabled": None,
                                 "emailVerified": None, "locale": None}
    assert seen_by_member[1]["email"] == member.email and seen_by_member[1]["mfaEnabled"] is False  # self, always
    seen_by_accountant = (await gql.ok(USERS, {"r": reps}, token=accountant.token))["_entities"]
    assert [u["email"] for u in seen_by_accountant] == [owner.email, member.email]


async def test_field_paths_name_the_arguments_the_client_sent(gql, sign_up):
    r = (await gql.ok("mutation($t: String!) { refreshTokens(refreshToken: $t) { userErrors { code field } } }", {"t": "rt_nope"}))
    assert r["refreshTokens"]["userErrors"] == [{"code": "INVALID_REFRESH_TOKEN", "field": ["refreshToken"]}]
    acct = await sign_up()
    await gql.ok("mutation { enrollTotp { secret } }", token=acct.token)
    r = await gql.ok("mutation($c: String!) { confirmTotp(code: $c) { userErrors { code field } } }", {"c": "12345"}, token=acct.token)
    assert r["confirmTotp"]["userErrors"] == [{"code": "INVALID_MFA_CODE", "field": ["code"]}]
    r = await gql.ok("mutation($o: ID!) { switchOrganization(organizationId: $o) { userErrors { code field } } }", {"o": "x"},
                     token=acct.token)
    assert r["switchOrganization"]["userErrors"] == [{"code": "INVALID_ID", "field": ["organizationId"]}]
    r = await gql.ok("mutation($t: String!) { verifyEmail(token: $t) { userErrors { code field } } }", {"t": "nope"})
    assert r["verifyEmail"]["userErrors"] == [{"code": "INVALID_TOKEN", "field": ["token"]}]
