"""Per-client throttles through the real gateway and uvicorn (issue #7, Medium 6).

Clients connect from distinct loopback addresses (127.0.0.x), so the gateway sees distinct peers
as it would distinct users; one client exhausting its limit does not lock out the next, a forged
X-Forwarded-For through the gateway changes nothing, and the same forgery sent straight to the
auth subgraph from loopback buys nothing either (uvicorn runs with --no-proxy-headers)."""

from __future__ import annotations

import random

import httpx

RESET = "mutation($e: String!) { requestPasswordReset(email: $e) { success userErrors { code } } }"


def _client(base_url: str, source: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=30, transport=httpx.AsyncHTTPTransport(local_address=source))


def _email() -> str:
    return f"nadie-{random.getrandbits(48):x}@example.mx"


async def _reset(http: httpx.AsyncClient, headers: dict | None = None) -> dict:
    r = await http.post("/graphql", json={"query": RESET, "variables": {"e": _email()}}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()["data"]["requestPasswordReset"]


def _forged() -> dict:
    return {"X-Forwarded-For": f"198.51.100.{random.randint(1, 254)}"}


async def test_clients_behind_the_gateway_are_throttled_one_by_one(stack):
    limit = int(stack.env["MAIL_REQUESTS_MAX_PER_CLIENT"])
    base = random.randint(2, 200)
    first, second = f"127.0.{base}.2", f"127.0.{base}.3"
    async with _client(stack.urls["gateway"], first) as a, _client(stack.urls["gateway"], second) as b:
        for _ in range(limit):
            assert (await _reset(a, _forged()))["success"]  # a forged header does not spread the count
        assert (await _reset(a, _forged()))["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"
        assert (await _reset(b))["success"]  # the next client is not locked out


async def test_forged_forwarded_for_straight_to_a_subgraph_buys_nothing(stack):
    limit = int(stack.env["MAIL_REQUESTS_MAX_PER_CLIENT"])
    source = f"127.0.{random.randint(2, 200)}.9"
    async with _client(stack.urls["auth"], source) as direct:
        for _ in range(limit):
            assert (await _reset(direct, {**_forged(), "X-Gateway-Secret": "a-guess"}))["success"]
        assert (await _reset(direct, _forged()))["userErrors"][0]["code"] == "TOO_MANY_ATTEMPTS"
