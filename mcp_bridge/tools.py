"""Running a tool: one GraphQL operation through the gateway, with the safety rules agents need.

- Arguments the operation does not declare are ignored (n8n adds `toolCallId`, `sessionId`, …).
- A tool the key's permissions do not allow is refused naming the missing permission.
- Destructive tools (stamp, cancel) need `confirm: true` and an `idempotencyKey`; without
  `confirm` they answer a preview of what would happen. A repeated call with the same key within
  the replay window answers the first result again instead of acting twice.
- GraphQL errors and `userErrors` become tool errors whose text names the code, the field path
  and the Spanish message, so an agent can correct itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLSchema, build_schema
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations

from mcp_bridge.gateway import Caller, GatewayClient
from mcp_bridge.jsonschema import SchemaBuilder
from mcp_bridge.operations import ToolOperation

SAFETY_ARGS = ("confirm", "idempotencyKey", "waitSeconds")
# Which SAT catalog answers for a SAT-coded string argument (through `satCatalog`).
SAT_CATALOG_FIELDS = {
    "paymentForm": "FormaPago", "paymentMethod": "MetodoPago", "cfdiUse": "UsoCFDI",
    "taxRegime": "RegimenFiscal", "taxObject": "ObjetoImp", "exportation": "Exportacion",
}
CANCELLATION_REASONS = {
    "01": "Comprobante emitido con errores con relación (requiere replacementUuid)",
    "02": "Comprobante emitido con errores sin relación",
    "03": "No se llevó a cabo la operación",
    "04": "Operación nominativa relacionada en una factura global",
}
GRAPHQL_QUERY_TOOL = "graphql_query"


@dataclass
class ToolError(Exception):
    code: str
    message: str
    field: list[str] | None = None

    def text(self) -> str:
        where = f" en {'.'.join(self.field)}" if self.field else ""
        return f"{self.code}{where}: {self.message}"


class RateLimiter:
    """Tool calls per API key per minute, in this process (a sliding one-minute window)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._calls: dict[str, list[float]] = {}

    def retry_after(self, key: str) -> int:
        now = time.monotonic()
        calls = [t for t in self._calls.get(key, []) if now - t < 60]
        if len(calls) >= self.per_minute:
            self._calls[key] = calls
            return int(60 - (now - calls[0])) + 1
        calls.append(now)
        self._calls[key] = calls
        return 0


class ReplayCache:
    """Results of destructive calls by (API key, tool, idempotencyKey), so an n8n retry after its
    timeout gets the first answer instead of a second action. Bounded; the subgraph's own
    idempotency (stampInvoice's key, the cancellation state machine) stays the real guarantee."""

    def __init__(self, size: int = 2048, ttl: float = 24 * 3600):
        self.size, self.ttl = size, ttl
        self._items: OrderedDict[tuple, tuple[float, CallToolResult]] = OrderedDict()
        self._locks: dict[tuple, asyncio.Lock] = {}

    def lock(self, key: tuple) -> asyncio.Lock:
        if len(self._locks) > self.size:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault(key, asyncio.Lock())

    def get(self, key: tuple) -> CallToolResult | None:
        hit = self._items.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def put(self, key: tuple, result: CallToolResult) -> None:
        self._items[key] = (time.monotonic(), result)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class ToolCatalog:
    def __init__(self, ops: list[ToolOperation], supergraph_sdl: str, gateway: GatewayClient, *,
                 rate_limit_per_minute: int, max_wait_seconds: int, graphql_query_tool: bool,
                 preview_document: str | None = None):
        self.ops = {op.tool: op for op in ops}
        self.preview_document = preview_document
        self.schema: GraphQLSchema = build_schema(supergraph_sdl)
        self.gateway = gateway
        self.limiter = RateLimiter(rate_limit_per_minute)
        self.replays = ReplayCache()
        self.max_wait = max_wait_seconds
        self.graphql_query_tool = graphql_query_tool
        self._catalog_values: dict[str, dict[str, str]] | None = None
        self._schemas: dict[str, dict] = {}

    # --- listing ------------------------------------------------------------------------------

    async def list_for(self, caller: Caller) -> list[Tool]:
        await self._ensure_catalogs(caller)
        tools = [self._tool(op) for op in self.ops.values() if set(op.permissions) <= caller.permissions]
        if self.graphql_query_tool:
            tools.append(Tool(name=GRAPHQL_QUERY_TOOL, description=(
                "Ejecuta una consulta GraphQL de solo lectura (query, nunca mutation) contra la API de "
                "facturación con los permisos de la llave. Úsala solo si ninguna otra herramienta sirve."),
                input_schema={"type": "object", "required": ["query"], "properties": {
                    "query": {"type": "string", "description": "Documento GraphQL con una sola operación query."},
                    "variables": {"type": "object", "description": "Variables de la consulta."}}},
                annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False)))
        return tools

    def input_schema(self, op: ToolOperation) -> dict:
        if op.tool not in self._schemas:
            builder = SchemaBuilder(self.schema, self._catalogs_for_schema())
            schema = builder.for_operation(op.document, op.arg_descriptions)
            if op.kind == "destructive":
                props = schema.setdefault("properties", {})
                props["confirm"] = {"type": "boolean", "default": False, "description": (
                    "true para ejecutar. Sin true la herramienta solo muestra una vista previa de lo que haría "
                    "(la factura, sus totales y el receptor).")}
                props.setdefault("idempotencyKey", {"type": "string", "description": (
                    "Clave única que tú generas para esta acción (p. ej. el id de la ejecución de n8n); "
                    "repetir la llamada con la misma clave nunca repite la acción.")})
                schema["required"] = sorted(set(schema.get("required", [])) | {"idempotencyKey"})
            if op.tool == "invoice_stamp":
                schema["properties"]["waitSeconds"] = {"type": "integer", "minimum": 0, "maximum": self.max_wait,
                                                       "default": 0, "description": (
                    f"Segundos (máximo {self.max_wait}) a esperar a que el timbrado termine (STAMPED o "
                    "STAMP_FAILED); con 0 responde al instante en STAMPING y puedes consultar invoice_status.")}
            self._schemas[op.tool] = schema
        return self._schemas[op.tool]

    def _tool(self, op: ToolOperation) -> Tool:
        annotations = ToolAnnotations(
            read_only_hint=op.kind == "read",
            destructive_hint=op.kind == "destructive",
            idempotent_hint=op.kind != "write",
            open_world_hint=op.kind == "destructive",  # stamping/cancelling reaches the PAC and SAT
        )
        perms = f" Requiere: {', '.join(op.permissions)}." if op.permissions else ""
        return Tool(name=op.tool, description=op.description + perms, input_schema=self.input_schema(op),
                    annotations=annotations)

    def _catalogs_for_schema(self) -> dict[str, dict[str, str]]:
        values = dict(self._catalog_values or {})
        values["reason"] = CANCELLATION_REASONS
        return values

    async def _ensure_catalogs(self, caller: Caller) -> None:
        """SAT codes for enums, read once per process through the gateway (the bridge stays a
        client of the API: no catalog copy of its own to go stale)."""
        if self._catalog_values is not None or "invoice:read" not in caller.permissions:
            return
        fields = " ".join(f'{f}: satCatalog(name: "{c}", first: 200) {{ code description }}'
                          for f, c in SAT_CATALOG_FIELDS.items())
        try:
            data = await self.gateway.execute(f"query BridgeSatCatalogs {{ {fields} }}", None, caller.token)
        except Exception:  # noqa: BLE001 - enums are an aid; the tools work without them
            return
        got = data.get("data") or {}
        self._catalog_values = {f: {row["code"]: row["description"] for row in got.get(f) or []}
                                for f in SAT_CATALOG_FIELDS if got.get(f)}
        self._schemas.clear()

    # --- calling ------------------------------------------------------------------------------

    async def call(self, caller: Caller, name: str, arguments: dict[str, Any]) -> CallToolResult:
        if wait := self.limiter.retry_after(caller.api_key_id or caller.user_id):
            return error_result(ToolError("RATE_LIMITED", f"Demasiadas llamadas con esta llave; intenta de nuevo en {wait} s."))
        if name == GRAPHQL_QUERY_TOOL and self.graphql_query_tool:
            return await self._free_query(caller, arguments)
        op = self.ops.get(name)
        if op is None:
            return error_result(ToolError("UNKNOWN_TOOL", f"La herramienta {name} no existe."))
        missing = sorted(set(op.permissions) - caller.permissions)
        if missing:
            return error_result(ToolError("FORBIDDEN", f"La llave de API no tiene el permiso {', '.join(missing)}."))
        variables = self._variables(op, arguments)
        if op.kind != "destructive":
            return await self._run(op, variables, caller)
        if not arguments.get("idempotencyKey"):
            return error_result(ToolError("IDEMPOTENCY_KEY_REQUIRED",
                                          "Envía idempotencyKey: una clave única por acción.", ["idempotencyKey"]))
        if arguments.get("confirm") is not True:
            return await self._preview(op, variables, caller)
        key = (caller.api_key_id or caller.user_id, op.tool, str(arguments["idempotencyKey"]))
        async with self.replays.lock(key):
            if (replay := self.replays.get(key)) is not None:
                return replay
            result = await self._run(op, variables, caller)
            if op.tool == "invoice_stamp" and not result.is_error:
                result = await self._maybe_wait(result, arguments, caller)
            if not result.is_error:
                self.replays.put(key, result)
            return result

    def _variables(self, op: ToolOperation, arguments: dict[str, Any]) -> dict[str, Any]:
        declared = self.input_schema(op)["properties"]
        return {k: v for k, v in arguments.items() if k in declared and (k not in SAFETY_ARGS or k == "idempotencyKey")
                and _declares(op, k)}

    async def _run(self, op: ToolOperation, variables: dict[str, Any], caller: Caller) -> CallToolResult:
        data = await self.gateway.execute(op.document, variables, caller.token, op.operation_name)
        return result_from_response(data, op.result_path)

    async def _preview(self, op: ToolOperation, variables: dict[str, Any], caller: Caller) -> CallToolResult:
        if self.preview_document is None or "id" not in variables:
            return error_result(ToolError("CONFIRMATION_REQUIRED", "Envía confirm: true para ejecutar esta acción."))
        data = await self.gateway.execute(self.preview_document, {"id": variables["id"]}, caller.token, "InvoicePreview")
        shown = result_from_response(data, ("invoice",))
        if shown.is_error:
            return shown
        action = {"invoice_stamp": "timbrar ante el PAC (emite un CFDI ante el SAT; no se puede deshacer, solo cancelar)",
                  "invoice_cancel": "solicitar la cancelación ante el SAT (irreversible)"}.get(op.tool, op.tool)
        body = {"preview": True, "wouldDo": action, "invoice": shown.structured_content,
                "howToConfirm": "Repite la llamada con confirm: true y la misma idempotencyKey."}
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(body, ensure_ascii=False))],
                              structured_content=body, is_error=False)

    async def _maybe_wait(self, result: CallToolResult, arguments: dict[str, Any], caller: Caller) -> CallToolResult:
        try:
            seconds = min(max(int(arguments.get("waitSeconds") or 0), 0), self.max_wait)
        except (TypeError, ValueError):
            seconds = 0
        invoice = (result.structured_content or {}).get("invoice") or {}
        status_op = self.ops.get("invoice_status")
        if seconds <= 0 or not invoice.get("id") or status_op is None or invoice.get("status") != "STAMPING":
            return result
        final = await self.gateway.wait_for_status(caller.token, invoice["id"], {"STAMPED", "STAMP_FAILED"},
                                                   seconds, status_op.document)
        if not final:
            return result
        body = dict(result.structured_content)
        body["invoice"] = {**invoice, **final}
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(body, ensure_ascii=False))],
                              structured_content=body, is_error=False)

    async def _free_query(self, caller: Caller, arguments: dict[str, Any]) -> CallToolResult:
        from graphql import OperationDefinitionNode, OperationType, parse

        query = arguments.get("query")
        try:
            doc = parse(query) if isinstance(query, str) else None
        except Exception as exc:  # noqa: BLE001 - a syntax error is the caller's to fix
            return error_result(ToolError("GRAPHQL_PARSE_FAILED", str(exc), ["query"]))
        ops = [d for d in (doc.definitions if doc else []) if isinstance(d, OperationDefinitionNode)]
        if len(ops) != 1 or ops[0].operation is not OperationType.QUERY:
            return error_result(ToolError("READ_ONLY", "Solo se permite una operación query.", ["query"]))
        variables = arguments.get("variables") if isinstance(arguments.get("variables"), dict) else {}
        data = await self.gateway.execute(query, variables, caller.token)
        return result_from_response(data, ())


def _declares(op: ToolOperation, name: str) -> bool:
    return f"${name}" in op.document


def error_result(err: ToolError, extra: dict | None = None) -> CallToolResult:
    body = {"error": {"code": err.code, "field": err.field, "message": err.message}, **(extra or {})}
    return CallToolResult(content=[TextContent(type="text", text=err.text())], structured_content=body, is_error=True)


def result_from_response(data: dict[str, Any], path: tuple[str, ...]) -> CallToolResult:
    """The agent's view of a GraphQL response: the payload, or an error it can act on."""
    errors = data.get("errors") or []
    if errors:
        lines = []
        for e in errors:
            ext = e.get("extensions") or {}
            code = ext.get("code") or "GRAPHQL_ERROR"
            missing = ext.get("missingPermissions")
            msg = e.get("message") or ""
            if missing:
                msg += f" (falta el permiso {', '.join(missing)})"
            lines.append(ToolError(code, msg, [str(p) for p in e.get("path") or []] or None).text())
        body = {"errors": errors, "data": data.get("data")}
        return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], structured_content=body, is_error=True)
    value: Any = data.get("data") or {}
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("userErrors"):
        lines = [ToolError(u.get("code") or "INVALID", u.get("message") or "", u.get("field")).text() for u in value["userErrors"]]
        return CallToolResult(content=[TextContent(type="text", text="\n".join(lines))], structured_content=value, is_error=True)
    if value is None:
        return error_result(ToolError("NOT_FOUND", "No se encontró el recurso solicitado."))
    body = value if isinstance(value, dict) else {"items": value}
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(body, ensure_ascii=False))],
                          structured_content=body, is_error=False)
