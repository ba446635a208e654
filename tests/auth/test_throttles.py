"""Throttles that single out the client at fault, not everybody (issue #7, Medium 6).

The client address is believed from X-Forwarded-For only with the gateway's secret; a forged
header, loopback included, buys nothing. exchangeApiKey failures count per key prefix and per
client; requestPasswordReset is limited per address and per client."""

from __future__ import annotations

import random

import httpx
import pytest
from starlette.requests import Request

from shared.client_address import client_address
from tests.auth.conftest import GATEWAY_SECRET, as_gateway
from tests.conftest import unique_email
from tests.graphql_client import GraphQLClient

EXCHANGE = "mutation($k: String!) { exchangeApiKey(key: $k) { accessToken userErrors { code field } } }"
RESET = "mutation($e: String!) { requestPasswordReset(email: $e) { success userErrors { code } } }"
CREATE_KEY = """mutation { createApiKey(name: "n8n", permissions: ["invoice:read"]) { key } }"""


def _request(peer: str, headers: dict[str, str]) -> Request:
    return Request({"type": "http", "client": (peer, 5000), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


def _random_ip() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def test_forwarded_address_is_believed_only_with_the_gateway_secret():
    xff = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    assert client_address(_request("127.0.0.1", xff), GATEWAY_SECRET) == "127.0.0.1"  # loopback is no proof
    assert client_address(_request("127.0.0.1", {**xff, "X-Gateway-Secret": "guess"}), GATEWAY_SECRET) == "127.0.0.1"
    assert client_address(_request("127.0.0.1", {**xff, "X-Gateway-Secret": GATEWAY_SECRET}), "") == "127.0.0.1"  # no secret: never
    # With the secret, the entry the gateway appended (the last), not whatever the client sent first.
    assert client_address(_request("10.0.0.5", {**xff, "X-Gateway-Secret": GATEWAY_SECRET}), GATEWAY_SECRET) == "198.51.100.7"


@pytest.fixture
async def direct(auth_app, auth_http):
    """A client reaching the auth subgraph directly (not through the gateway) from its own address."""
    transport = httpx.ASGITransport(app=auth_app, client=(_random_ip(), 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield GraphQLClient(http)


async def test_bogus_api_keys_block_neither_other_clients_nor_other_keys(gql, sign_up, auth_settings):
    owner = await sign_up()
    good = (await gql.ok(CREATE_KEY, token=owner.token))["createApiKey"]["key"]
    attacker = _random_ip()
    bogus_prefix = "fk_" + "".join(random.choices("abcdefgh", k=7))
    for i in range(auth_settings.login_max_failures_per_account):
        r = (await gql.ok(EXCHANGE, {"k": f"{bogus_prefix}{i}-nope"}, headers=as_gateway(attacker)))["exchangeApiKey"]
        assert r["userErrors"][0]["code"] == "INVALID_API_KEY"
    locked = (await gql.ok(EXCHANGE, {"k": f"{bogus_prefix}-again"}, headers=as_gateway(attacker)))["exchangeApiKey"]
    assert locked["userErrors"] == [{"code": "TOO_MANY_ATTEMPTS", "field": None}]
    # The valid key of the organization still works, from another client and from the attacker's too.
    for ip in (_random_ip(), attacker):
        ok = (await gql.ok(EXCHANGE, {"k": good}, headers=as_gateway(ip)))["exchangeApiKey"]
        assert ok["accessToken"] and ok["userErrors"] == []


async def test_one_client_spraying_keys_is_stopped_alone(gql, auth_settings):
    sprayer, bystander = _random_ip(), _random_ip()
    for _ in range(auth_settings.login_max_failures_per_ip):
        key = "fk_" + "".join(random.choices("abcdefghijk", k=40))
        await gql.ok(EXCHANGE, {"k": key}, headers=as_gateway(sprayer))
    r = (await gql.ok(EXCHANGE, {"k": "fk_zzzzzzzzzz-fresh"}, headers=as_gateway(sprayer)))["exchangeApiKey"]
    assert r["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"
    r = (await gql.ok(EXCHANGE, {"k": "fk_zzzzzzzzzz-fresh"}, headers=as_gateway(bystander)))["exchangeApiKey"]
    assert r["userErrors"][0]["code"] == "INVALID_API_KEY"


async def test_forged_forwarded_for_straight_to_the_subgraph_buys_nothing(direct, auth_settings):
    for _ in range(auth_settings.mail_requests_max_per_client):
        r = await direct.ok(RESET, {"e": unique_email()}, headers={"X-Forwarded-For": _random_ip(), "X-Gateway-Secret": "guess"})
        assert r["requestPasswordReset"]["success"]
    r = await direct.ok(RESET, {"e": unique_email()}, headers={"X-Forwarded-For": _random_ip()})
    assert r["requestPasswordReset"]["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"


async def test_password_reset_is_limited_per_address_and_per_client(gql, sign_up, auth_settings):
    acct = await sign_up()
    for _ in range(auth_settings.mail_requests_max_per_address):
        assert (await gql.ok(RESET, {"e": acct.email}, headers=as_gateway(_random_ip())))["requestPasswordReset"]["success"]
    # The same address from yet another client: limited (15 requests no longer make 15 e-mails).
    r = (await gql.ok(RESET, {"e": acct.email.upper()}, headers=as_gateway(_random_ip())))["requestPasswordReset"]
    assert r["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"
    # An unknown address is limited exactly the same way.
    unknown = unique_email()
    for _ in range(auth_settings.mail_requests_max_per_address):
        assert (await gql.ok(RESET, {"e": unknown}, headers=as_gateway(_random_ip())))["requestPasswordReset"]["success"]
    r = (await gql.ok(RESET, {"e": unknown}, headers=as_gateway(_random_ip())))["requestPasswordReset"]
    assert r["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"
