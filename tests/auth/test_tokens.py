"""Access tokens are checked by the subgraph itself: anything not signed by our current keys, for
our audience, unexpired, is refused."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from subgraphs.auth import keys
from tests.auth.conftest import LOG_IN, PASSWORD

ME = "{ me { email } }"
REFRESH = """mutation($t: String!) { refreshTokens(refreshToken: $t) {
  tokens { accessToken refreshToken } userErrors { code field } } }"""


async def _claims_for(acct, auth_runtime) -> dict:
    return jwt.decode(acct.token, options={"verify_signature": False})


async def _sign(auth_runtime, claims: dict, **overrides) -> str:
    async with auth_runtime.sessionmaker() as s, s.begin():
        kid, private = await keys.active_key(s, auth_runtime.settings)
    payload = {**claims, "jti": uuid.uuid4().hex, **overrides}
    return jwt.encode(payload, private, algorithm="EdDSA", headers={"kid": kid})


async def test_valid_token_has_the_documented_claims(gql, sign_up, auth_runtime):
    acct = await sign_up()
    header = jwt.get_unverified_header(acct.token)
    claims = await _claims_for(acct, auth_runtime)
    assert header["alg"] == "EdDSA" and header["kid"]
    assert set(claims) >= {"sub", "org", "perms", "iss", "aud", "exp", "iat", "jti"}
    assert claims["exp"] - claims["iat"] == 900
    assert "invoice:issue" in claims["perms"] and claims["org"] == acct.org_id
    assert (await gql.ok(ME, token=acct.token))["me"]["email"] == acct.email


@pytest.mark.parametrize("case", ["expired", "wrong_audience", "wrong_issuer", "forged", "alg_none", "hs256_confusion",
                                  "unknown_kid", "garbage", "no_kid"])
async def test_bad_tokens_are_refused_by_the_subgraph(gql, sign_up, auth_runtime, case):
    acct = await sign_up()
    claims = await _claims_for(acct, auth_runtime)
    kid = jwt.get_unverified_header(acct.token)["kid"]
    now = int(time.time())
    if case == "expired":
        token = await _sign(auth_runtime, claims, iat=now - 2000, exp=now - 1000)
    elif case == "wrong_audience":
        token = await _sign(auth_runtime, claims, aud="otra-api")
    elif case == "wrong_issuer":
        token = await _sign(auth_runtime, claims, iss="https://evil.example")
    elif case == "forged":
        token = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    elif case == "alg_none":
        header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        token = (header + b"." + body + b".").decode()
    elif case == "hs256_confusion":
        async with auth_runtime.sessionmaker() as s:
            jwks = await keys.jwks(s, auth_runtime.settings)
        # Classic confusion: HMAC "signed" with the public key material as the secret (built by
        # hand, since PyJWT itself refuses to produce such a token).
        import hashlib, hmac
        secret = jwks["keys"][0]["x"].encode()
        seg = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=")
        signing_input = seg({"alg": "HS256", "kid": kid, "typ": "JWT"}) + b"." + seg(claims)
        sig = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest()).rstrip(b"=")
        token = (signing_input + b"." + sig).decode()
    elif case == "unknown_kid":
        token = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "nope"})
    elif case == "no_kid":
        async with auth_runtime.sessionmaker() as s, s.begin():
            _, private = await keys.active_key(s, auth_runtime.settings)
        token = jwt.encode(claims, private, algorithm="EdDSA")
    else:
        token = "not.a.jwt"
    r = await gql.execute(ME, token=token)
    assert r.data in (None, {"me": None})  # `me` is nullable (partial-data contract): no data either way
    assert r.error_codes == ["INVALID_TOKEN"]


async def test_refresh_rotates_and_reuse_revokes_only_that_family(gql, sign_up):
    acct = await sign_up()
    other_session = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]["tokens"]

    first = acct.tokens["refreshToken"]
    rotated = (await gql.ok(REFRESH, {"t": first}))["refreshTokens"]
    assert rotated["userErrors"] == [] and rotated["tokens"]["refreshToken"] != first
    second = rotated["tokens"]["refreshToken"]

    # The old token presented again: reuse detected, the whole family (incl. `second`) dies.
    reuse = (await gql.ok(REFRESH, {"t": first}))["refreshTokens"]
    assert reuse["userErrors"][0]["code"] == "REFRESH_TOKEN_REUSED"
    dead = (await gql.ok(REFRESH, {"t": second}))["refreshTokens"]
    assert dead["userErrors"][0]["code"] == "INVALID_REFRESH_TOKEN"
    # Another login (another family) is untouched.
    alive = (await gql.ok(REFRESH, {"t": other_session["refreshToken"]}))["refreshTokens"]
    assert alive["userErrors"] == [] and alive["tokens"]["accessToken"]


async def test_log_out_ends_the_session(gql, sign_up):
    acct = await sign_up()
    out = await gql.ok("mutation($t: String!) { logOut(refreshToken: $t) { success } }", {"t": acct.tokens["refreshToken"]})
    assert out["logOut"]["success"] is True
    r = (await gql.ok(REFRESH, {"t": acct.tokens["refreshToken"]}))["refreshTokens"]
    assert r["userErrors"][0]["code"] == "INVALID_REFRESH_TOKEN"


async def test_key_rotation_keeps_old_tokens_valid_and_publishes_both_keys(gql, sign_up, auth_runtime, auth_http):
    acct = await sign_up()
    old_kid = jwt.get_unverified_header(acct.token)["kid"]
    async with auth_runtime.sessionmaker() as s, s.begin():
        new = await keys.rotate_signing_key(s, auth_runtime.settings)
    jwks = (await auth_http.get("/.well-known/jwks.json")).json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert {old_kid, new.kid} <= kids
    assert all("d" not in k for k in jwks["keys"])  # never the private part
    # A token signed before rotation still works; new tokens use the new key.
    assert (await gql.ok(ME, token=acct.token))["me"]["email"] == acct.email
    fresh = (await gql.ok(LOG_IN, {"input": {"email": acct.email, "password": PASSWORD}}))["logIn"]["tokens"]["accessToken"]
    assert jwt.get_unverified_header(fresh)["kid"] == new.kid
    assert (await gql.ok(ME, token=fresh))["me"]["email"] == acct.email
