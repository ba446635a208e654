from __future__ import annotations

import random
import uuid

import pyotp
import pytest

from tests.conftest import running_app, unique_email
from tests.graphql_client import GraphQLClient

SIGN_UP = """mutation($input: SignUpInput!) { signUp(input: $input) {
  tokens { accessToken refreshToken expiresIn organizationId } userErrors { field code message } } }"""
LOG_IN = """mutation($input: LogInInput!) { logIn(input: $input) {
  tokens { accessToken refreshToken organizationId } mfaRequired { challengeToken expiresIn }
  userErrors { field code message } } }"""
PASSWORD = "correcto-caballo-bateria"


@pytest.fixture(scope="session")
def auth_settings(settings):
    # Tests pick their client IP through X-Forwarded-For so per-IP throttling of one test does
    # not leak into the next.
    return settings.model_copy(update={"trust_proxy_headers": True})


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
        kw.setdefault("headers", {}).setdefault("X-Forwarded-For", ip)
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


@pytest.fixture
def sign_up(gql):
    async def _sign_up(org: str = "Comercializadora Demo", email: str | None = None, password: str = PASSWORD) -> Account:
        email = email or unique_email()
        data = await gql.ok(SIGN_UP, {"input": {"email": email, "password": password, "fullName": "Ana López",
                                                "organizationName": org}})
        assert data["signUp"]["userErrors"] == []
        return Account(email, data["signUp"]["tokens"])

    return _sign_up


def totp_now(secret: str, offset_steps: int = 0) -> str:
    import time

    t = pyotp.TOTP(secret)
    return t.at(time.time() + offset_steps * t.interval)


def new_uuid() -> str:
    return str(uuid.uuid4())
