"""The bridge's ASGI app (port 4005): MCP over Streamable HTTP at `/mcp` (stateless: any bridge
instance answers any request, n8n opens a new session per run), legacy SSE at `/sse`, health.

Every MCP request carries an organization API key (`Authorization: Bearer <key>` for n8n's
"Bearer Auth", or `X-API-Key: <key>` for its "Header Auth"); a missing or invalid key is answered
HTTP 401 with `WWW-Authenticate` before any MCP exchange.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ListToolsResult, TextContent
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcp_bridge.config import BridgeSettings, get_bridge_settings
from mcp_bridge.gateway import GatewayClient, GatewayUnavailable, InvalidApiKey
from mcp_bridge.operations import exposed, load_tool_operations
from mcp_bridge.tools import ToolCatalog

log = logging.getLogger("mcp_bridge")
INSTRUCTIONS = (
    "Facturación electrónica CFDI 4.0 y gastos de una organización mexicana. Las herramientas de "
    "lectura no cambian nada; invoice_stamp e invoice_cancel actúan ante el SAT: llámalas primero sin "
    "confirm para ver la vista previa y luego con confirm: true y una idempotencyKey. Los montos son "
    "textos decimales. Los errores dicen el código, el campo y el mensaje: corrige y reintenta."
)


class BridgeServer(MCPServer):
    """MCPServer whose tools are the caller's: listed and run per API key."""

    def __init__(self, catalog: ToolCatalog):
        super().__init__(name="facturacion", title="Facturación CFDI 4.0", instructions=INSTRUCTIONS,
                         version="1.0.0", subscriptions=False)
        self.catalog = catalog

    async def _handle_list_tools(self, ctx, params) -> ListToolsResult:
        return ListToolsResult(tools=await self.catalog.list_for(_caller(ctx)))

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        op = self.catalog.ops.get(name)
        return None if op is None else self.catalog.input_schema(op)

    async def _handle_call_tool(self, ctx, params) -> CallToolResult:
        caller = _caller(ctx)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.catalog.call(caller, params.name, dict(params.arguments or {}))
            outcome = "tool_error" if result.is_error else "ok"
            if result.is_error and isinstance(result.structured_content, dict):
                err = result.structured_content.get("error") or {}
                outcome = f"tool_error:{err.get('code') or 'GRAPHQL'}"
            return result
        except GatewayUnavailable as exc:
            outcome = "gateway_unavailable"
            return CallToolResult(content=[TextContent(type="text", text=(
                f"SERVICE_UNAVAILABLE: la API no respondió ({exc}); intenta de nuevo en unos segundos."))], is_error=True)
        finally:
            # One line per call: who (never the key itself), what, how it went, how long.
            log.info("tool call", extra={"tool": params.name, "api_key_id": caller.api_key_id,
                                         "organization_id": caller.organization_id, "outcome": outcome,
                                         "duration_ms": round((time.perf_counter() - started) * 1000, 1)})


def _caller(ctx):
    request = getattr(ctx, "request", None)
    caller = getattr(getattr(request, "state", None), "caller", None)
    if caller is None:  # the auth wrapper runs before every MCP route; this is a wiring bug
        raise RuntimeError("MCP request without an authenticated caller")
    return caller


class ApiKeyAuth:
    """ASGI wrapper: exchange the request's API key for a caller before MCP sees the request."""

    def __init__(self, app, gateway: GatewayClient):
        self.app, self.gateway = app, gateway

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = headers.get("x-api-key", "").strip()
        auth = headers.get("authorization", "")
        if not key and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        if not key:
            return await _unauthorized(scope, receive, send, "missing_api_key",
                                       "Falta la llave de API (Authorization: Bearer <llave> o X-API-Key).")
        try:
            caller = await self.gateway.caller_for_key(key)
        except InvalidApiKey as exc:
            return await _unauthorized(scope, receive, send, "invalid_token", str(exc), code=exc.code)
        except GatewayUnavailable:
            resp = JSONResponse({"error": "SERVICE_UNAVAILABLE", "message": "La API no está disponible; intenta de nuevo."},
                                status_code=503, headers={"retry-after": "5"})
            return await resp(scope, receive, send)
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def _unauthorized(scope, receive, send, error: str, message: str, code: str = "UNAUTHENTICATED"):
    status = 429 if code in ("TOO_MANY_ATTEMPTS", "RATE_LIMITED") else 401
    resp = JSONResponse({"error": code, "message": message}, status_code=status, headers={
        "www-authenticate": f'Bearer realm="facturacion-mcp", error="{error}"'})
    await resp(scope, receive, send)


def create_app(settings: BridgeSettings | None = None) -> Starlette:
    settings = settings or get_bridge_settings()
    gateway = GatewayClient(settings)
    operations_dir = settings.mcp_schema_dir / "operations"
    ops = exposed(load_tool_operations(operations_dir), settings.mcp_mutations)
    catalog = ToolCatalog(ops, (settings.mcp_schema_dir / "supergraph.graphql").read_text(encoding="utf-8"), gateway,
                          rate_limit_per_minute=settings.mcp_rate_limit_per_minute,
                          max_wait_seconds=settings.mcp_max_wait_seconds,
                          graphql_query_tool=settings.mcp_graphql_query_tool,
                          preview_document=(operations_dir / "InvoicePreview.graphql").read_text(encoding="utf-8"))
    server = BridgeServer(catalog)
    # host="0.0.0.0": no DNS-rebinding host check (callers authenticate with a key, never cookies,
    # and the bridge is reached by service names in deployments).
    streamable = server.streamable_http_app(stateless_http=True, json_response=True, host="0.0.0.0")
    sse = server.sse_app(host="0.0.0.0")
    routes = [Route(r.path, ApiKeyAuth(r.endpoint if hasattr(r, "endpoint") else r.app, gateway))
              if getattr(r, "path", "") == "/mcp" else r for r in streamable.routes]
    # SSE: both the event stream and its message endpoint need the key.
    protected_sse = Starlette(routes=sse.routes)
    health = [Route("/health/live", lambda r: JSONResponse({"status": "ok"})),
              Route("/health/ready", _ready(gateway))]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with server.session_manager.run():
            yield
        await gateway.aclose()

    from starlette.routing import Mount

    return Starlette(routes=[*health, *routes, Mount("/", app=ApiKeyAuth(protected_sse, gateway))], lifespan=lifespan)


def _ready(gateway: GatewayClient):
    async def ready(request):
        try:
            resp = await gateway.http.post(gateway.url, json={"query": "{ __typename }"})
            ok = resp.status_code < 500
        except Exception:  # noqa: BLE001 - any failure means not ready
            ok = False
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": {"gateway": "ok" if ok else "error"}},
                            status_code=200 if ok else 503)
    return ready
