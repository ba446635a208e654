"""Edge rate limits (supergraph/ratelimit.mjs, Hive Gateway's rate-limiting plugin) through two
gateway instances that share one Redis: the count is shared, a refused call answers 429 with
Retry-After and RATE_LIMITED, and the client gets through again once Retry-After has passed; an
@apollo/client web client whose RetryLink honours Retry-After recovers by itself."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from shared.embedded import free_port
from tests.conftest import unique_email
from tests.e2e.conftest import ROOT, apollo, needs_apollo, sign_up_by_mail

pytestmark = pytest.mark.e2e
LIMITS = {"RATE_LIMIT_DISABLED": "false", "RATE_LIMIT_FIELD": "4", "RATE_LIMIT_CREDENTIALS": "3", "RATE_LIMIT_WINDOW_SECONDS": "3"}


@pytest.fixture
def two_gateways(stack):
    names = []
    for _ in range(2):
        port, name = free_port(), f"gateway-limited-{uuid.uuid4().hex[:6]}"
        stack.start(name, [str(ROOT / "supergraph" / "gateway.sh")], f"http://127.0.0.1:{port}/readiness",
                    env={**LIMITS, "GATEWAY_PORT": str(port)})
        names.append((name, f"http://127.0.0.1:{port}/graphql"))
    yield [url for _, url in names]
    for name, _ in names:
        stack.stop(name)


async def _post(http, url, query, variables=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.post(url, json={"query": query, "variables": variables or {}}, headers=headers)


def _refused(resp) -> bool:
    codes = [e.get("extensions", {}).get("code") for e in resp.json().get("errors") or []]
    return "RATE_LIMITED" in codes


async def test_per_user_limit_is_shared_by_gateway_instances_and_recovers(gateway, mailbox, two_gateways):
    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("limitada"), "password": "correcto-caballo-bateria",
                                                      "fullName": "Lia Limitada", "organizationName": "Cuotas SA"}))["accessToken"]
    async with httpx.AsyncClient(timeout=30) as http:
        answers = [await _post(http, two_gateways[i % 2], "query Me { me { id } }", token=token) for i in range(5)]
        assert [r.status_code for r in answers[:4]] == [200] * 4 and not any(map(_refused, answers[:4]))
        refused = answers[4]  # the 5th call, on the 1st instance, counts the 2 made on the 2nd one
        assert refused.status_code == 429, refused.text
        assert _refused(refused)
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 3
        assert refused.json()["errors"][0]["extensions"]["retryAfter"] == retry_after

        await asyncio.sleep(retry_after)
        again = await _post(http, two_gateways[1], "query Me { me { id } }", token=token)
        assert again.status_code == 200 and not _refused(again), again.text


async def test_credential_mutations_have_a_lower_limit_per_client_address(two_gateways):
    login = "mutation($i: LogInInput!) { logIn(input: $i) { __typename } }"
    async with httpx.AsyncClient(timeout=30) as http:
        answers = [await _post(http, two_gateways[i % 2], login,
                               {"i": {"email": unique_email("nadie"), "password": "incorrecta-incorrecta"}})
                   for i in range(5)]
    assert _refused(answers[-1]) and answers[-1].status_code == 429, answers[-1].text
    # ...while ordinary fields are still well under their (higher) limit for the same address.
    assert not _refused(answers[0])


@needs_apollo
async def test_a_throttled_apollo_client_waits_retry_after_and_recovers(gateway, mailbox, two_gateways):
    token = (await sign_up_by_mail(gateway, mailbox, {"email": unique_email("frenada"), "password": "correcto-caballo-bateria",
                                                      "fullName": "Fer Frenada", "organizationName": "Reintentos SA"}))["accessToken"]
    async with httpx.AsyncClient(timeout=30) as http:  # other tabs of the same user used up the window
        used = [await _post(http, two_gateways[0], "query Me { me { id } }", token=token) for _ in range(4)]
    assert not any(map(_refused, used))

    seen = await apollo("throttled", two_gateways[1].removesuffix("/graphql"), token)
    first, last = seen["sent"][0], seen["sent"][-1]
    assert (first["status"], first["codes"]) == (429, ["RATE_LIMITED"]), seen
    assert 1 <= int(first["retryAfter"]) <= 3
    assert (last["status"], last["codes"]) == (200, []) and seen["data"]["me"]["id"], seen
    for before, after in zip(seen["sent"], seen["sent"][1:]):  # every retry waited what the 429 said
        assert after["started"] - before["started"] >= 1000 * int(before["retryAfter"])
