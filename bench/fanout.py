"""Fan-out of one live event to many subscribers, through the real stack, and its floor.

The stack as processes on loopback (auth + invoice subgraphs under uvicorn, Hive Gateway); N
graphql-transport-ws clients subscribe to `invoiceEvents` through the gateway (one WebSocket each,
spread over T access tokens of one user, as N browser tabs of T sessions would be); K events are
published on the organization's live channel exactly as the event relay publishes them. Clients
run in P processes (one asyncio loop each) and stamp every receipt with time.time() (one machine,
one clock). Per event: the spread from the first to the last subscriber that received it, and
the latency from publish to the last one; p50/p99 over the K events; missed = N*K - received.

Floor (same run, same client processes, same N and K): the N receivers subscribed directly to the
Redis channel, one connection each; what is left above it is the gateway and the subgraph.
CPU: CPU seconds the invoice process and the gateway spent during the K events, per event
(from /proc: robust to the noise of a shared machine, unlike wall clock). Memory: the invoice
process's RSS idle, with N subscriptions open, after the events, after they closed; two rounds,
so growth that does not settle shows.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/7 \\
        .venv/bin/python bench/fanout.py [--subscribers 1000] [--events 30] [--tokens 10] [--procs 2]
Without the URLs it uses the embedded servers. `make bench` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import group_cpu_seconds  # noqa: E402

QUERY = "subscription Fanout { invoiceEvents { invoiceId status uuid at } }"
WARM = "ffffffff"  # invoiceId prefix of warm-up events (not measured)
PASSWORD = "bench-password-123"


def event(n: int, warm: bool = False) -> dict:
    return {"kind": "invoice_status", "invoiceId": f"{WARM if warm else '00000000'}-0000-0000-0000-{n:012d}",
            "status": "STAMPED", "uuid": str(uuid.UUID(int=n)), "code": None, "message": None,
            "at": "2026-01-01T00:00:00+00:00"}


# --- the clients (child processes) ---------------------------------------------------------------

def client_main(conn, mode: str, target: str, tokens: list[str], first: int, count: int) -> None:
    """Open `count` subscribers (mode "gateway": WebSockets to `target`; "redis": Redis pub/sub
    connections to channel `target`), tell the parent when every one received a warm-up event,
    then record (subscriber, event number, time.time()) until the parent says stop."""
    asyncio.run(_client(conn, mode, target, tokens, first, count))


async def _client(conn, mode: str, target: str, tokens: list[str], first: int, count: int) -> None:
    received: list[tuple[int, int, float]] = []
    warm: set[int] = set()
    failures: list[str] = []
    stop = asyncio.Event()

    def record(i: int, invoice_id: str, t: float) -> None:
        if invoice_id.startswith(WARM):
            warm.add(i)
        else:
            received.append((i, int(invoice_id.rsplit("-", 1)[1]), t))

    async def ws_subscriber(i: int) -> None:
        import websockets

        token = tokens[i % len(tokens)]
        try:
            async with websockets.connect(target, subprotocols=["graphql-transport-ws"], max_queue=None,
                                          open_timeout=60, ping_interval=None) as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
                ack = json.loads(await ws.recv())
                if ack.get("type") != "connection_ack":
                    raise RuntimeError(f"no ack: {ack}")
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}}))
                async for raw in ws:
                    t = time.time()
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    if kind == "next":
                        record(i, msg["payload"]["data"]["invoiceEvents"]["invoiceId"], t)
                    elif kind == "ping":
                        await ws.send('{"type":"pong"}')
                    elif kind in ("error", "complete"):
                        raise RuntimeError(f"subscription ended: {msg}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted and reported, the others go on
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    async def redis_subscriber(i: int) -> None:
        from redis.asyncio import Redis

        redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(target)
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if msg is not None:
                    t = time.time()
                    record(i, json.loads(msg["data"])["invoiceId"], t)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            await pubsub.aclose()
            await redis.aclose()

    run = ws_subscriber if mode == "gateway" else redis_subscriber
    tasks = []
    for i in range(first, first + count):
        tasks.append(asyncio.create_task(run(i)))
        if len(tasks) % 50 == 0:
            await asyncio.sleep(0.05)  # do not stampede the gateway's accept queue

    loop = asyncio.get_running_loop()
    reader = asyncio.Event()
    loop.add_reader(conn.fileno(), reader.set)

    async def parent_says() -> str:
        while not conn.poll():
            reader.clear()
            await reader.wait()
        return conn.recv()

    conn.send(("subscribing", count))
    while len(warm) < count and len(failures) == 0:
        await asyncio.sleep(0.05)
    conn.send(("ready", len(warm), failures[:3]))
    await parent_says()  # "stop"
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("done", received, failures[:3], len(failures)))


# --- the parent -----------------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))] if values else float("nan")


async def run_round(mode: str, target: str, tokens: list[str], args, publish, pids: dict[str, int],
                    on_open=None) -> dict:
    """One measured round: open the subscribers, warm up, publish K events, collect."""
    ctx = mp.get_context("spawn")
    per = [args.subscribers // args.procs + (1 if p < args.subscribers % args.procs else 0) for p in range(args.procs)]
    children, first = [], 0
    for count in per:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=client_main, args=(child_end, mode, target, tokens, first, count), daemon=True)
        proc.start()
        children.append((proc, parent_end))
        first += count
    loop = asyncio.get_running_loop()

    async def recv(conn, timeout: float):
        return await asyncio.wait_for(loop.run_in_executor(None, conn.recv), timeout)

    try:
        for _, conn in children:
            await recv(conn, 120)  # subscribing
        pending = {id(c): c for _, c in children}
        n, deadline = 0, time.monotonic() + 180
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError("subscribers did not all receive a warm-up event")
            await publish(event(n, warm=True))
            n += 1
            await asyncio.sleep(0.5)
            for key, conn in list(pending.items()):
                if conn.poll():
                    _, warmed, failures = conn.recv()
                    if failures:
                        raise RuntimeError(f"subscribers failed: {failures}")
                    del pending[key]
        await asyncio.sleep(1.0)  # the last warm-ups drain
        stop_profile = on_open() if on_open else None
        cpu0 = {name: group_cpu_seconds(pid) for name, pid in pids.items()}
        published: dict[int, float] = {}
        for k in range(args.events):
            published[k] = time.time()
            await publish(event(k))
            await asyncio.sleep(args.interval)
        await asyncio.sleep(2.0)
        cpu = {name: (group_cpu_seconds(pid) - cpu0[name]) / args.events for name, pid in pids.items()}
        if callable(stop_profile):
            stop_profile()
        received, failures, failed = [], [], 0
        for _, conn in children:
            conn.send("stop")
        for _, conn in children:
            _, got, fails, count = await recv(conn, 60)
            received += got
            failures += fails
            failed += count
    finally:
        for proc, _ in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    by_event: dict[int, list[float]] = {k: [] for k in range(args.events)}
    seen = set()
    for i, k, t in received:
        if k in by_event and (i, k) not in seen:
            seen.add((i, k))
            by_event[k].append(t)
    spreads = [(max(ts) - min(ts)) * 1000 for ts in by_event.values() if ts]
    last = [(max(ts) - published[k]) * 1000 for k, ts in by_event.items() if ts]
    return {"spread_p50": pct(spreads, 50), "spread_p99": pct(spreads, 99), "last_p50": pct(last, 50),
            "last_p99": pct(last, 99), "missed": args.subscribers * args.events - len(seen),
            "failed": failed, "failures": failures, "cpu": cpu}


def start_stack(db: str, redis_url: str, log_dir: Path, subscribers: int, profile: str | None = None,
                gateway_workers: int = 1):
    from shared.embedded import free_port
    from tests.stack import Stack

    ports = {"auth": free_port(), "invoice": free_port()}
    gateway_port = free_port()
    limit = str(max(subscribers * 2, 1000))
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis_url, "APP_ENV": "test",
           "AUTH_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
           "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}",
           "INVOICE_SERVICE_URL": f"http://127.0.0.1:{ports['invoice']}",
           "GATEWAY_PORT": str(gateway_port), "GATEWAY_HOST": "127.0.0.1", "RATE_LIMIT_DISABLED": "true",
           # The bench's own limits: one user opens every subscription (defaults stay as they are).
           "SUBSCRIPTIONS_MAX_PER_USER": limit, "SUBSCRIPTIONS_MAX_PER_ORGANIZATION": limit,
           "LOGIN_MAX_FAILURES_PER_IP": "1000"}
    for s, p in ports.items():
        env[f"{s.upper()}_URL"] = f"http://127.0.0.1:{p}/graphql"
    stack = Stack(env, log_dir)
    try:
        _start(stack, ports, gateway_port, profile, gateway_workers)
    except BaseException:
        stack.stop_all()  # whatever did start
        raise
    return stack


def _start(stack, ports: dict[str, int], gateway_port: int, profile: str | None, gateway_workers: int) -> None:
    for name, port in ports.items():
        stack.start(name, stack.subgraph_argv(name, port), f"http://127.0.0.1:{port}/health/ready",
                    {"LOG_LEVEL": "WARNING"})
        stack.urls[name] = f"http://127.0.0.1:{port}"
    cmd = [str(ROOT / "supergraph" / "gateway.sh")]
    if profile:  # gateway.sh's command with node's CPU profiler (written when the gateway exits)
        sg = ROOT / "supergraph"
        cmd = ["node", "--cpu-prof", f"--cpu-prof-dir={profile}", str(sg / "node_modules/@graphql-hive/gateway/dist/bin.js"),
               "supergraph", str(ROOT / "schema/supergraph.graphql"), "--config-path", str(sg / "gateway.config.mjs"),
               "--host", "127.0.0.1", "--port", str(gateway_port)]
    stack.start("gateway", cmd, f"http://127.0.0.1:{gateway_port}/readiness",
                {"LOG_LEVEL": "warn", "FORK": str(gateway_workers)})
    stack.urls["gateway"] = f"http://127.0.0.1:{gateway_port}"


def profile(pid: int, out: str, r: int):
    """py-spy on the invoice process during the events (a developer's aid: `pip install py-spy`)."""
    import signal
    import subprocess

    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / f"invoice-round{r + 1}.txt"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
                             "--nonblocking", "-r", "200", "-o", str(path)], stdout=subprocess.DEVNULL)

    def stop():
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        print(f"profile: {path}")
    return stop


CATALOGS = ["ClaveProdServ", "ClaveUnidad", "RegimenFiscal", "UsoCFDI", "FormaPago", "MetodoPago", "Moneda",
            "CodigoPostal", "ObjetoImp", "Exportacion"]


async def other_loads(gateway: str, token: str, documents: int, rss=None) -> None:
    """What else fills the invoice process's memory: the SAT catalogs and their search indexes
    (loaded once, on the first catalog search or CFDI validation, as stamping does), and
    `documents` distinct list-query documents (a dashboard's variety; parser and validation caches
    keep 512 each)."""
    import httpx

    async with httpx.AsyncClient(base_url=gateway, timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        for name in CATALOGS:
            r = await http.post("/graphql", json={"query": "query($n: String!) { satCatalog(name: $n, search: \"servicio\") { code } }",
                                                  "variables": {"n": name}})
            assert "errors" not in r.json(), r.text
        if rss is not None:
            rss()
        for i in range(documents):
            r = await http.post("/graphql", json={"query": f"query List{i} {{ invoices(first: {1 + i % 50}) {{ nodes {{ id status }} "
                                                           f"pageInfo {{ hasNextPage }} }} invoiceDashboard(year: {2000 + i % 30}) {{ count }} }}"})
            assert "errors" not in r.json(), r.text


async def log_in(gateway: str, email: str, n: int) -> tuple[list[str], str]:
    import httpx

    tokens = []
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        for _ in range(n):
            r = await http.post("/graphql", json={
                "query": "mutation($i: LogInInput!) { logIn(input: $i) { tokens { accessToken } userErrors { code } } }",
                "variables": {"i": {"email": email, "password": PASSWORD}}})
            body = r.json()
            assert "data" in body, body
            tokens.append(body["data"]["logIn"]["tokens"]["accessToken"])
    part = tokens[0].split(".")[1]
    import base64

    org = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["org"]
    return tokens, org


async def main(args) -> None:
    from redis.asyncio import Redis

    from shared import embedded
    from shared.bus import org_channel, publish_live
    from shared.config import load_settings
    from shared.runtime import build_runtime

    admin = os.environ.get("DATABASE_URL") or embedded.ensure_postgres("pg-bench")
    redis_proc, redis_url = None, os.environ.get("REDIS_URL")
    if not redis_url:
        redis_proc, redis_url = embedded.start_redis()
    os.environ["BENCH_REDIS_URL"] = redis_url
    log_dir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    with embedded.migrated_database(admin, f"facturacion_bench_fanout_{os.getpid()}") as db:
        from subgraphs.auth import service as auth_service

        email = f"fanout-{uuid.uuid4().hex[:8]}@example.mx"
        rt = build_runtime("auth", load_settings(database_url=db, redis_url=redis_url, app_env="test"))
        await auth_service.ensure_demo(rt, email=email, password=PASSWORD)
        await rt.close()
        stack = start_stack(db, redis_url, log_dir, args.subscribers, args.profile, args.gateway_workers)
        redis = Redis.from_url(redis_url)
        try:
            tokens, org = await log_in(stack.urls["gateway"], email, args.tokens)
            channel = org_channel(org)

            async def publish(message: dict) -> None:
                await publish_live(redis, channel, message)

            pids = {"invoice": stack.procs["invoice"].pid, "gateway": stack.procs["gateway"].pid}
            inv = pids["invoice"]
            ws_url = stack.urls["gateway"].replace("http", "ws", 1) + "/graphql"
            rss = {"idle": rss_mib(inv)}
            if args.documents:
                await other_loads(stack.urls["gateway"], tokens[0], args.documents,
                                  lambda: rss.__setitem__("SAT catalogs loaded", rss_mib(inv)))
                rss[f"{args.documents} list documents"] = rss_mib(inv)
            rounds = []
            for r in range(args.rounds):
                opened: dict = {}

                def on_open():
                    opened["rss"] = rss_mib(inv)
                    return profile(inv, args.profile, r) if args.profile else None

                res = await run_round("gateway", ws_url, tokens, args, publish, pids, on_open=on_open)
                rss[f"round {r + 1}: {args.subscribers} open"] = opened.get("rss", float("nan"))
                await asyncio.sleep(3.0)  # the gateway closes its upstream subscriptions
                rss[f"round {r + 1}: closed"] = rss_mib(inv)
                rounds.append(res)
            if args.documents:  # the same loads again: bounded caches do not grow any more
                await other_loads(stack.urls["gateway"], tokens[0], args.documents)
                rss["loads again"] = rss_mib(inv)
            floor = await run_round("redis", channel, tokens, args, publish, {})
        finally:
            await redis.aclose()
            stack.stop_all()
    if redis_proc:
        redis_proc.terminate()

    gw = min(rounds, key=lambda r: r["spread_p99"])
    print(f"fan-out: {args.subscribers} subscribers (graphql-transport-ws through Hive Gateway), {args.events} events "
          f"{args.interval * 1000:.0f} ms apart, {args.tokens} access tokens, {args.procs} client processes, "
          f"{args.gateway_workers} gateway worker(s)")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'':34}{'spread p50':>11}{'spread p99':>11}{'last p50':>10}{'last p99':>10}{'missed':>8}")
    for r, res in enumerate(rounds):
        print(f"{f'gateway -> invoice, round {r + 1}':34}{res['spread_p50']:9.1f}ms{res['spread_p99']:9.1f}ms"
              f"{res['last_p50']:8.1f}ms{res['last_p99']:8.1f}ms{res['missed']:8d}")
    print(f"{'floor: Redis channel directly':34}{floor['spread_p50']:9.1f}ms{floor['spread_p99']:9.1f}ms"
          f"{floor['last_p50']:8.1f}ms{floor['last_p99']:8.1f}ms{floor['missed']:8d}")
    print(f"ratio to floor (spread p99, best round): {gw['spread_p99'] / max(floor['spread_p99'], 1e-9):.1f}x")
    for r, res in enumerate(rounds):
        print(f"CPU per event, round {r + 1}: invoice {res['cpu']['invoice'] * 1000:.1f} ms, "
              f"gateway {res['cpu']['gateway'] * 1000:.1f} ms "
              f"({res['cpu']['invoice'] * 1e6 / args.subscribers:.0f} + {res['cpu']['gateway'] * 1e6 / args.subscribers:.0f}"
              f" µs per subscriber)")
    print("invoice RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items())
          + f"; last/idle {list(rss.values())[-1] / rss['idle']:.2f}x")
    failures = [f for res in [*rounds, floor] for f in res["failures"]]
    if failures or any(res["missed"] for res in [*rounds, floor]):
        print(f"FAILED: missed events or failed subscribers: {failures[:3]} (logs in {log_dir})")
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=int(os.environ.get("BENCH_SUBSCRIBERS", 1000)))
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", 30)))
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between events")
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--documents", type=int, default=1000,
                        help="distinct list-query documents sent before the fan-out (memory phase; 0: none)")
    parser.add_argument("--gateway-workers", type=int, default=1, help="Hive Gateway --fork (its FORK variable)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the invoice process during the events into DIR")
    asyncio.run(main(parser.parse_args()))
