"""Per-request cost of a subgraph, in-process (no network), to watch the GraphQL overhead.

Prints mean microseconds per request for: a plain Starlette JSON handler (the floor), a bare
Strawberry `{ __typename }` (parse/validate cached), and an authenticated `{ me { id email } }`
on the auth subgraph (JWT verified, one SQL query through a DataLoader).

    DATABASE_URL=postgresql://postgres@127.0.0.1/postgres REDIS_URL=redis://127.0.0.1:6379/15 \\
        .venv/bin/python bench/graphql_overhead.py
Without the URLs it uses the embedded servers.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import per_request_us  # noqa: E402

import httpx  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from shared import embedded  # noqa: E402
from shared.config import load_settings  # noqa: E402

N = int(os.environ.get("BENCH_REQUESTS", "1000"))


async def timed(client: httpx.AsyncClient, method: str, path: str, **kw) -> float:
    return await per_request_us(client, method, path, n=N, **kw)


async def main() -> None:
    admin = os.environ.get("DATABASE_URL") or embedded.ensure_postgres("pg-bench")
    db = embedded.create_database(admin, "facturacion_bench")
    redis_proc = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_proc, redis_url = embedded.start_redis()
    from shared.migrations import upgrade

    upgrade("auth", db)
    settings = load_settings(database_url=db, redis_url=redis_url, app_env="test")

    plain = Starlette(routes=[Route("/", lambda r: JSONResponse({"data": {"__typename": "Query"}}))])
    from subgraphs.auth.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plain), base_url="http://b") as c:
            floor = await timed(c, "GET", "/")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c:
            bare = await timed(c, "POST", "/graphql", json={"query": "{ __typename }"})
            from subgraphs.auth import service  # an account without the mailed sign-up link

            email = f"bench-{uuid.uuid4().hex[:8]}@example.mx"
            await service.ensure_demo(app.state.runtime, email=email, password="bench-password-123")
            login = await c.post("/graphql", json={"query": """mutation($i: LogInInput!) { logIn(input: $i) {
                tokens { accessToken } } }""", "variables": {"i": {"email": email, "password": "bench-password-123"}}})
            token = login.json()["data"]["logIn"]["tokens"]["accessToken"]
            me = await timed(c, "POST", "/graphql", json={"query": "{ me { id email } }"},
                             headers={"Authorization": f"Bearer {token}"})
    print(f"requests per case: {N} (in-process ASGI, one client, {os.cpu_count()} cores)")
    print(f"plain Starlette handler        {floor:9.0f} µs/request   1.0x")
    print(f"Strawberry {{ __typename }}       {bare:9.0f} µs/request  {bare / floor:4.1f}x")
    print(f"auth {{ me {{ id email }} }} + JWT  {me:9.0f} µs/request  {me / floor:4.1f}x")
    embedded.drop_database(admin, "facturacion_bench")
    if redis_proc:
        redis_proc.terminate()


if __name__ == "__main__":
    asyncio.run(main())
