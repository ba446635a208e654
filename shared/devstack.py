"""`make dev`: the whole stack on one machine, on embedded defaults when no URLs are given.

Starts, under `shared.supervisor` (a crashed process is restarted with backoff, the others keep
serving; Ctrl-C/SIGTERM stops them all): Redis (embedded, unless REDIS_URL), the mail catcher,
every subgraph under uvicorn, the worker and the gateway; waits for each health check, prints one
table of URLs and the demo credentials. PostgreSQL (embedded, unless DATABASE_URL) runs detached
and is stopped on exit.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx

from shared import embedded
from shared.registry import bridges, service, subgraphs as registered_subgraphs
from shared.serving import uvicorn_command

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEMO_EMAIL = "demo@facturacion.local"
DEMO_PASSWORD = "Demo-Factura-2026"


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"{name.upper()}_PORT", default))


def _subgraph_ports() -> dict[str, int]:
    return {s.name: _port(s.name, s.port) for s in registered_subgraphs()}


def _database_url() -> tuple[str, bool]:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], False
    return embedded.create_database(embedded.ensure_postgres("pg"), "facturacion", replace=False), True


def worker_processes() -> int:
    # At most 4 unless asked: each worker's pool may hold 20 Postgres connections, and the
    # embedded Postgres (like a default install) accepts 100 for the whole stack.
    return max(1, int(os.environ.get("WORKER_PROCESSES") or min(os.cpu_count() or 1, 4)))


def _wait_healthy(checks: dict[str, str], timeout: float = 90) -> dict[str, bool]:
    status = {name: False for name in checks}
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline and not all(status.values()):
            for name, url in checks.items():
                if status[name]:
                    continue
                try:
                    status[name] = client.get(url).status_code == 200
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    return status


def _seed_demo_issuer(env: dict[str, str], gateway_url: str) -> str:
    """Log in as the demo user through the gateway and give its organization the SAT test issuer,
    CSD and a customer, so a first invoice can be stamped right away."""
    import asyncio

    from shared.config import load_settings
    from shared.runtime import build_runtime

    r = httpx.post(gateway_url, json={"query": "mutation($i: LogInInput!) { logIn(input: $i) { tokens { organizationId } } }",
                                      "variables": {"i": {"email": env["DEMO_USER_EMAIL"], "password": env["DEMO_USER_PASSWORD"]}}},
                   timeout=10).json()
    org_id = r["data"]["logIn"]["tokens"]["organizationId"]

    async def seed() -> bool:
        from subgraphs.invoice.demo import ensure_demo_issuer

        rt = build_runtime("devstack", load_settings(database_url=env["DATABASE_URL"], redis_url=env["REDIS_URL"]))
        try:
            return await ensure_demo_issuer(rt, org_id)
        finally:
            await rt.close()

    return "creado" if asyncio.run(seed()) else "ya existía"


def main() -> int:
    from shared.supervisor import Supervisor

    database_url, embedded_pg = _database_url()
    env = dict(os.environ)
    env.setdefault("APP_ENV", "development")
    env["DATABASE_URL"] = database_url
    redis_port = None
    if not env.get("REDIS_URL"):
        redis_port = int(env.get("EMBEDDED_REDIS_PORT", "6390"))
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    mail_port, mail_http = int(env.get("SMTP_PORT", "1025")), int(env.get("MAILCATCHER_HTTP_PORT", "8025"))
    env.setdefault("SMTP_HOST", "127.0.0.1")
    env.setdefault("SMTP_PORT", str(mail_port))
    env.setdefault("DEMO_USER_EMAIL", DEMO_EMAIL)
    env.setdefault("DEMO_USER_PASSWORD", DEMO_PASSWORD)
    subgraphs = _subgraph_ports()
    gateway_port = int(env.get("GATEWAY_PORT", "4000"))
    env["AUTH_JWKS_URL"] = env.get("AUTH_JWKS_URL", f"http://127.0.0.1:{subgraphs['auth']}/.well-known/jwks.json")
    for name, port in subgraphs.items():
        env.setdefault(service(name).url_env, f"http://127.0.0.1:{port}/graphql")
    env.setdefault("INVOICE_SERVICE_URL", f"http://127.0.0.1:{subgraphs.get('invoice', 4002)}")
    env.setdefault("AUTH_SERVICE_URL", f"http://127.0.0.1:{subgraphs['auth']}")
    # The gateway and the subgraphs share it so per-client throttles see each client's address.
    env.setdefault("GATEWAY_SHARED_SECRET", secrets.token_urlsafe(32))

    print("Aplicando migraciones…", flush=True)
    from shared.migrations import upgrade, SERVICES

    for schema in SERVICES:
        upgrade(schema, database_url)

    manager = Supervisor()
    if redis_port:
        manager.add("redis", embedded.redis_command(redis_port, embedded.DATA / "redis"), env=env)
    if (ROOT / "subgraphs" / "notification" / "mailcatcher.py").exists():
        manager.add("mail", [PY, "-m", "subgraphs.notification.mailcatcher", "--port", str(mail_port),
                             "--http-port", str(mail_http), "--dir", str(embedded.DATA / "mail")], env=env)
    for name, port in subgraphs.items():
        manager.add(name, uvicorn_command(f"subgraphs.{name}.app:app", host="127.0.0.1", port=port, python=PY), env=env)
    # Worker processes: several are safe (one job per id, one relay per schema at a time, shared
    # consumer groups) and each is one event loop, so one per core: with stamping batched, two
    # workers on 2 cores stamp 175-205/s against ~120/s for one (bench/RESULTS-stamping.md).
    # WORKER_PROCESSES overrides.
    for i in range(worker_processes()):
        manager.add("worker" if i == 0 else f"worker-{i + 1}", [PY, "-m", "workers.main"], env=env)
    manager.add("gateway", [str(ROOT / "supergraph" / "gateway.sh")], env={**env, "GATEWAY_PORT": str(gateway_port)})
    bridge_ports = {b.name: _port(b.name, b.port) for b in bridges()}
    for b in bridges():  # clients of the gateway (the MCP bridge)
        manager.add(b.name, [PY, "-m", b.module], env={
            **env, "GATEWAY_URL": f"http://127.0.0.1:{gateway_port}/graphql", "MCP_BRIDGE_PORT": str(bridge_ports[b.name])})

    checks = {name: f"http://127.0.0.1:{port}/health/ready" for name, port in subgraphs.items()}
    checks["gateway"] = f"http://127.0.0.1:{gateway_port}/readiness"
    checks.update({name: f"http://127.0.0.1:{port}/health/live" for name, port in bridge_ports.items()})

    def announce():
        status = _wait_healthy(checks)
        demo_issuer = ""
        if status.get("gateway") and status.get("invoice"):
            try:
                demo_issuer = _seed_demo_issuer(env, f"http://127.0.0.1:{gateway_port}/graphql")
            except Exception as exc:  # noqa: BLE001 - the stack stays up; say what failed
                demo_issuer = f"no se pudo configurar: {exc!r}"
        rows = [("gateway (GraphQL)", f"http://127.0.0.1:{gateway_port}/graphql", status["gateway"])]
        rows += [(f"subgraph {n}", f"http://127.0.0.1:{p}/graphql", status[n]) for n, p in subgraphs.items()]
        rows += [(f"{n} (MCP para n8n)", f"http://127.0.0.1:{p}/mcp", status[n]) for n, p in bridge_ports.items()]
        if "mail" in manager.programs:
            rows.append(("correo (mail catcher)", f"http://127.0.0.1:{mail_http}/", True))
        rows.append(("postgres", "embedded (.data/pg)" if embedded_pg else "DATABASE_URL", True))
        rows.append(("redis", env["REDIS_URL"], True))
        width = max(len(r[0]) for r in rows)
        lines = ["", "=" * 78, "  Facturación — stack local"]
        lines += [f"  {'OK ' if ok else 'ERR'} {name.ljust(width)}  {url}" for name, url, ok in rows]
        lines += [f"  Usuario demo: {env['DEMO_USER_EMAIL']}  /  contraseña: {env['DEMO_USER_PASSWORD']}",
                  f"  Emisor demo EKU9003173C9 con CSD de prueba del SAT: {demo_issuer or 'no disponible'}",
                  "  Ctrl-C detiene todo.", "=" * 78, ""]
        print("\n".join(lines), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        return manager.run()  # until Ctrl-C / SIGTERM; crashed processes are restarted meanwhile
    finally:
        if embedded_pg:
            embedded.stop_postgres("pg")


if __name__ == "__main__":
    raise SystemExit(main())
