"""A demoted or removed member's still-unexpired access token restores nothing (issue #7, High 1).

Two walls, each tested on its own: every subgraph refuses a token minted before the member's role
changed (membership version, shared/authz.py), and every membership/role/invitation/API-key
mutation decides from the member's locked row, whatever the token's `perms` claim says."""

from __future__ import annotations

import uuid

import jwt
import pytest

from shared.authz import MembershipVersions
from shared.errors import ForbiddenError
from subgraphs.auth import service
from tests.auth.conftest import PASSWORD
from tests.auth.test_organizations import INVITE, REMOVE, ROLE, _join
from tests.conftest import unique_email

ME = "{ me { id } }"
ACCEPT = "mutation($t: String!) { acceptInvitation(token: $t) { tokens { accessToken } userErrors { code } } }"
CREATE_KEY = """mutation { createApiKey(name: "escape", permissions: ["org:manage"]) { key userErrors { code } } }"""
REFRESH = "mutation($t: String!) { refreshTokens(refreshToken: $t) { tokens { accessToken } userErrors { code field } } }"


async def _id(gql, account) -> str:
    return (await gql.ok(ME, token=account.token))["me"]["id"]


async def _principal(rt, token: str):
    return await rt.verifier.principal(token)


async def test_demoted_admin_old_token_is_refused_everywhere(gql, sign_up, mail_token, auth_runtime):
    owner = await sign_up()
    admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    other_admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    admin_id, other_id = await _id(gql, admin), await _id(gql, other_admin)
    old = admin.token
    assert "org:manage" in jwt.decode(old, options={"verify_signature": False})["perms"]

    r = (await gql.ok(ROLE, {"u": admin_id, "r": "MEMBER"}, token=owner.token))["changeMemberRole"]
    assert r["userErrors"] == []

    # Back to ADMIN, another admin removed, an org:manage key: all refused with the old token.
    assert (await gql.execute(ROLE, {"u": admin_id, "r": "ADMIN"}, token=old)).error_codes == ["STALE_TOKEN"]
    assert (await gql.execute(REMOVE, {"u": other_id}, token=old)).error_codes == ["STALE_TOKEN"]
    assert (await gql.execute(CREATE_KEY, token=old)).error_codes == ["STALE_TOKEN"]
    assert (await gql.execute(ME, token=old)).error_codes == ["STALE_TOKEN"]  # any other permission too
    roles = {e["node"]["user"]["email"]: e["node"]["role"]
             for e in (await gql.ok("{ members(first: 10) { edges { node { role user { email } } } } }", token=owner.token))["members"]["edges"]}
    assert roles[admin.email] == "MEMBER" and roles[other_admin.email] == "ADMIN"

    # A refresh gives a token for what the member is now: MEMBER, no org:manage.
    fresh = (await gql.ok(REFRESH, {"t": admin.tokens["refreshToken"]}))["refreshTokens"]["tokens"]["accessToken"]
    assert "org:manage" not in jwt.decode(fresh, options={"verify_signature": False})["perms"]
    assert (await gql.execute(ROLE, {"u": admin_id, "r": "ADMIN"}, token=fresh)).error_codes == ["FORBIDDEN"]


async def test_mutations_decide_from_the_database_not_the_perms_claim(gql, sign_up, mail_token, auth_runtime):
    """Even a token whose version were current (a lagging cache) gets nowhere: the service re-reads
    the caller's role under lock."""
    owner = await sign_up()
    admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    other_admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    admin_id, other_id = uuid.UUID(await _id(gql, admin)), uuid.UUID(await _id(gql, other_admin))
    stale = await _principal(auth_runtime, admin.token)
    await gql.ok(ROLE, {"u": str(admin_id), "r": "MEMBER"}, token=owner.token)

    with pytest.raises(ForbiddenError):
        await service.change_member_role(auth_runtime, stale, user_id=admin_id, role="ADMIN")
    with pytest.raises(ForbiddenError):
        await service.remove_member(auth_runtime, stale, user_id=other_id)
    with pytest.raises(ForbiddenError):
        await service.create_api_key(auth_runtime, stale, name="escape", permissions=["org:manage"])
    with pytest.raises(ForbiddenError):
        await service.invite_member(auth_runtime, stale, email=unique_email(), role="ADMIN")


async def test_removed_member_cannot_invite_themselves_back(gql, sign_up, mail_token, auth_runtime):
    owner = await sign_up()
    admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    admin_id = uuid.UUID(await _id(gql, admin))
    stale = await _principal(auth_runtime, admin.token)
    # An invitation the admin sent before removal dies with the removal.
    friend = unique_email("friend")
    await gql.ok(INVITE, {"e": friend, "r": "ADMIN"}, token=admin.token)
    assert (await gql.ok(REMOVE, {"u": str(admin_id)}, token=owner.token))["removeMember"]["success"]

    assert (await gql.execute(INVITE, {"e": admin.email, "r": "ADMIN"}, token=admin.token)).error_codes == ["STALE_TOKEN"]
    with pytest.raises(ForbiddenError):
        await service.invite_member(auth_runtime, stale, email=admin.email, role="ADMIN")
    assert await mail_token("auth.member_invited", friend) is None  # no working link can be minted
    # Their own-organization token (a separate membership) still cannot accept what does not exist.
    own = await gql.ok("mutation($i: LogInInput!) { logIn(input: $i) { tokens { accessToken organizationId } } }",
                       {"i": {"email": admin.email, "password": PASSWORD}})
    assert own["logIn"]["tokens"]["organizationId"] != owner.org_id


async def test_api_key_token_of_a_demoted_creator_is_refused(gql, sign_up, mail_token):
    owner = await sign_up()
    admin = await _join(gql, sign_up, mail_token, owner, "ADMIN")
    key = (await gql.ok("""mutation { createApiKey(name: "k", permissions: ["members:read"]) { key } }""", token=admin.token))["createApiKey"]["key"]
    key_token = (await gql.ok("mutation($k: String!) { exchangeApiKey(key: $k) { accessToken } }", {"k": key}))["exchangeApiKey"]["accessToken"]
    assert (await gql.ok("{ members(first: 5) { edges { node { role } } } }", token=key_token))
    await gql.ok(ROLE, {"u": await _id(gql, admin), "r": "MEMBER"}, token=owner.token)
    assert (await gql.execute("{ members(first: 5) { edges { node { role } } } }", token=key_token)).error_codes == ["STALE_TOKEN"]


async def test_rolled_back_change_only_refuses_more(gql, sign_up, auth_runtime):
    """The minimum goes to Redis before the commit; if the commit never happens, tokens are
    refused (too strict), and the next issued token carries the raised version (works again)."""
    owner = await sign_up()
    p = await _principal(auth_runtime, owner.token)
    await auth_runtime.authz.raise_minimum(p.organization_id, p.user_id, p.authz_version + 5, keep_seconds=60)
    assert (await gql.execute(ME, token=owner.token)).error_codes == ["STALE_TOKEN"]
    fresh = (await gql.ok(REFRESH, {"t": owner.tokens["refreshToken"]}))["refreshTokens"]["tokens"]["accessToken"]
    assert jwt.decode(fresh, options={"verify_signature": False})["ver"] == p.authz_version + 5
    assert (await gql.ok(ME, token=fresh))["me"]["id"]


async def test_version_cache_lags_at_most_its_ttl(redis_url):
    from redis.asyncio import Redis

    now = [100.0]
    redis = Redis.from_url(redis_url)
    try:
        writer = MembershipVersions(redis, cache_seconds=0)
        reader = MembershipVersions(redis, cache_seconds=1.0, clock=lambda: now[0])
        org, user = uuid.uuid4(), uuid.uuid4()
        assert await reader.is_current(org, user, 1)
        await writer.raise_minimum(org, user, 2, keep_seconds=60)
        assert await reader.is_current(org, user, 1)  # cached for up to 1 s
        now[0] += 1.01
        assert not await reader.is_current(org, user, 1) and await reader.is_current(org, user, 2)
    finally:
        await redis.aclose()

