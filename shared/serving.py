"""How a subgraph process is served: one uvicorn command line for every place that starts one.

Keep-alive: the gateway's HTTP client (Node's agent) drops an idle connection after 5 s and Apollo
Router's pool after 15 s. uvicorn's default is also 5 s, so both sides raced to close the same
idle socket and a request sent on it after ~5 s of quiet failed ("socket hang up"). The server
must always outlast its clients: it keeps idle connections for KEEPALIVE_SECONDS, the clients
close first, and nothing is ever written to a socket the server has just closed.
compose.yaml repeats the value (checked by tests/supergraph/test_compose.py).

No permessage-deflate on WebSockets: a subgraph's WebSocket clients are gateways on the internal
network, where compressing every subscription frame (once per subscriber and event) costs more
CPU than the bytes it saves; it was a tenth of a live event's fan-out cost (bench/fanout.py).
"""

from __future__ import annotations

import sys

KEEPALIVE_SECONDS = 75


def uvicorn_command(app: str, *, host: str, port: int, python: str = sys.executable) -> list[str]:
    return [python, "-m", "uvicorn", app, "--host", host, "--port", str(port), "--no-access-log", "--no-proxy-headers",
            "--timeout-keep-alive", str(KEEPALIVE_SECONDS), "--timeout-graceful-shutdown", "5",
            "--ws-per-message-deflate", "false"]
