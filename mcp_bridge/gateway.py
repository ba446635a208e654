"""The bridge's only dependency: the supergraph gateway, over HTTP (and WebSocket for waits).

API keys are exchanged for short-lived access tokens (`exchangeApiKey`) and cached per key until
shortly before they expire; the key itself is only ever held in memory as its SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from mcp_bridge.config import BridgeSettings

EXCHANGE = "mutation BridgeExchangeApiKey($key: String!) { exchangeApiKey(key: $key) { accessToken expiresIn userErrors { field code message } } }"


class GatewayUnavailable(Exception):
    """The gateway could not be reached or answered with a server error."""


class InvalidApiKey(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Caller:
    """Who a tool call acts for: what the exchanged token says (the subgraphs re-check it all)."""

    token: str
    organization_id: str
    user_id: str
    api_key_id: str | None
    permissions: frozenset[str]
    expires_at: float


class GatewayClient:
    def __init__(self, settings: BridgeSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.url = settings.gateway_url
        # Idle connections are dropped before the gateway's server would drop them, so a reused
        # connection is never one it is closing (the retry below covers the rest).
        limits = httpx.Limits(max_keepalive_connections=20, keepalive_expiry=settings.gateway_keepalive_seconds)
        self.http = httpx.AsyncClient(timeout=settings.gateway_timeout_seconds, limits=limits, transport=transport,
                                      headers={"apollographql-client-name": "mcp-bridge", "content-type": "application/json"})
        self._tokens: dict[str, Caller] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def execute(self, document: str, variables: dict[str, Any] | None, token: str | None,
                      operation_name: str | None = None) -> dict[str, Any]:
        body = {"query": document, "variables": variables or {}}
        if operation_name:
            body["operationName"] = operation_name
        headers = {"authorization": f"Bearer {token}"} if token else {}
        for attempt in (1, 2):
            try:
                resp = await self.http.post(self.url, json=body, headers=headers)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # A pooled connection the server closed meanwhile: the request never ran there.
                if attempt == 2:
                    raise GatewayUnavailable(str(exc) or type(exc).__name__) from exc
            except httpx.TimeoutException as exc:
                raise GatewayUnavailable("tiempo de espera agotado con el gateway") from exc
        if resp.status_code >= 500 and not resp.headers.get("content-type", "").startswith("application/"):
            raise GatewayUnavailable(f"HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError as exc:
            raise GatewayUnavailable(f"HTTP {resp.status_code}: respuesta no JSON") from exc
        if resp.status_code == 429:
            data.setdefault("errors", [{"message": "Demasiadas solicitudes.", "extensions": {"code": "RATE_LIMITED"}}])
            data["retryAfter"] = resp.headers.get("retry-after")
        return data

    async def caller_for_key(self, api_key: str) -> Caller:
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        margin = self.settings.mcp_token_refresh_margin_seconds
        cached = self._tokens.get(digest)
        if cached and cached.expires_at - margin > time.time():
            return cached
        async with self._locks.setdefault(digest, asyncio.Lock()):
            cached = self._tokens.get(digest)
            if cached and cached.expires_at - margin > time.time():
                return cached
            data = await self.execute(EXCHANGE, {"key": api_key}, None, "BridgeExchangeApiKey")
            payload = (data.get("data") or {}).get("exchangeApiKey") or {}
            errors = payload.get("userErrors") or data.get("errors") or []
            if errors or not payload.get("accessToken"):
                first = errors[0] if errors else {}
                code = first.get("code") or (first.get("extensions") or {}).get("code") or "INVALID_API_KEY"
                if code not in ("INVALID_API_KEY", "TOO_MANY_ATTEMPTS", "RATE_LIMITED"):
                    raise GatewayUnavailable(f"{code}: {first.get('message')}")
                self._tokens.pop(digest, None)
                raise InvalidApiKey(code, first.get("message") or "La llave de API no es válida.")
            token = payload["accessToken"]
            # Read, not trusted: the subgraphs verify the signature on every call; the bridge uses
            # the claims only to list the tools this key may call and to log who called.
            claims = jwt.decode(token, options={"verify_signature": False})
            caller = Caller(token=token, organization_id=str(claims.get("org")), user_id=str(claims.get("sub")),
                            api_key_id=claims.get("akid"), permissions=frozenset(claims.get("perms") or ()),
                            expires_at=time.time() + int(payload.get("expiresIn") or 60))
            self._tokens[digest] = caller
            return caller

    async def wait_for_status(self, token: str, invoice_id: str, until: set[str], seconds: float,
                              status_query: str) -> dict[str, Any] | None:
        """Waits on `invoiceStatusChanged` over graphql-transport-ws for one of `until`.

        Subscribes first, then reads the current status once (a change between the mutation and
        the subscription would otherwise be missed). Returns the last invoice seen, or None.
        """
        import websockets

        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        deadline = time.monotonic() + seconds
        last: dict[str, Any] | None = None
        try:
            async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
                ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if ack.get("type") != "connection_ack":
                    return None
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                    "query": "subscription BridgeInvoiceStatus($id: ID!) { invoiceStatusChanged(id: $id) { status } }",
                    "variables": {"id": invoice_id}}}))
                now = await self.execute(status_query, {"id": invoice_id}, token)
                last = ((now.get("data") or {}).get("invoice")) or None
                if last and last.get("status") in until:
                    return last
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
                    except asyncio.TimeoutError:
                        break
                    if msg.get("type") == "next":
                        status = (((msg.get("payload") or {}).get("data") or {}).get("invoiceStatusChanged") or {}).get("status")
                        if status in until:
                            break
                    elif msg.get("type") in ("error", "complete"):
                        break
        except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
            pass  # fall back to one read below: a wait is best effort, the status query is truth
        now = await self.execute(status_query, {"id": invoice_id}, token)
        return ((now.get("data") or {}).get("invoice")) or last
