"""The bridge's pure parts: the tool catalogue from operation files, the JSON Schema generator, the
mapping of GraphQL answers to tool results, and the refusals that happen before any call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from graphql import build_schema

from mcp_bridge.config import BridgeSettings
from mcp_bridge.gateway import Caller, GatewayClient
from mcp_bridge.jsonschema import SchemaBuilder, walk
from mcp_bridge.operations import OperationFileError, exposed, load_tool_operations, parse_operation_file
from mcp_bridge.tools import RateLimiter, ToolCatalog, result_from_response

SUPERGRAPH = Path(__file__).resolve().parents[2] / "schema" / "supergraph.graphql"


def _write(tmp_path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_marked_operation_in_the_repo_loads_and_names_are_unique():
    ops = load_tool_operations()
    names = [op.tool for op in ops]
    assert len(names) == len(set(names))
    assert {"invoice_stamp", "invoice_cancel", "invoices_search"} <= set(names)
    stamp = next(op for op in ops if op.tool == "invoice_stamp")
    assert stamp.kind == "destructive" and stamp.permissions == ("invoice:issue",) and stamp.is_mutation


def test_unmarked_files_are_not_tools_and_bad_headers_fail_loudly(tmp_path):
    assert parse_operation_file(_write(tmp_path, "A.graphql", "query A { __typename }")) is None
    with pytest.raises(OperationFileError, match="mcp-description"):
        parse_operation_file(_write(tmp_path, "B.graphql", "# mcp-tool: b_tool\nquery B { __typename }"))
    with pytest.raises(OperationFileError, match="does not fit"):
        parse_operation_file(_write(tmp_path, "C.graphql", "# mcp-tool: c_tool\n# mcp-description: x\n"
                                    "# mcp-kind: destructive\nquery C { __typename }"))
    with pytest.raises(OperationFileError, match="invalid tool name"):
        parse_operation_file(_write(tmp_path, "D.graphql", "# mcp-tool: Bad-Name\n# mcp-description: x\nquery D { __typename }"))


def test_mcp_mutations_setting_decides_which_mutations_are_tools():
    ops = load_tool_operations()
    assert not [op for op in exposed(ops, "none") if op.is_mutation]
    assert {op.tool for op in exposed(ops, "curated")} >= {"invoice_stamp", "customer_create"}
    assert len(exposed(ops, "all")) >= len(exposed(ops, "curated"))


SDL = '''
type Query { search(filter: Filter, first: Int = 10): [String!]! }
type Mutation { make(input: MakeInput!, mode: Mode = FAST): String }
"How fast." enum Mode { "quick" FAST SLOW }
"A thing to make." input MakeInput {
  "Its name." name: String!
  "Optional tag." tag: String = null
  "Parts." parts: [PartInput!]!
  "Pay form." paymentForm: String
}
"A part." input PartInput { "Code." code: String! "Children." children: [PartInput!] }
input Filter { "Text." text: String }
'''


def test_schema_inlines_inputs_with_required_enums_defaults_and_descriptions():
    builder = SchemaBuilder(build_schema(SDL), {"paymentForm": {"01": "Efectivo", "03": "Transferencia"}})
    schema = builder.for_operation("mutation M($input: MakeInput!, $mode: Mode) { make(input: $input, mode: $mode) }")
    assert schema["required"] == ["input"]
    make = schema["properties"]["input"]
    assert make["required"] == ["name", "parts"] and make["description"].startswith("A thing")
    assert make["properties"]["paymentForm"]["enum"] == ["01", "03"]
    assert "Transferencia" in make["properties"]["paymentForm"]["description"]
    assert schema["properties"]["mode"]["enum"] == ["FAST", "SLOW"] and "quick" in schema["properties"]["mode"]["description"]
    part = make["properties"]["parts"]["items"]
    assert part["required"] == ["code"]
    # recursive inputs are cut, never referenced
    dumped = json.dumps(schema)
    assert "$ref" not in dumped and "anyOf" not in dumped
    assert all("$ref" not in s for s in walk(schema))


def test_graphql_answers_become_results_an_agent_can_act_on():
    ok = result_from_response({"data": {"make": {"thing": {"id": "1"}, "userErrors": []}}}, ("make",))
    assert not ok.is_error and json.loads(ok.content[0].text) == ok.structured_content == {"thing": {"id": "1"}, "userErrors": []}
    bad = result_from_response({"data": {"make": {"thing": None, "userErrors": [
        {"field": ["input", "concepts", "0", "unitPrice"], "code": "OUT_OF_RANGE", "message": "Debe ser mayor que cero."}]}}}, ("make",))
    assert bad.is_error and bad.content[0].text == "OUT_OF_RANGE en input.concepts.0.unitPrice: Debe ser mayor que cero."
    denied = result_from_response({"data": None, "errors": [{"message": "Sin permiso.", "path": ["make"],
                                   "extensions": {"code": "FORBIDDEN", "missingPermissions": ["invoice:issue"]}}]}, ("make",))
    assert denied.is_error and "FORBIDDEN" in denied.content[0].text and "invoice:issue" in denied.content[0].text
    listed = result_from_response({"data": {"satCatalog": [{"code": "01"}]}}, ("satCatalog",))
    assert listed.structured_content == {"items": [{"code": "01"}]}  # structuredContent is always an object


def _catalog(**kw) -> ToolCatalog:
    return ToolCatalog(load_tool_operations(), SUPERGRAPH.read_text(), GatewayClient(BridgeSettings()),
                       rate_limit_per_minute=kw.get("rate", 100), max_wait_seconds=25, graphql_query_tool=kw.get("gq", False))


def _caller(*perms: str) -> Caller:
    return Caller(token="t", organization_id="o", user_id="u", api_key_id="k", permissions=frozenset(perms), expires_at=0)


async def test_refusals_happen_before_any_call_to_the_gateway():
    catalog = _catalog()
    # missing permission: named in the error; the tool is not listed either
    r = await catalog.call(_caller("invoice:read"), "invoice_stamp", {"id": "x", "idempotencyKey": "k", "confirm": True})
    assert r.is_error and "invoice:issue" in r.content[0].text
    # destructive without an idempotency key
    r = await catalog.call(_caller("invoice:issue"), "invoice_stamp", {"id": "x", "confirm": True})
    assert r.is_error and r.content[0].text.startswith("IDEMPOTENCY_KEY_REQUIRED")
    r = await catalog.call(_caller("invoice:read"), "no_such_tool", {})
    assert r.is_error and "UNKNOWN_TOOL" in r.content[0].text


async def test_per_key_rate_limit_answers_a_tool_error():
    catalog = _catalog(rate=2)
    caller = _caller()
    for _ in range(2):
        await catalog.call(caller, "no_such_tool", {})
    r = await catalog.call(caller, "no_such_tool", {})
    assert r.is_error and r.content[0].text.startswith("RATE_LIMITED")
    other = Caller(token="t", organization_id="o", user_id="u2", api_key_id="k2", permissions=frozenset(), expires_at=0)
    assert "RATE_LIMITED" not in (await catalog.call(other, "no_such_tool", {})).content[0].text
    assert RateLimiter(1).retry_after("a") == 0 and RateLimiter(1).retry_after("b") == 0


async def test_free_form_query_tool_is_off_by_default_and_read_only_when_on():
    assert "graphql_query" not in {t.name for t in await _catalog().list_for(_caller())}
    catalog = _catalog(gq=True)
    assert "graphql_query" in {t.name for t in await catalog.list_for(_caller())}
    r = await catalog.call(_caller(), "graphql_query", {"query": "mutation { logOut { success } }"})
    assert r.is_error and r.content[0].text.startswith("READ_ONLY")


async def test_unknown_arguments_are_ignored_and_safety_arguments_not_forwarded():
    catalog = _catalog()
    op = catalog.ops["invoice_stamp"]
    assert catalog._variables(op, {"id": "1", "idempotencyKey": "k", "confirm": True, "waitSeconds": 3,
                                   "toolCallId": "n8n", "sessionId": "s", "action": "a"}) == {"id": "1", "idempotencyKey": "k"}
