from __future__ import annotations

from sqlalchemy import text

from tests.auth.conftest import LOG_IN, PASSWORD
from tests.conftest import unique_email

CHANGE = """mutation($i: ChangePasswordInput!) { changePassword(input: $i) { success userErrors { code field } } }"""
REFRESH = "mutation($t: String!) { refreshTokens(refreshToken: $t) { tokens { refreshToken } userErrors { code } } }"


async def test_password_hash_is_argon2id(sign_up, auth_runtime):
    acct = await sign_up()
    async with auth_runtime.sessionmaker() as s:
        h = (await s.execute(text("SELECT password_hash FROM auth.users WHERE email = :e"), {"e": acct.email})).scalar_one()
    assert h.startswith("$argon2id$") and PASSWORD not in h


async def test_change_password_revokes_other_sessions_but_not_this_one(gql, sign_up):
    acct = await sign_up()
    other = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]["tokens"]
    wrong = (await gql.ok(CHANGE, {"i": {"currentPassword": "nope-nope-nope", "newPassword": "otra-contrasena-larga"}},
                          token=acct.token))["changePassword"]
    assert wrong["userErrors"] == [{"code": "INVALID_CREDENTIALS", "field": ["input", "currentPassword"]}]
    ok = (await gql.ok(CHANGE, {"i": {"currentPassword": PASSWORD, "newPassword": "otra-contrasena-larga"}}, token=acct.token))["changePassword"]
    assert ok["success"]
    assert (await gql.ok(REFRESH, {"t": other["refreshToken"]}))["refreshTokens"]["userErrors"][0]["code"] == "INVALID_REFRESH_TOKEN"
    assert (await gql.ok(REFRESH, {"t": acct.tokens["refreshToken"]}))["refreshTokens"]["userErrors"] == []
    new_login = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": "otra-contrasena-larga"}}))["logIn"]
    assert new_login["tokens"]


async def test_password_reset_flow_is_single_use_and_does_not_enumerate(gql, sign_up, mail_token):
    acct = await sign_up()
    q = "mutation($e: String!) { requestPasswordReset(email: $e) { success userErrors { code } } }"
    known = await gql.ok(q, {"e": acct.email})
    unknown = await gql.ok(q, {"e": unique_email()})
    assert known == unknown == {"requestPasswordReset": {"success": True, "userErrors": []}}
    token = await mail_token("auth.password_reset_requested", acct.email)
    reset = "mutation($i: ResetPasswordInput!) { resetPassword(input: $i) { success userErrors { code field } } }"
    weak = (await gql.ok(reset, {"i": {"token": token, "newPassword": "corta"}}))["resetPassword"]
    assert weak["userErrors"][0]["code"] == "WEAK_PASSWORD"
    # The weak attempt wrote nothing: the token is still good.
    ok = (await gql.ok(reset, {"i": {"token": token, "newPassword": "nueva-contrasena-segura"}}))["resetPassword"]
    assert ok["success"]
    again = (await gql.ok(reset, {"i": {"token": token, "newPassword": "nueva-contrasena-segura-2"}}))["resetPassword"]
    assert again["userErrors"][0]["code"] == "INVALID_TOKEN"
    assert (await gql.ok(REFRESH, {"t": acct.tokens["refreshToken"]}))["refreshTokens"]["userErrors"]  # sessions ended
    assert (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": "nueva-contrasena-segura"}}))["logIn"]["tokens"]


async def test_email_verification(gql, sign_up, mail_token, auth_runtime):
    acct = await sign_up()
    # Accounts from before sign-up confirmed the address (or after an address change) verify it here.
    async with auth_runtime.sessionmaker() as s, s.begin():
        await s.execute(text("UPDATE auth.users SET email_verified_at = NULL WHERE email = :e"), {"e": acct.email})
    assert (await gql.ok("{ me { emailVerified } }", token=acct.token))["me"]["emailVerified"] is False
    assert (await gql.ok("mutation { resendEmailVerification { success } }", token=acct.token))["resendEmailVerification"]["success"]
    token = await mail_token("auth.email_verification_requested", acct.email)
    r = await gql.ok("mutation($t: String!) { verifyEmail(token: $t) { user { emailVerified } userErrors { code } } }", {"t": token})
    assert r["verifyEmail"]["user"]["emailVerified"] is True
    again = await gql.ok("mutation($t: String!) { verifyEmail(token: $t) { user { emailVerified } userErrors { code field } } }", {"t": token})
    assert again["verifyEmail"]["userErrors"] == [{"code": "INVALID_TOKEN", "field": ["token"]}]
