"""What tracing costs per request: CPU time of an authenticated `{ me { id email } }` on the auth
subgraph (JWT, one SQL query), in-process, with tracing off and on (spans exported over OTLP/HTTP
to a local receiver that discards them), against a plain Starlette handler measured in the same
process (the floor). Each mode runs in its own process: tracing is set up once per process.

CPU time (time.process_time: this process, every thread, so the exporter's thread counts), not
wall-clock: the machine is shared.

    DATABASE_URL=postgresql://postgres@127.0.0.1/postgres REDIS_URL=redis://127.0.0.1:6379/15 \\
        .venv/bin/python bench/tracing_overhead.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import per_request_us  # noqa: E402

N = int(os.environ.get("BENCH_REQUESTS", "1000"))


async def cpu_per_request(client, method: str, path: str, **kw) -> float:
    return await per_request_us(client, method, path, n=N, clock=time.process_time, **kw)


async def measure(db: str, redis_url: str) -> dict:
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from shared.config import load_settings
    from subgraphs.auth import service
    from subgraphs.auth.app import create_app

    plain = Starlette(routes=[Route("/", lambda r: JSONResponse({"data": {"__typename": "Query"}}))])
    app = create_app(load_settings(database_url=db, redis_url=redis_url, app_env="test"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plain), base_url="http://b") as c:
            floor = await cpu_per_request(c, "GET", "/")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
            email = f"bench-{uuid.uuid4().hex[:8]}@example.mx"
            await service.ensure_demo(app.state.runtime, email=email, password="bench-password-123")
            login = await c.post("/graphql", json={"query": """mutation($i: LogInInput!) { logIn(input: $i) {
                tokens { accessToken } } }""", "variables": {"i": {"email": email, "password": "bench-password-123"}}})
            token = login.json()["data"]["logIn"]["tokens"]["accessToken"]
            me = await cpu_per_request(c, "POST", "/graphql", json={"query": "{ me { id email } }"},
                                       headers={"Authorization": f"Bearer {token}"})
    from shared import telemetry

    return {"floor": floor, "me": me, "tracing": telemetry.tracing_enabled()}


def sink() -> tuple[ThreadingHTTPServer, str]:
    """An OTLP/HTTP endpoint that accepts and drops every export."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    if len(sys.argv) == 3:  # a child: one mode
        print(json.dumps(asyncio.run(measure(sys.argv[1], sys.argv[2]))))
        return
    from shared import embedded
    from shared.migrations import upgrade

    admin = os.environ.get("DATABASE_URL") or embedded.ensure_postgres("pg-bench")
    db = embedded.create_database(admin, "facturacion_bench_tracing")
    redis_proc, redis_url = (None, os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else embedded.start_redis()
    upgrade("auth", db)
    server, url = sink()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    results = {}
    try:
        for mode, extra in (("off", {}), ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": url})):
            out = subprocess.run([sys.executable, __file__, db, redis_url], env={**base, **extra}, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
            assert results[mode]["tracing"] is (mode == "on")
    finally:
        server.shutdown()
        embedded.drop_database(admin, "facturacion_bench_tracing")
        if redis_proc:
            redis_proc.terminate()
    print(f"requests per case: {N} (in-process ASGI, CPU time per request, {os.cpu_count()} cores)")
    for mode, r in results.items():
        print(f"tracing {mode:3}: plain Starlette {r['floor']:7.0f} µs   auth {{ me {{ id email }} }} "
              f"{r['me']:7.0f} µs  = {r['me'] / r['floor']:5.1f}x floor")
    print(f"tracing on / off: {results['on']['me'] / results['off']['me']:.2f}x "
          f"(floor-normalised {(results['on']['me'] / results['on']['floor']) / (results['off']['me'] / results['off']['floor']):.2f}x)")


if __name__ == "__main__":
    main()
