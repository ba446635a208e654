"""Access tokens are checked by the subgraph itself: anything not signed by our current keys, for
our audience, unexpired, is refused."""

from __future__ import annotations

import asyncio
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


# --- a verified access token is remembered: what can change is still checked on every use ---------

def _verifier_with(keys: dict):
    """A TokenVerifier over a JWKS we control: {kid: Ed25519 private key} (replace the dict's
    contents to rotate), and a signer for tokens by any of them."""
    from jwt.algorithms import OKPAlgorithm

    from shared.tokens import TokenVerifier

    fetches = []

    async def source() -> dict:
        fetches.append(1)
        return {"keys": [{**json.loads(OKPAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig"}
                         for kid, k in keys.items()]}

    def sign(kid: str, **claims) -> str:
        now = int(time.time())
        body = {"sub": str(uuid.uuid4()), "org": str(uuid.uuid4()), "perms": ["invoice:issue"], "iss": "iss-test",
                "aud": "aud-test", "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex, **claims}
        return jwt.encode(body, keys[kid], algorithm="EdDSA", headers={"kid": kid})

    return TokenVerifier(source, issuer="iss-test", audience="aud-test", min_refresh_interval=0), sign


async def test_a_remembered_token_is_refused_once_it_expires():
    from shared.tokens import LEEWAY_SECONDS, InvalidTokenError

    verifier, sign = _verifier_with({"k1": Ed25519PrivateKey.generate()})
    # Expired a moment ago but within the leeway: accepted, and remembered.
    token = sign("k1", exp=int(time.time()) - LEEWAY_SECONDS + 2)
    first = await verifier.principal(token)
    assert (await verifier.principal(token)) == first
    await asyncio.sleep(3)  # now past exp + leeway
    with pytest.raises(InvalidTokenError):
        await verifier.principal(token)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)


async def test_a_remembered_token_is_refused_once_its_key_leaves_the_jwks():
    from shared.tokens import InvalidTokenError

    keys = {"k1": Ed25519PrivateKey.generate()}
    verifier, sign = _verifier_with(keys)
    old = sign("k1")
    assert (await verifier.verify(old))["aud"] == "aud-test"
    keys.clear()
    keys["k2"] = Ed25519PrivateKey.generate()  # k1 revoked: only k2 published
    assert (await verifier.verify(sign("k2")))["aud"] == "aud-test"  # unknown kid: the JWKS is read again
    with pytest.raises(InvalidTokenError, match="unknown signing key"):
        await verifier.principal(old)


async def test_a_remembered_access_token_is_still_refused_for_another_audience():
    from shared.tokens import InvalidTokenError

    verifier, sign = _verifier_with({"k1": Ed25519PrivateKey.generate()})
    token = sign("k1")
    await verifier.principal(token)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token, audience="mfa-challenge")


async def test_only_tokens_verified_here_are_remembered():
    from shared.tokens import InvalidTokenError

    verifier, sign = _verifier_with({"k1": Ed25519PrivateKey.generate()})
    forged = jwt.encode(jwt.decode(sign("k1"), options={"verify_signature": False}), Ed25519PrivateKey.generate(),
                        algorithm="EdDSA", headers={"kid": "k1"})
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            await verifier.principal(forged)
    # A changed claims segment under a genuine signature is a different text: verified, and refused.
    good = sign("k1")
    await verifier.principal(good)
    header, payload, signature = good.split(".")
    other = base64.urlsafe_b64encode(json.dumps({**json.loads(base64.urlsafe_b64decode(payload + "==")),
                                                 "perms": ["*"]}).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidTokenError):
        await verifier.principal(f"{header}.{other}.{signature}")


async def test_a_token_is_decoded_once_while_it_stays_valid(monkeypatch):
    import shared.tokens

    verifier, sign = _verifier_with({"k1": Ed25519PrivateKey.generate()})
    decodes = []
    real = shared.tokens.jwt.decode
    monkeypatch.setattr(shared.tokens.jwt, "decode", lambda *a, **kw: decodes.append(1) or real(*a, **kw))
    token = sign("k1")
    principals = [await verifier.principal(token) for _ in range(3)]
    claims = await verifier.verify(token)
    claims["perms"] = ["*"]  # a caller's copy: the remembered claims stay as verified
    assert len(decodes) == 1 and principals[0] == principals[2]
    assert (await verifier.verify(token))["perms"] == ["invoice:issue"]
