"""A subscription reaches its client whichever subgraph instance the change happened on: a second
invoice process behind a second gateway, the client subscribed there over SSE (Hive Gateway's
text/event-stream), the invoice stamped through the first gateway and invoice process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from shared.embedded import free_port
from shared.serving import uvicorn_command
from tests.conftest import unique_email
from tests.e2e.conftest import ROOT
from tests.gateway_flows import create_invoice, new_issuer

pytestmark = pytest.mark.e2e


@pytest.fixture
def second_instance(stack):
    invoice_port, gateway_port = free_port(), free_port()
    stack.start("invoice-2", uvicorn_command("subgraphs.invoice.app:app", host="127.0.0.1", port=invoice_port),
                f"http://127.0.0.1:{invoice_port}/health/ready")
    stack.start("gateway-2", [str(ROOT / "supergraph" / "gateway.sh")], f"http://127.0.0.1:{gateway_port}/readiness",
                env={"GATEWAY_PORT": str(gateway_port), "INVOICE_URL": f"http://127.0.0.1:{invoice_port}/graphql"})
    yield f"http://127.0.0.1:{gateway_port}"
    stack.stop("gateway-2")
    stack.stop("invoice-2")


async def _sse_events(http: httpx.AsyncClient, url: str, query: str, variables: dict, token: str, sink: list):
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    async with http.stream("POST", url + "/graphql", json={"query": query, "variables": variables}, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data:") and line[5:].strip():
                sink.append(json.loads(line[5:]))
                if sink[-1].get("data", {}).get("invoiceStatusChanged", {}).get("status") == "STAMPED" or sink[-1].get("errors"):
                    return


async def test_sse_subscriber_on_another_instance_sees_stamping_then_stamped(gateway, stack, mailbox, second_instance):
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("sse"))
    draft = await create_invoice(gateway, token, customer_id, price="80.00")
    events: list = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=60)) as http:
        listener = asyncio.create_task(_sse_events(http, second_instance,
                                                   "subscription($id: ID!) { invoiceStatusChanged(id: $id) { status } }",
                                                   {"id": draft["id"]}, token, events))
        await asyncio.sleep(0.5)  # let gateway-2 open its upstream subscription on invoice-2
        stamped = await gateway.ok("""mutation($id: ID!) { stampInvoice(id: $id, idempotencyKey: "sse-1") {
            invoice { status } } }""", {"id": draft["id"]}, token=token)
        assert stamped["stampInvoice"]["invoice"]["status"] == "STAMPING"
        await asyncio.wait_for(listener, 60)
    assert [e["data"]["invoiceStatusChanged"]["status"] for e in events] == ["STAMPING", "STAMPED"], events
