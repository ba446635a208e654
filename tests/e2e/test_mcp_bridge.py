"""Issue 14: the MCP bridge as n8n and agents use it, over real HTTP, through the whole stack.

Two clients we did not write drive it: the `mcp` package's own client (`streamable_http_client` +
`ClientSession`, and `sse_client` for the legacy path) and the npm `@modelcontextprotocol/sdk`
client (tests/mcp_node/client.mjs). Bridge → gateway → subgraphs → worker → sandbox PAC.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from mcp_bridge.jsonschema import walk
from shared.embedded import free_port
from tests.gateway_flows import new_issuer
from tests.conftest import unique_email

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "tests" / "mcp_node" / "client.mjs"
FULL = ["invoice:read", "invoice:issue", "invoice:cancel", "customer:manage", "expense:submit", "expense:read",
        "expense:approve"]


@pytest.fixture(scope="module")
def bridge(stack):
    port = free_port()
    env = {"GATEWAY_URL": stack.urls["gateway"] + "/graphql", "MCP_BRIDGE_PORT": str(port),
           "MCP_RATE_LIMIT_PER_MINUTE": "60"}
    stack.start("mcp-bridge", [sys.executable, "-m", "mcp_bridge"], None, env=env)
    stack.wait("mcp-bridge", f"http://127.0.0.1:{port}/health/live")
    yield f"http://127.0.0.1:{port}"
    stack.stop("mcp-bridge")


async def _api_key(gateway, token: str, permissions: list[str]) -> str:
    r = await gateway.ok("mutation($n: String!, $p: [String!]!) { createApiKey(name: $n, permissions: $p) { key userErrors { code } } }",
                         {"n": "n8n " + uuid.uuid4().hex[:6], "p": permissions}, token=token)
    assert r["createApiKey"]["userErrors"] == [], r
    return r["createApiKey"]["key"]


@asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str]):
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def _payload(result) -> dict:
    text = result.content[0].text
    assert result.structured_content is not None
    if not result.is_error:
        assert json.loads(text) == result.structured_content  # n8n reads content, agents structuredContent
    return result.structured_content


@pytest.fixture(scope="module")
async def org(stack, bridge, mailbox):
    from tests.graphql_client import GraphQLClient

    async with httpx.AsyncClient(base_url=stack.urls["gateway"], timeout=30) as http:
        gw = GraphQLClient(http)
        token, customer_id = await new_issuer(gw, mailbox, customer_email=unique_email("cliente-mcp"))
        full = await _api_key(gw, token, FULL)
        read_only = await _api_key(gw, token, ["invoice:read"])
    return {"token": token, "customer_id": customer_id, "full": full, "read_only": read_only}


async def test_no_key_or_a_bad_key_is_refused_before_any_mcp_exchange(bridge):
    async with httpx.AsyncClient(base_url=bridge) as http:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        hdrs = {"accept": "application/json, text/event-stream"}
        r = await http.post("/mcp", json=init, headers=hdrs)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await http.post("/mcp", json=init, headers={**hdrs, "authorization": "Bearer fk_bogus"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = await http.get("/sse", headers={"x-api-key": "nope"})
        assert r.status_code == 401


async def test_tools_schemas_are_inlined_with_enums_and_descriptions(bridge, org):
    async with mcp_session(bridge, {"Authorization": f"Bearer {org['full']}"}) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    expected = {"invoices_search", "invoice_get", "invoice_create", "invoice_stamp", "invoice_status", "invoice_cancel",
                "invoice_download_links", "customers_search", "customer_create", "sat_catalog_search", "notifications_list",
                "expenses_search", "expense_create", "expense_import_cfdi", "expense_submit", "expense_approve"}
    assert expected <= set(tools)
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30
        dumped = json.dumps(tool.input_schema)
        assert "$ref" not in dumped and "anyOf" not in dumped and "oneOf" not in dumped
        for sub in walk(tool.input_schema):
            if sub.get("type") == "object" and sub is not tool.input_schema:
                # input-object fields carry the GraphQL descriptions the agent decides from
                undescribed = [k for k, v in sub.get("properties", {}).items() if not v.get("description")]
                assert undescribed == [], (tool.name, undescribed)
    create = tools["invoice_create"].input_schema["properties"]["input"]
    assert create["properties"]["paymentForm"]["enum"] and "03" in create["properties"]["paymentForm"]["enum"]
    assert create["properties"]["paymentMethod"]["enum"] == ["PPD", "PUE"] or set(create["properties"]["paymentMethod"]["enum"]) == {"PUE", "PPD"}
    concept = create["properties"]["concepts"]["items"]
    assert concept["type"] == "object" and "productCode" in concept["required"]
    assert concept["properties"]["productCode"]["description"]
    cancel = tools["invoice_cancel"]
    assert cancel.input_schema["properties"]["reason"]["enum"] == ["01", "02", "03", "04"]
    assert cancel.annotations.destructive_hint is True and tools["invoice_stamp"].annotations.destructive_hint is True
    assert tools["invoices_search"].annotations.read_only_hint is True
    assert "idempotencyKey" in tools["invoice_stamp"].input_schema["required"]


async def test_create_stamp_repeat_and_cancel_through_the_whole_stack(bridge, org):
    async with mcp_session(bridge, {"Authorization": f"Bearer {org['full']}"}) as s:
        cust = await s.call_tool("customer_create", {"input": {
            "rfc": "XIA190128J61", "legalName": "XENON INDUSTRIAL ARTICLES", "taxRegime": "601",
            "postalCode": "76343", "cfdiUse": "G03"}, "toolCallId": "n8n-extra", "sessionId": "x", "action": "y"})
        assert not cust.is_error, cust.content[0].text
        customer_id = _payload(cust)["customer"]["id"]

        bad = await s.call_tool("invoice_create", {"input": {"customerId": customer_id, "paymentForm": "03",
                                "paymentMethod": "PUE", "concepts": [{"productCode": "84111506", "quantity": "1",
                                "unitCode": "E48", "description": "Asesoría", "unitPrice": "-5", "taxObject": "02"}]}})
        assert bad.is_error and "unitPrice" in bad.content[0].text  # code + field path + message
        created = await s.call_tool("invoice_create", {"input": {"customerId": customer_id, "paymentForm": "03",
                                    "paymentMethod": "PUE", "concepts": [{"productCode": "84111506", "quantity": "2",
                                    "unitCode": "E48", "description": "Asesoría fiscal", "unitPrice": "1500.00",
                                    "taxObject": "02", "taxes": [{"tax": "002", "factorType": "Tasa", "rate": "0.160000"}]}]}})
        assert not created.is_error, created.content[0].text
        invoice = _payload(created)["invoice"]
        assert invoice["status"] == "DRAFT" and invoice["total"].startswith("3480")

        preview = _payload(await s.call_tool("invoice_stamp", {"id": invoice["id"], "idempotencyKey": "run-1"}))
        assert preview["preview"] is True and preview["invoice"]["customerRfc"] == "XIA190128J61"
        assert preview["invoice"]["status"] == "DRAFT"  # nothing happened yet

        key = "n8n-exec-" + uuid.uuid4().hex
        stamped = _payload(await s.call_tool("invoice_stamp", {"id": invoice["id"], "idempotencyKey": key,
                                                               "confirm": True, "waitSeconds": 25}))
        # waitSeconds returns as soon as the subscription says STAMPED; on a loaded machine the
        # stamp may take longer than the wait, then invoice_status polling is the agent's path.
        for _ in range(90):
            if stamped["invoice"]["status"] != "STAMPING":
                break
            await asyncio.sleep(1)
            stamped = {"invoice": {**stamped["invoice"], **_payload(await s.call_tool("invoice_status", {"id": invoice["id"]}))}}
        assert stamped["invoice"]["status"] == "STAMPED" and stamped["invoice"]["uuid"], stamped
        again = _payload(await s.call_tool("invoice_stamp", {"id": invoice["id"], "idempotencyKey": key, "confirm": True}))
        assert again["invoice"]["uuid"] == stamped["invoice"]["uuid"]

        found = _payload(await s.call_tool("invoices_search", {"filter": {"search": stamped["invoice"]["uuid"]}}))
        assert [e["node"]["uuid"] for e in found["edges"]] == [stamped["invoice"]["uuid"]]  # one CFDI, not two

        status = _payload(await s.call_tool("invoice_status", {"id": invoice["id"]}))
        assert status["status"] == "STAMPED"
        links = _payload(await s.call_tool("invoice_download_links", {"id": invoice["id"]}))
        assert links["downloadUrls"]["xml"].startswith("http")

        cancelled = await s.call_tool("invoice_cancel", {"id": invoice["id"], "reason": "02", "confirm": True,
                                                         "idempotencyKey": "cancel-" + key})
        assert not cancelled.is_error, cancelled.content[0].text
        assert _payload(cancelled)["invoice"]["status"] in ("CANCELLING", "CANCELLATION_PENDING", "CANCELLED")


async def test_a_key_without_invoice_issue_cannot_stamp(bridge, org):
    async with mcp_session(bridge, {"X-API-Key": org["read_only"]}) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert "invoices_search" in names and "invoice_stamp" not in names and "invoice_create" not in names
        refused = await s.call_tool("invoice_stamp", {"id": str(uuid.uuid4()), "idempotencyKey": "k", "confirm": True})
    assert refused.is_error and "invoice:issue" in refused.content[0].text


async def test_legacy_sse_transport_lists_and_calls_tools(bridge, org):
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    async with sse_client(bridge + "/sse", headers={"Authorization": f"Bearer {org['full']}"}) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            names = {t.name for t in (await s.list_tools()).tools}
            assert "sat_catalog_search" in names
            found = _payload(await s.call_tool("sat_catalog_search", {"name": "FormaPago", "search": "transferencia"}))
    assert any(row["code"] == "03" for row in found["items"])


def test_the_npm_sdk_client_lists_tools_and_calls_one(bridge, org):
    if not (NODE_CLIENT.parent / "node_modules").exists():
        pytest.fail("tests/mcp_node/node_modules missing: `make install` installs it")
    out = subprocess.run(["node", str(NODE_CLIENT), bridge + "/mcp", org["full"]], capture_output=True, text=True,
                         timeout=60, env={**os.environ})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "invoice_stamp" in result["tools"]
    assert result["noRef"] is True
    assert result["call"]["isError"] is False and any(r["code"] == "PUE" for r in result["call"]["structuredContent"]["items"])


async def test_every_tool_call_is_one_json_log_line_without_the_key(bridge, org, stack):
    async with mcp_session(bridge, {"Authorization": f"Bearer {org['full']}"}) as s:
        await s.call_tool("invoice_status", {"id": str(uuid.uuid4())})
    lines = [json.loads(line) for line in stack.log("mcp-bridge").splitlines() if line.startswith("{")]
    calls = [rec for rec in lines if rec.get("message") == "tool call" and rec.get("tool") == "invoice_status"]
    assert calls, lines[-5:]
    last = calls[-1]
    assert last["api_key_id"] and last["organization_id"] and last["outcome"].startswith("tool_error")
    assert isinstance(last["duration_ms"], float)
    assert org["full"] not in stack.log("mcp-bridge")  # the key itself is never logged


async def test_expense_tools_create_submit_and_refuse_self_approval(bridge, org):
    async with mcp_session(bridge, {"X-API-Key": org["full"]}) as s:
        created = await s.call_tool("expense_create", {"input": {"amount": "1250.50", "currency": "MXN", "date": "2026-11-30",
                                    "merchantName": "Papelería Kemper", "description": "Papel y tóner", "paymentMethod": "COMPANY_CARD"}})
        assert not created.is_error, created.content[0].text
        expense = _payload(created)["expense"]
        assert expense["status"] == "DRAFT" and expense["amount"].startswith("1250.5")
        submitted = _payload(await s.call_tool("expense_submit", {"id": expense["id"], "comment": "urgente"}))
        assert submitted["expense"]["status"] == "SUBMITTED"
        own = await s.call_tool("expense_approve", {"id": expense["id"]})
        assert own.is_error and "SELF" in own.content[0].text.upper()  # no self-approval, said as code + message
        found = _payload(await s.call_tool("expenses_search", {"filter": {"mine": True}}))
        assert expense["id"] in [e["node"]["id"] for e in found["edges"]]
        bad = await s.call_tool("expense_import_cfdi", {"xml": "<no-es-un-cfdi/>"})
        assert bad.is_error and "CFDI_" in bad.content[0].text
