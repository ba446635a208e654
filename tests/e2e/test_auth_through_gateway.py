"""The foundation's promise, through the real gateway process: sign up, enable TOTP, log out,
log in with a TOTP code, and read `me { organization { name } }`."""

from __future__ import annotations

import time

import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import unique_email
from tests.e2e.conftest import sign_up_by_mail

pytestmark = pytest.mark.e2e
PASSWORD = "correcto-caballo-bateria"


def _code(secret: str, steps: int = 0) -> str:
    t = pyotp.TOTP(secret)
    return t.at(time.time() + steps * t.interval)


async def test_sign_up_enable_totp_log_out_log_in_with_totp(gateway, mailbox):
    email = unique_email("e2e")
    tokens = await sign_up_by_mail(gateway, mailbox, {"email": email, "password": PASSWORD, "fullName": "Lucía Pérez",
                                                      "organizationName": "Papelería Lucía"})
    secret = (await gateway.ok("mutation { enrollTotp { secret otpauthUri } }", token=tokens["accessToken"]))["enrollTotp"]["secret"]
    codes = (await gateway.ok("mutation($c: String!) { confirmTotp(code: $c) { recoveryCodes userErrors { code } } }",
                              {"c": _code(secret)}, token=tokens["accessToken"]))["confirmTotp"]["recoveryCodes"]
    assert len(codes) == 10
    out = await gateway.ok("mutation($t: String!) { logOut(refreshToken: $t) { success } }", {"t": tokens["refreshToken"]})
    assert out["logOut"]["success"]

    login = (await gateway.ok("""mutation($i: LogInInput!) { logIn(input: $i) { tokens { accessToken } mfaRequired { challengeToken } } }""",
                              {"i": {"email": email, "password": PASSWORD}}))["logIn"]
    assert login["tokens"] is None
    verified = (await gateway.ok("""mutation($i: VerifyMfaInput!) { verifyMfa(input: $i) { tokens { accessToken } userErrors { code } } }""",
                                 {"i": {"challengeToken": login["mfaRequired"]["challengeToken"], "code": _code(secret, 1)}}))["verifyMfa"]
    assert verified["userErrors"] == []
    me = await gateway.ok("{ me { email mfaEnabled organization { name } } }", token=verified["tokens"]["accessToken"])
    assert me["me"] == {"email": email, "mfaEnabled": True, "organization": {"name": "Papelería Lucía"}}


async def test_gateway_refuses_a_forged_token_and_the_subgraph_does_too(gateway, stack, mailbox):
    email = unique_email("e2e")
    good = (await sign_up_by_mail(gateway, mailbox, {"email": email, "password": PASSWORD, "fullName": "X", "organizationName": "Y"}))["accessToken"]
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": jwt.get_unverified_header(good)["kid"]})
    async with httpx.AsyncClient() as http:
        via_gateway = await http.post(stack.urls["gateway"] + "/graphql", json={"query": "{ me { email } }"},
                                      headers={"Authorization": f"Bearer {forged}"})
        direct = await http.post(stack.urls["auth"] + "/graphql", json={"query": "{ me { email } }"},
                                 headers={"Authorization": f"Bearer {forged}"})
    assert via_gateway.status_code in (200, 401)
    assert via_gateway.json()["errors"][0]["extensions"]["code"] in ("UNAUTHENTICATED", "INVALID_TOKEN")
    assert direct.json()["errors"][0]["extensions"]["code"] == "INVALID_TOKEN"


async def test_api_key_exchange_through_the_gateway_is_limited_to_its_permissions(gateway, mailbox):
    owner = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("e2e"), "password": PASSWORD, "fullName": "X",
                                                      "organizationName": "Y"}))["accessToken"]
    key = (await gateway.ok("""mutation { createApiKey(name: "n8n", permissions: ["invoice:read"]) { key userErrors { code } } }""",
                            token=owner))["createApiKey"]["key"]
    ex = (await gateway.ok("mutation($k: String!) { exchangeApiKey(key: $k) { accessToken expiresIn } }", {"k": key}))["exchangeApiKey"]
    assert ex["expiresIn"] == 900
    assert jwt.decode(ex["accessToken"], options={"verify_signature": False})["perms"] == ["invoice:read"]
    denied = await gateway.execute("mutation { createApiKey(name: \"x\", permissions: [\"invoice:read\"]) { key } }", token=ex["accessToken"])
    assert denied.error_codes == ["FORBIDDEN"]


async def test_mobile_persisted_query_by_document_id(gateway, stack, mailbox):
    import hashlib
    import json
    from pathlib import Path

    manifest = json.loads((Path(__file__).resolve().parents[2] / "supergraph" / "persisted-documents.json").read_text())
    me_id = next(h for h, doc in manifest.items() if doc.lstrip().startswith("query Me"))
    assert hashlib.sha256(manifest[me_id].encode()).hexdigest() == me_id
    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("pq"), "password": PASSWORD, "fullName": "Móvil",
                                                      "organizationName": "App"}))["accessToken"]
    async with httpx.AsyncClient() as http:
        resp = await http.post(stack.urls["gateway"] + "/graphql", json={"documentId": me_id},
                               headers={"Authorization": f"Bearer {token}"})
        unknown = await http.post(stack.urls["gateway"] + "/graphql", json={"documentId": "0" * 64})
    assert resp.json()["data"]["me"]["organization"]["name"] == "App"
    assert unknown.json().get("errors")
