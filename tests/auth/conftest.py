from __future__ import annotations

import random
import uuid

import pyotp
import pytest

from tests.conftest import running_app, unique_email
from tests.graphql_client import GraphQLClient

SIGN_UP = """mutation($input: SignUpInput!) { signUp(input: $input) { success userErrors { field code message } } }"""
LOG_IN = """mutation($input: LogInInput!) { logIn(input: $input) {
  tokens { accessToken refreshToken organizationId } mfaRequired { challengeToken expiresIn }
  userErrors { field code message } } }"""
PASSWORD = "correcto-caballo-bateria"


GATEWAY_SECRET = "test-gateway-secret"


def as_gateway(ip: str) -> dict[str, str]:
    """Headers the gateway adds: the client's address, and the secret that makes it believed."""
    return {"X-Forwarded-For": ip, "X-Gateway-Secret": GATEWAY_SECRET}


@pytest.fixture(scope="session")
def auth_settings(settings):
    # Tests pick their client IP the way the gateway passes it, so per-IP throttling of one test
    # does not leak into the next.
    return settings.model_copy(update={"gateway_shared_secret": GATEWAY_SECRET, "authz_cache_seconds": 0})


@pytest.fixture(scope="session")
def auth_app(auth_settings):
    from subgraphs.auth.app import create_app

    return create_app(auth_settings)


@pytest.fixture(scope="session")
async def auth_http(auth_app):
    async with running_app(auth_app) as http:
        yield http


@pytest.fixture
def auth_runtime(auth_app, auth_http):
    return auth_app.state.runtime


@pytest.fixture
def ip():
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture
def gql(auth_http, ip):
    client = GraphQLClient(auth_http)
    orig = client.execute

    async def execute(query, variables=None, **kw):
        for name, value in as_gateway(ip).items():
            kw.setdefault("headers", {}).setdefault(name, value)
        return await orig(query, variables, **kw)

    client.execute = execute
    return client


class Account:
    def __init__(self, email: str, tokens: dict):
        self.email, self.tokens = email, tokens
        self.totp_secret: str | None = None

    @property
    def token(self) -> str:
        return self.tokens["accessToken"]

    @property
    def org_id(self) -> str:
        return self.tokens["organizationId"]


COMPLETE_SIGN_UP = """mutation($t: String!) { completeSignUp(token: $t) {
  tokens { accessToken refreshToken expiresIn organizationId } userErrors { field code message } } }"""


@pytest.fixture
def sign_up(gql, auth_app, auth_http):
    """A new account the way a person gets one: sign up, open the mailed link, signed in."""
    async def _sign_up(org: str = "Comercializadora Demo", email: str | None = None, password: str = PASSWORD) -> Account:
        email = email or unique_email()
        data = await gql.ok(SIGN_UP, {"input": {"email": email, "password": password, "fullName": "Ana López",
                                                        "organizationName": org}})
        assert data["signUp"] == {"success": True, "userErrors": []}
        token = await mint_mail_token(auth_app, auth_http, "auth.sign_up_requested", email)
        done = (await gql.ok(COMPLETE_SIGN_UP, {"t": token}))["completeSignUp"]
        assert done["userErrors"] == [], done
        return Account(email, done["tokens"])

    return _sign_up


def totp_now(secret: str, offset_steps: int = 0) -> str:
    import time

    t = pyotp.TOTP(secret)
    return t.at(time.time() + offset_steps * t.interval)


def new_uuid() -> str:
    return str(uuid.uuid4())


_REF_FIELD = {"auth.sign_up_requested": ("sign_up", "sign_up_id"),
              "auth.email_verification_requested": ("verify_email", "verification_ref"),
              "auth.password_reset_requested": ("reset_password", "request_id"),
              "auth.member_invited": ("invitation", "invitation_id")}


async def mint_link(auth_app, auth_http, event_type: str, email: str) -> dict | None:
    """What auth's internal endpoint answers the mail worker for the newest `event_type` e-mail to
    `email` (events carry only a reference to the link); None when nothing is to be sent."""
    from sqlalchemy import text

    from shared import mail_links

    rt = auth_app.state.runtime
    kind, field = _REF_FIELD[event_type]
    async with rt.sessionmaker() as s:
        payload = (await s.execute(text("SELECT payload FROM auth.outbox WHERE type = :t AND payload->>'email' = :e "
                                        "ORDER BY id DESC LIMIT 1"), {"t": event_type, "e": email})).scalar_one()
    body = mail_links.request_body(kind, payload[field], email)
    resp = await auth_http.post(mail_links.PATH, content=body, headers={mail_links.SIGNATURE_HEADER: mail_links.sign(body, rt.settings)})
    if resp.status_code == 410:
        return None
    assert resp.status_code == 200, resp.text
    return resp.json()


async def mint_mail_token(auth_app, auth_http, event_type: str, email: str) -> str | None:
    minted = await mint_link(auth_app, auth_http, event_type, email)
    return minted["url"].split("token=")[1] if minted and minted["url"] else None


@pytest.fixture
def mail_token(auth_app, auth_http):
    """The token of the newest link of `event_type` to `email`, minted as the mail worker does."""
    async def mint(event_type: str, email: str) -> str | None:
        return await mint_mail_token(auth_app, auth_http, event_type, email)

    return mint
