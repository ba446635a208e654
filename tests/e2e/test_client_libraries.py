"""The gateway with a GraphQL client we did not write: Python's `gql`, over HTTP (httpx transport)
and WebSocket (graphql-transport-ws). An invoice's subscriber sees STAMPING then STAMPED; a
subscriber from another organization, asking for the same invoice, sees nothing of it."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import ROOT
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


NODE = shutil.which("node")
APOLLO_SCRIPT = ROOT / "tests" / "e2e" / "clients" / "apollo_client.mjs"


@pytest.mark.skipif(NODE is None or not (ROOT / "supergraph" / "node_modules" / "@apollo" / "client").is_dir(),
                    reason="node or @apollo/client missing (make install)")
async def test_apollo_client_query_mutation_persisted_link_and_subscription(gateway, stack, mailbox):
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("apollo"))
    draft = await create_invoice(gateway, token, customer_id, price="250.00")
    proc = await asyncio.create_subprocess_exec(NODE, str(APOLLO_SCRIPT), stack.urls["gateway"], token, draft["id"],
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["query"] and seen["persisted"]["id"] == seen["query"]
    first = seen["persisted"]["sent"][0]["hash"]
    assert first and len(first) == 64 and int(first, 16) >= 0  # the link sent a sha256 first
    assert seen["mutation"] == "STAMPING"
    assert seen["statuses"] == ["STAMPING", "STAMPED"]
