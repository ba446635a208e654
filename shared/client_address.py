"""The address of the client behind a request, for per-client throttles.

Behind the gateway every request comes from the gateway's address, so the gateway appends the
address it saw to `X-Forwarded-For` and adds `X-Gateway-Secret` (`GATEWAY_SHARED_SECRET`). A
subgraph believes `X-Forwarded-For` only when that secret matches (constant-time compare), and then
only its LAST entry, the one the gateway wrote (earlier entries are whatever the client sent).
Anything else, loopback included, is judged by the TCP peer. With no secret configured,
`X-Forwarded-For` is never believed. uvicorn itself must not rewrite the peer from proxy headers
(`--no-proxy-headers` wherever subgraphs start), or a forged header would win before we look.
"""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

GATEWAY_SECRET_HEADER = "x-gateway-secret"


def from_gateway(conn: HTTPConnection, secret: str) -> bool:
    presented = conn.headers.get(GATEWAY_SECRET_HEADER, "")
    return bool(secret) and hmac.compare_digest(presented.encode(), secret.encode())


def client_address(conn: HTTPConnection, secret: str) -> str:
    if from_gateway(conn, secret):
        hops = [h.strip() for h in conn.headers.get("x-forwarded-for", "").split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    return conn.client.host if conn.client else "unknown"
