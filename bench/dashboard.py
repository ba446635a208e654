"""CPU per request of the dashboard list (`invoices(first: 50)` with customer) on the invoice
subgraph, against a plain Starlette handler doing the same work (the floor).

Every server runs as its own uvicorn process (the production command line, `shared/serving.py`);
CPU is read from /proc/<pid>/stat (user + system) before and after N sequential requests, so the
client's own work is not counted. Same database, same seeded organization (50+ invoices of one
customer), same token, same JWT verification (JWKS + membership version), same JSON shape.

Cases:
  floor             plain handler: verify the token, the invoice page and its customers as the
                    two statements the subgraph runs (all columns), straight on asyncpg, JSON out
  1 join            the same with only the needed columns in one join
  SQLAlchemy Core   both again through SQLAlchemy Core on the service's engine (pre-ping, result
                    processing): what a plain handler written with the project's tools costs
  subgraph          the invoice subgraph, POST /graphql with the document the gateway sends for the
                    persisted `Invoices` operation (the whole operation is one invoice fetch); also
                    with GRAPHQL_COMPILED=never (generic executor only) to show the compiled path

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/15 \\
        .venv/bin/python bench/dashboard.py
Without the URLs it uses the embedded servers. BENCH_REQUESTS (default 400) per case.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import process_cpu_seconds  # noqa: E402
from shared.embedded import free_port  # noqa: E402

N = int(os.environ.get("BENCH_REQUESTS", "400"))
PAGE = 50
# What the gateway's planner sends the invoice subgraph for the persisted `Invoices` operation:
# every field lives in this subgraph, so it is the operation itself, in one fetch.
SUBGRAPH_QUERY = ("query Invoices($filter:InvoiceFilter$first:Int$after:String){invoices(filter:$filter first:$first "
                  "after:$after){edges{cursor node{id type status series folio uuid total currency createdAt "
                  "customer{id legalName rfc}}}pageInfo{hasNextPage endCursor}}}")


# --- the floor: a plain Starlette app (served by uvicorn as `bench.dashboard:floor_app`) ---------

def _floor_app():
    from sqlalchemy import and_, select
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from shared.config import get_settings
    from shared.pagination import encode_cursor
    from shared.permissions import Permission as P
    from shared.runtime import build_runtime
    from shared.tokens import bearer_token
    from subgraphs.invoice import models as m
    from subgraphs.invoice.service.common import money

    holder: dict = {}
    inv, cust = m.Invoice.__table__, m.Customer.__table__

    async def principal(request: Request):
        rt = holder["rt"]
        token = bearer_token(request.headers.get("authorization"))
        p = await rt.verifier.principal(token)
        if not await rt.authz.is_current(p.organization_id, p.user_id, p.authz_version) or not p.has(P.INVOICE_READ):
            return None
        return p

    def node(r, customer) -> dict:
        return {"id": str(r.id), "type": {"I": "INCOME", "E": "EGRESS", "P": "PAYMENT"}[r.voucher_type],
                "status": r.status, "series": r.series, "folio": r.folio, "uuid": r.uuid,
                "total": str(money(r.total, r.currency)), "currency": r.currency, "createdAt": r.created_at.isoformat(),
                "customer": customer}

    def page(rows, to_node) -> dict:
        has_next, rows = len(rows) > PAGE, rows[:PAGE]
        edges = [{"cursor": encode_cursor([r.created_at.isoformat(), str(r.id)]), "node": to_node(r)} for r in rows]
        return {"data": {"invoices": {"edges": edges, "pageInfo": {
            "hasNextPage": has_next, "endCursor": edges[-1]["cursor"] if edges else None}}}}

    async def two_statements(request: Request) -> Response:
        p = await principal(request)
        if p is None:
            return JSONResponse({"errors": [{"message": "forbidden"}]}, status_code=403)
        async with holder["rt"].engine.connect() as conn:
            rows = (await conn.execute(select(inv).where(inv.c.organization_id == p.organization_id)
                                       .order_by(inv.c.created_at.desc(), inv.c.id.desc()).limit(PAGE + 1))).all()
            ids = list({r.customer_id for r in rows if r.customer_id})
            customers = {c.id: c for c in (await conn.execute(select(cust).where(
                cust.c.organization_id == p.organization_id, cust.c.id.in_(ids)))).all()}
        return JSONResponse(page(rows, lambda r: node(r, {"id": str(r.customer_id), "legalName": customers[r.customer_id].legal_name,
                                                          "rfc": customers[r.customer_id].rfc})))

    async def one_join(request: Request) -> Response:
        p = await principal(request)
        if p is None:
            return JSONResponse({"errors": [{"message": "forbidden"}]}, status_code=403)
        q = (select(inv.c.id, inv.c.voucher_type, inv.c.status, inv.c.series, inv.c.folio, inv.c.uuid, inv.c.total,
                    inv.c.currency, inv.c.created_at, inv.c.customer_id, cust.c.legal_name, cust.c.rfc)
             .select_from(inv.outerjoin(cust, and_(cust.c.id == inv.c.customer_id)))
             .where(inv.c.organization_id == p.organization_id)
             .order_by(inv.c.created_at.desc(), inv.c.id.desc()).limit(PAGE + 1))
        async with holder["rt"].engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return JSONResponse(page(rows, lambda r: node(r, {"id": str(r.customer_id), "legalName": r.legal_name, "rfc": r.rfc})))

    # The same, straight on asyncpg (no SQLAlchemy): the leanest plain handler.
    def record_node(r, customer) -> dict:
        return {"id": str(r["id"]), "type": {"I": "INCOME", "E": "EGRESS", "P": "PAYMENT"}[r["voucher_type"]],
                "status": r["status"], "series": r["series"], "folio": r["folio"], "uuid": r["uuid"],
                "total": str(money(r["total"], r["currency"])), "currency": r["currency"],
                "createdAt": r["created_at"].isoformat(), "customer": customer}

    def record_page(rows, to_customer) -> dict:
        has_next, rows = len(rows) > PAGE, rows[:PAGE]
        edges = [{"cursor": encode_cursor([r["created_at"].isoformat(), str(r["id"])]),
                  "node": record_node(r, to_customer(r))} for r in rows]
        return {"data": {"invoices": {"edges": edges, "pageInfo": {
            "hasNextPage": has_next, "endCursor": edges[-1]["cursor"] if edges else None}}}}

    async def two_asyncpg(request: Request) -> Response:
        p = await principal(request)
        if p is None:
            return JSONResponse({"errors": [{"message": "forbidden"}]}, status_code=403)
        async with holder["pool"].acquire() as conn:
            rows = await conn.fetch(f"SELECT * FROM {inv.fullname} WHERE organization_id = $1 "
                                    "ORDER BY created_at DESC, id DESC LIMIT $2", p.organization_id, PAGE + 1)
            ids = list({r["customer_id"] for r in rows if r["customer_id"]})
            customers = {c["id"]: c for c in await conn.fetch(
                f"SELECT * FROM {cust.fullname} WHERE organization_id = $1 AND id = ANY($2::uuid[])", p.organization_id, ids)}
        return JSONResponse(record_page(rows, lambda r: {"id": str(r["customer_id"]),
                                                         "legalName": customers[r["customer_id"]]["legal_name"],
                                                         "rfc": customers[r["customer_id"]]["rfc"]}))

    async def join_asyncpg(request: Request) -> Response:
        p = await principal(request)
        if p is None:
            return JSONResponse({"errors": [{"message": "forbidden"}]}, status_code=403)
        async with holder["pool"].acquire() as conn:
            rows = await conn.fetch(
                f"SELECT i.id, i.voucher_type, i.status, i.series, i.folio, i.uuid, i.total, i.currency, i.created_at, "
                f"i.customer_id, c.legal_name, c.rfc FROM {inv.fullname} i LEFT JOIN {cust.fullname} c "
                "ON c.id = i.customer_id WHERE i.organization_id = $1 ORDER BY i.created_at DESC, i.id DESC LIMIT $2",
                p.organization_id, PAGE + 1)
        return JSONResponse(record_page(rows, lambda r: {"id": str(r["customer_id"]), "legalName": r["legal_name"],
                                                         "rfc": r["rfc"]}))

    async def lifespan(app):
        import asyncpg

        from shared.config import to_plain_url

        settings = get_settings()
        holder["rt"] = build_runtime("bench-floor", settings)
        holder["pool"] = await asyncpg.create_pool(to_plain_url(settings.database_url), min_size=1, max_size=4)
        yield
        await holder["pool"].close()
        await holder["rt"].close()

    from contextlib import asynccontextmanager
    return Starlette(routes=[Route("/two", two_statements, methods=["POST"]), Route("/join", one_join, methods=["POST"]),
                             Route("/two-asyncpg", two_asyncpg, methods=["POST"]),
                             Route("/join-asyncpg", join_asyncpg, methods=["POST"])],
                     lifespan=asynccontextmanager(lifespan))


if os.environ.get("BENCH_FLOOR_APP"):
    floor_app = _floor_app()


# --- the run -------------------------------------------------------------------------------------

class Server:
    def __init__(self, app: str, env: dict, profile_to: str | None = None):
        from shared.serving import uvicorn_command

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = uvicorn_command(app, host="127.0.0.1", port=self.port)
        if profile_to:  # BENCH_PROFILE=file: cProfile of this server, written when it stops
            command[1:1] = ["-m", "cProfile", "-o", profile_to]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def ready(self, client, path: str = "/health/live") -> None:
        for _ in range(300):
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-3000:])
            try:
                await client.get(self.url + path)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.url} did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # a clean exit (cProfile writes its file on the way out)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def warm(client, server: Server, path: str, body: dict, headers: dict, check) -> None:
    for _ in range(50):  # caches, JWKS, pool, compiled plans
        r = await client.post(server.url + path, json=body, headers=headers)
        assert r.status_code == 200, r.text[:500]
        check(r.json())


async def measure(client, cases: list[tuple], rounds: int = 10) -> list[float]:
    """CPU seconds per request of each case. The cases take turns in `rounds` slices so that the
    load of a shared machine falls on all of them alike."""
    totals = [0.0] * len(cases)
    per_round = max(1, N // rounds)
    for _ in range(rounds):
        for i, (server, path, body, headers) in enumerate(cases):
            before = process_cpu_seconds(server.proc.pid)
            for _ in range(per_round):
                r = await client.post(server.url + path, json=body, headers=headers)
                assert r.status_code == 200
            totals[i] += process_cpu_seconds(server.proc.pid) - before
    return [t / (per_round * rounds) for t in totals]


async def seed(db: str, redis_url: str) -> tuple[str, str]:
    """An organization with a customer and PAGE + 10 invoices; returns (email, password)."""
    from shared.config import load_settings
    from shared.runtime import build_runtime
    from subgraphs.auth import service as auth
    from subgraphs.auth.models import Membership, User
    from subgraphs.invoice import models as m
    from sqlalchemy import select

    settings = load_settings(database_url=db, redis_url=redis_url, app_env="test")
    rt = build_runtime("bench-seed", settings)
    email, password = f"bench-{uuid.uuid4().hex[:8]}@example.mx", "bench-password-123"
    await auth.ensure_demo(rt, email=email, password=password)
    async with rt.sessionmaker() as s, s.begin():
        org = (await s.execute(select(Membership.organization_id).join(User, User.id == Membership.user_id)
                               .where(User.email == email))).scalar_one()
        customer = m.Customer(organization_id=org, rfc="XIA190128J61", legal_name="XENON INDUSTRIAL ARTICLES",
                              tax_regime="601", postal_code="76343", cfdi_use="G03", email="compras@xenon.example.mx",
                              products=[])
        s.add(customer)
        await s.flush()
        for i in range(PAGE + 10):
            s.add(m.Invoice(organization_id=org, voucher_type="I", status="DRAFT", series="A", folio=i + 1,
                            customer_id=customer.id, customer_rfc=customer.rfc, customer_name=customer.legal_name,
                            currency="MXN", subtotal=Decimal("1000.00"), total_transferred=Decimal("160.00"),
                            total=Decimal("1160.00"), issues=[],
                            document={"customer_id": str(customer.id), "payment_form": "03", "payment_method": "PUE",
                                      "concepts": [{"product_code": "84111506", "quantity": "1", "unit_code": "E48",
                                                    "description": "Servicio de facturación", "unit_price": "1000.00",
                                                    "tax_object": "02", "taxes": [{"tax": "002", "factor_type": "Tasa",
                                                                                   "rate": "0.160000"}]}]}))
    await rt.close()
    return email, password


async def main() -> None:
    import httpx

    from shared import embedded
    from shared.migrations import upgrade

    admin = os.environ.get("DATABASE_URL") or embedded.ensure_postgres("pg-bench")
    dbname = f"facturacion_bench_dash_{os.getpid()}"
    db = embedded.create_database(admin, dbname)
    redis_proc, redis_url = None, os.environ.get("REDIS_URL")
    if not redis_url:
        redis_proc, redis_url = embedded.start_redis()
    servers: list[Server] = []
    try:
        upgrade("auth", db)
        upgrade("invoice", db)
        email, password = await seed(db, redis_url)
        env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis_url, "APP_ENV": "test", "PYTHONPATH": str(ROOT)}
        auth = Server("subgraphs.auth.app:app", env)
        servers.append(auth)
        env["AUTH_JWKS_URL"] = f"{auth.url}/.well-known/jwks.json"
        invoice = Server("subgraphs.invoice.app:app", env, os.environ.get("BENCH_PROFILE"))
        generic = Server("subgraphs.invoice.app:app", {**env, "GRAPHQL_COMPILED": "never"})
        floor = Server("bench.dashboard:floor_app", {**env, "BENCH_FLOOR_APP": "1"})
        servers += [invoice, generic, floor]
        async with httpx.AsyncClient(timeout=30) as client:
            await auth.ready(client)
            await invoice.ready(client)
            await generic.ready(client)
            await floor.ready(client, "/")
            login = await client.post(auth.url + "/graphql", json={
                "query": "mutation($i: LogInInput!) { logIn(input: $i) { tokens { accessToken } } }",
                "variables": {"i": {"email": email, "password": password}}})
            token = login.json()["data"]["logIn"]["tokens"]["accessToken"]
            headers = {"Authorization": f"Bearer {token}"}

            expected: dict = {}

            def same_as_floor(name):
                def check(data):
                    assert "errors" not in data, data
                    expected.setdefault(name, data)
                    assert len(data["data"]["invoices"]["edges"]) == PAGE
                return check

            body = {"query": SUBGRAPH_QUERY, "variables": {"first": PAGE}}
            cases = {"two": (floor, "/two-asyncpg", {}, headers), "join": (floor, "/join-asyncpg", {}, headers),
                     "two-sa": (floor, "/two", {}, headers), "join-sa": (floor, "/join", {}, headers),
                     "subgraph": (invoice, "/graphql", body, headers), "generic": (generic, "/graphql", body, headers)}
            for name, case in cases.items():
                await warm(client, *case, same_as_floor(name))
            two, join, two_sa, join_sa, sub, gen = await measure(client, list(cases.values()))
            # The floor builds the same JSON the subgraph answers (else the comparison is unfair).
            assert json.dumps(expected["two"], sort_keys=True) == json.dumps(expected["subgraph"], sort_keys=True), (
                expected["two"]["data"]["invoices"]["edges"][0], expected["subgraph"]["data"]["invoices"]["edges"][0])
        print(f"dashboard list: invoices(first: {PAGE}) with customer; {N} sequential requests per case, the cases "
              f"interleaved in 10 rounds; CPU of the server process (/proc user+system)")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{datetime.now(timezone.utc).isoformat(timespec='minutes')}")
        rows = [("floor: plain handler, asyncpg, the same 2 statements", two),
                ("plain handler, asyncpg, 1 join of the needed columns", join),
                ("plain handler, SQLAlchemy Core, the same 2 statements", two_sa),
                ("plain handler, SQLAlchemy Core, 1 join", join_sa),
                ("invoice subgraph, generic executor only", gen),
                ("invoice subgraph (target <= 5x the floor)", sub)]
        for label, cpu in rows:
            print(f"{label:55s} {cpu * 1e3:6.2f} ms CPU/request  {cpu / two:5.2f}x floor  {cpu / join:5.2f}x 1-join")
    finally:
        for s in servers:
            s.stop()
        embedded.drop_database(admin, dbname)
        if redis_proc:
            redis_proc.terminate()


if __name__ == "__main__":
    asyncio.run(main())
