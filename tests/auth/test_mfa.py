from __future__ import annotations

import pyotp

from tests.auth.conftest import LOG_IN, PASSWORD, totp_now

ENROLL = "mutation { enrollTotp { secret otpauthUri qrCodeSvg userErrors { code } } }"
CONFIRM = "mutation($c: String!) { confirmTotp(code: $c) { recoveryCodes userErrors { code field } } }"
VERIFY = """mutation($i: VerifyMfaInput!) { verifyMfa(input: $i) { tokens { accessToken } userErrors { code field } } }"""
DISABLE = "mutation($c: String!) { disableTotp(code: $c) { success userErrors { code } } }"


async def _enable_mfa(gql, acct) -> tuple[str, list[str]]:
    e = (await gql.ok(ENROLL, token=acct.token))["enrollTotp"]
    assert e["otpauthUri"].startswith("otpauth://totp/") and "<svg" in e["qrCodeSvg"]
    wrong = (await gql.ok(CONFIRM, {"c": "000000" if totp_now(e["secret"]) != "000000" else "111111"}, token=acct.token))["confirmTotp"]
    assert wrong["userErrors"][0]["code"] == "INVALID_MFA_CODE" and wrong["recoveryCodes"] is None
    ok = (await gql.ok(CONFIRM, {"c": totp_now(e["secret"])}, token=acct.token))["confirmTotp"]
    assert ok["userErrors"] == [] and len(ok["recoveryCodes"]) == 10 and len(set(ok["recoveryCodes"])) == 10
    return e["secret"], ok["recoveryCodes"]


async def _challenge(gql, acct) -> str:
    r = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]
    assert r["tokens"] is None and r["mfaRequired"]["challengeToken"]
    return r["mfaRequired"]["challengeToken"]


async def test_log_in_with_totp_after_enabling_mfa(gql, sign_up):
    acct = await sign_up()
    secret, _ = await _enable_mfa(gql, acct)
    me = (await gql.ok("{ me { mfaEnabled } }", token=acct.token))["me"]
    assert me["mfaEnabled"] is True
    challenge = await _challenge(gql, acct)
    bad = (await gql.ok(VERIFY, {"i": {"challengeToken": challenge, "code": "12345"}}))["verifyMfa"]
    assert bad["userErrors"] == [{"code": "INVALID_MFA_CODE", "field": ["input", "code"]}]
    # The code used to confirm is spent (replay refused); the next time step's code works.
    good = (await gql.ok(VERIFY, {"i": {"challengeToken": challenge, "code": totp_now(secret, 1)}}))["verifyMfa"]
    assert good["userErrors"] == [] and good["tokens"]["accessToken"]
    # The challenge is single-use.
    again = (await gql.ok(VERIFY, {"i": {"challengeToken": challenge, "code": totp_now(secret, 1)}}))["verifyMfa"]
    assert again["tokens"] is None


async def test_recovery_codes_work_once(gql, sign_up):
    acct = await sign_up()
    _, codes = await _enable_mfa(gql, acct)
    first = (await gql.ok(VERIFY, {"i": {"challengeToken": await _challenge(gql, acct), "code": codes[0].upper()}}))["verifyMfa"]
    assert first["userErrors"] == [] and first["tokens"]
    second = (await gql.ok(VERIFY, {"i": {"challengeToken": await _challenge(gql, acct), "code": codes[0]}}))["verifyMfa"]
    assert second["userErrors"][0]["code"] == "INVALID_MFA_CODE"
    other = (await gql.ok(VERIFY, {"i": {"challengeToken": await _challenge(gql, acct), "code": codes[1]}}))["verifyMfa"]
    assert other["userErrors"] == []


async def test_forged_or_foreign_challenge_token_is_refused(gql, sign_up):
    acct = await sign_up()
    r = (await gql.ok(VERIFY, {"i": {"challengeToken": acct.token, "code": "123456"}}))["verifyMfa"]  # an access token
    assert r["userErrors"][0]["code"] == "INVALID_CHALLENGE"


async def test_disable_totp_needs_a_valid_code(gql, sign_up):
    acct = await sign_up()
    secret, codes = await _enable_mfa(gql, acct)
    assert (await gql.ok(DISABLE, {"c": "999999"}, token=acct.token))["disableTotp"]["userErrors"][0]["code"] == "INVALID_MFA_CODE"
    assert (await gql.ok(DISABLE, {"c": codes[3]}, token=acct.token))["disableTotp"]["success"] is True
    r = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]
    assert r["tokens"] and r["mfaRequired"] is None


async def test_verify_mfa_is_throttled(gql, sign_up, auth_settings):
    acct = await sign_up()
    secret, _ = await _enable_mfa(gql, acct)
    challenge = await _challenge(gql, acct)
    for _ in range(auth_settings.login_max_failures_per_account):
        await gql.ok(VERIFY, {"i": {"challengeToken": challenge, "code": "000001"}})
    r = (await gql.ok(VERIFY, {"i": {"challengeToken": challenge, "code": totp_now(secret, 1)}}))["verifyMfa"]
    assert r["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"


def test_totp_step_refuses_replay_and_far_codes():
    from subgraphs.auth.security import totp_step

    secret = pyotp.random_base32()
    t = pyotp.TOTP(secret)
    now = 1_800_000_000
    step = now // 30
    assert totp_step(secret, t.at(now), after_step=None, now=now) == step
    assert totp_step(secret, t.at(now), after_step=step, now=now) is None  # replay
    assert totp_step(secret, t.at(now - 30), after_step=None, now=now) == step - 1  # drift allowed
    assert totp_step(secret, t.at(now - 120), after_step=None, now=now) is None
    assert totp_step(secret, "abcdef", after_step=None, now=now) is None
