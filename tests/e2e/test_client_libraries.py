"""The gateway with GraphQL clients we did not write.

Python's `gql`, over HTTP (httpx transport) and WebSocket (graphql-transport-ws): an invoice's
subscriber sees STAMPING then STAMPED; a subscriber from another organization, asking for the same
invoice, sees nothing of it. @apollo/client: queries, mutations, subscriptions, and its
persisted-query link in the three client modes: the web client registers documents (APQ) that
every gateway instance then knows; a mobile client (persisted only) can use the safelist, whose
ids are the hashes Apollo's link computes, and cannot register anything; a wrong hash is refused."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from shared.embedded import free_port
from tests.conftest import unique_email
from tests.e2e.conftest import ROOT, apollo, needs_apollo
from tests.gateway_flows import create_invoice, new_issuer

gql = pytest.importorskip("gql")
from gql import Client, GraphQLRequest  # noqa: E402
from gql.transport.httpx import HTTPXAsyncTransport  # noqa: E402
from gql.transport.websockets import WebsocketsTransport  # noqa: E402

pytestmark = pytest.mark.e2e
STATUS = "subscription Status($id: ID!) { invoiceStatusChanged(id: $id) { status uuid } }"


def http_client(stack, token: str) -> Client:
    return Client(transport=HTTPXAsyncTransport(url=stack.urls["gateway"] + "/graphql",
                                                headers={"Authorization": f"Bearer {token}"}, timeout=30))


def ws_client(stack, token: str) -> Client:
    url = stack.urls["gateway"].replace("http", "ws", 1) + "/graphql"
    return Client(transport=WebsocketsTransport(url=url, init_payload={"Authorization": f"Bearer {token}"},
                                                subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL]))


async def test_gql_over_http_and_websocket(gateway, stack, mailbox):
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("cliente"))
    outsider, _ = await new_issuer(gateway, mailbox, customer_email=unique_email("otro"))

    async with http_client(stack, token) as session:  # a query and a mutation over HTTP
        me = await session.execute(GraphQLRequest("query Me { me { id email } }"))
        assert me["me"]["id"]
        draft = await create_invoice(gateway, token, customer_id, price="100.00")
        assert draft["status"] == "DRAFT"

        async with ws_client(stack, token) as owner_ws, ws_client(stack, outsider) as outsider_ws:
            owner_events: list = []
            outsider_events: list = []

            async def follow(ws, sink, until_stamped: bool):
                async for result in ws.subscribe(GraphQLRequest(STATUS, variable_values={"id": draft["id"]})):
                    sink.append(result["invoiceStatusChanged"])
                    if until_stamped and sink[-1]["status"] == "STAMPED":
                        return

            owner = asyncio.create_task(follow(owner_ws, owner_events, True))
            stranger = asyncio.create_task(follow(outsider_ws, outsider_events, False))
            await asyncio.sleep(0.5)  # let the gateway open its upstream subscriptions
            stamped = await session.execute(GraphQLRequest(
                "mutation Stamp($id: ID!, $k: String!) { stampInvoice(id: $id, idempotencyKey: $k) { invoice { status } } }",
                variable_values={"id": draft["id"], "k": "gql-1"}))
            assert stamped["stampInvoice"]["invoice"]["status"] == "STAMPING"
            await asyncio.wait_for(owner, 60)
            assert [e["status"] for e in owner_events] == ["STAMPING", "STAMPED"]
            # Both events were published before the owner saw the last one: nothing reached the
            # outsider (an error refusing the foreign invoice outright is as good as silence).
            stranger.cancel()
            await asyncio.gather(stranger, return_exceptions=True)
            assert outsider_events == []


@needs_apollo
async def test_apollo_client_query_mutation_persisted_link_and_subscription(gateway, stack, mailbox):
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("apollo"))
    draft = await create_invoice(gateway, token, customer_id, price="250.00")
    seen = await apollo("tour", stack.urls["gateway"], token, draft["id"])
    assert seen["query"] and seen["persisted"]["id"] == seen["query"]
    first = seen["persisted"]["sent"][0]["hash"]
    assert first and len(first) == 64 and int(first, 16) >= 0  # the link sent a sha256 first
    assert seen["mutation"] == "STAMPING"
    assert seen["statuses"] == ["STAMPING", "STAMPED"]


# ----------------------------------------------------------------------------------------------
# Persisted queries with Apollo's link: APQ for the web client, the safelist for mobile clients.
# ----------------------------------------------------------------------------------------------
def fresh_document() -> str:
    """A query no earlier run registered (registrations outlive a run in Redis for APQ_TTL_SECONDS)."""
    return f"query Apq{uuid.uuid4().hex[:10]} {{ me {{ id email organization {{ id name }} }} }}"


def attempts(seen: dict) -> list[tuple[bool, int, list]]:
    """(document sent?, HTTP status, error codes) of each request the link made."""
    return [(s["hasQuery"], s["status"], s["codes"]) for s in seen["sent"]]


@pytest.fixture
def second_gateway(stack):
    """Another Hive Gateway instance on the same Redis as the stack's gateway (stack env)."""
    port, name = free_port(), f"gateway-apq-{uuid.uuid4().hex[:6]}"
    stack.start(name, [str(ROOT / "supergraph" / "gateway.sh")], f"http://127.0.0.1:{port}/readiness",
                env={"GATEWAY_PORT": str(port)})
    yield f"http://127.0.0.1:{port}"
    stack.stop(name)


async def hash_only(url: str, token: str, digest: str, client_name: str = "web") -> list:
    """Error codes of a hash-only request sent by hand (no client library, no document)."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url + "/graphql", json={"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}},
                            headers={"Authorization": f"Bearer {token}", "apollographql-client-name": client_name})
    return [e.get("extensions", {}).get("code") for e in r.json().get("errors") or []]


@needs_apollo
async def test_apq_registered_through_one_gateway_is_known_to_another(gateway, stack, mailbox, second_gateway):
    token, _ = await new_issuer(gateway, mailbox, customer_email=unique_email("apq"))
    document = fresh_document()

    first = await apollo("persisted", stack.urls["gateway"], token, "web", document)
    assert first["data"]["me"]["email"], first
    # The link sent the hash alone, was told it is unknown, then registered the document.
    assert attempts(first) == [(False, first["sent"][0]["status"], ["PERSISTED_QUERY_NOT_FOUND"]), (True, 200, [])], first
    digest = first["sent"][0]["hash"]
    assert first["sent"][1]["hash"] == digest

    # The other instance knows it from Redis: one request, hash only.
    again = await apollo("persisted", second_gateway, token, "web", document)
    assert attempts(again) == [(False, 200, [])], again
    assert again["sent"][0]["hash"] == digest and again["data"] == first["data"]

    # Mobile clients stay on the safelist: a web registration is not theirs to use.
    assert await hash_only(second_gateway, token, digest, client_name="ios") == ["PERSISTED_QUERY_NOT_FOUND"]


@needs_apollo
async def test_persisted_only_client_cannot_register_a_document(gateway, stack, mailbox, second_gateway):
    token, _ = await new_issuer(gateway, mailbox, customer_email=unique_email("apq-ios"))
    document = fresh_document()
    mobile = await apollo("persisted", stack.urls["gateway"], token, "ios", document)
    assert mobile["error"] == ["PERSISTED_QUERY_ONLY"], mobile
    assert [(has_query, codes) for has_query, _, codes in attempts(mobile)] == [
        (False, ["PERSISTED_QUERY_NOT_FOUND"]), (True, ["PERSISTED_QUERY_ONLY"])], mobile
    digest = mobile["sent"][0]["hash"]
    # Nothing was registered, on either instance, for anyone.
    for url in (stack.urls["gateway"], second_gateway):
        assert await hash_only(url, token, digest) == ["PERSISTED_QUERY_NOT_FOUND"]


@needs_apollo
async def test_a_document_under_a_wrong_hash_is_refused_and_not_registered(gateway, stack, mailbox):
    token, _ = await new_issuer(gateway, mailbox, customer_email=unique_email("apq-forja"))
    document = fresh_document()
    forged = await apollo("persisted", stack.urls["gateway"], token, "web", document, env={"SHA256_SUFFIX": " "})
    assert forged["error"] == ["PERSISTED_QUERY_MISMATCH"], forged
    assert attempts(forged)[-1] == (True, 400, ["PERSISTED_QUERY_MISMATCH"]), forged
    wrong, right = forged["sent"][-1]["hash"], forged["sent"][-1]["querySha256"]
    assert wrong != right
    assert await hash_only(stack.urls["gateway"], token, wrong) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert await hash_only(stack.urls["gateway"], token, right) == ["PERSISTED_QUERY_NOT_FOUND"]


@needs_apollo
@pytest.mark.parametrize("operation", ["Me.graphql", "Inbox.graphql"])
async def test_apollo_link_hashes_are_the_safelist_ids_for_a_persisted_only_client(gateway, stack, mailbox, operation):
    """Apollo adds __typename before hashing; the safelist holds that form, so a mobile client,
    which cannot register anything, gets its answer from the hash alone."""
    token, _ = await new_issuer(gateway, mailbox, customer_email=unique_email("apq-lista"))
    safelist = json.loads((ROOT / "supergraph" / "persisted-documents.json").read_text())
    mobile = await apollo("persisted", stack.urls["gateway"], token, "android", operation)
    assert attempts(mobile) == [(False, 200, [])], mobile
    assert mobile["sent"][0]["hash"] in safelist and "error" not in mobile
