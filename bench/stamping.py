"""Stamping end to end, and createInvoice throughput, through the real stack.

Starts the subgraphs (uvicorn), the worker process(es) and the gateway as real processes on
loopback (tests/stack.py), with the embedded sandbox PAC and a real SMTP listener; signs up an
issuer through the gateway; then

1. creates N invoices through the gateway at concurrency C (createInvoice/s, CPU per creation);
2. fires `stampInvoice` for all N at once (with `--batch B`: `stampInvoices`, B invoices per
   request, every request at once) and waits until every one is STAMPED (polling
   Postgres from here, so the wait costs the stack nothing), every stamped invoice is in a sent
   status e-mail to its creator (its own, or a digest of the invoices stamped together) and no
   e-mail is left to send; prints how many e-mails that took;
3. prints stamps/s, CPU milliseconds per stamp of each process (user + system, from /proc, every
   process of its group: node included for the gateway) with the idle floor of the same run
   subtracted, and duplicates: invoices stamped twice, timbres the PAC issued beyond one per
   invoice, STAMPED transitions beyond one per invoice (all must be 0).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/6 \\
        .venv/bin/python bench/stamping.py --invoices 300 --workers 2

The Redis database given is flushed (the sandbox PAC's timbres live there and are counted). Without
the URLs it uses the embedded servers. Postgres' and Redis' own CPU are counted machine-wide (rows
in parentheses): like the wall-clock figures, they are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.measure import group_cpu_seconds, servers_cpu_seconds  # noqa: E402
from shared import embedded  # noqa: E402
from shared.registry import subgraphs  # noqa: E402

class Meter:
    def __init__(self, stack):
        self.stack = stack

    def snapshot(self) -> dict[str, float]:
        # The servers (Postgres, Redis) machine-wide, marked so: on a quiet machine they are ours.
        servers = {f"({name})": cpu for name, cpu in servers_cpu_seconds().items()}
        return {**{name: group_cpu_seconds(p.pid) for name, p in self.stack.procs.items()}, **servers}

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b[k] - a[k] for k in a}


def _table(title: str, cpu: dict[str, float], floor: dict[str, float], seconds: float, n: int) -> list[str]:
    """CPU ms per operation per process: raw, and with the idle floor (per second) subtracted."""
    lines = [f"{title}: CPU ms per operation (raw / minus idle floor)"]
    tot_raw = tot_net = 0.0
    for name in sorted(cpu):
        raw = cpu[name] * 1000 / n
        net = max(0.0, cpu[name] - floor.get(name, 0.0) * seconds) * 1000 / n
        tot_raw, tot_net = tot_raw + raw, tot_net + net
        lines.append(f"  {name:<14} {raw:7.2f} / {net:7.2f}")
    lines.append(f"  {'TOTAL':<14} {tot_raw:7.2f} / {tot_net:7.2f}")
    return lines


_counting: dict[str, object] = {}
_polls: dict[str, int] = {}  # the bench's own statements per table (counted in --pg-stats: listed so)


class PgStats:
    """--pg-stats: what the bench database's Postgres did, from its statistics views (no
    server setting needed): transactions committed / rolled back, and per table rows inserted,
    updated (HOT among them), deleted and index / sequential scans; plus the CPU of the backends
    connected to the bench database (per pid from /proc: unlike the machine-wide `(postgres)` row,
    not polluted by other databases on a shared server; backends that ended in between are lost,
    pools keep theirs). Backends flush their counters when they go idle, but at most once a
    second: one that flushed less than a second before waits 10 s (PGSTAT_IDLE_INTERVAL). So
    snapshots wait 11 s, and the activity of such a wait (relay sweeps, crons), measured by a third
    snapshot, is subtracted."""

    FLUSH_WAIT = 11.0

    TABLE_COLUMNS = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del", "idx_scan", "seq_scan")

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    async def snapshot(self) -> dict:
        import asyncpg

        from bench.measure import database_activity
        from shared.config import to_plain_url

        await asyncio.sleep(self.FLUSH_WAIT)
        conn = await asyncpg.connect(to_plain_url(self.db_url))
        try:
            cpu, commit, rollback = await database_activity(conn)
            tables = {f"{r['schemaname']}.{r['relname']}": {c: r[c] or 0 for c in self.TABLE_COLUMNS}
                      for r in await conn.fetch(f"SELECT schemaname, relname, {', '.join(self.TABLE_COLUMNS)} "
                                                "FROM pg_stat_user_tables")}
        finally:
            await conn.close()
        return {"xact_commit": commit, "xact_rollback": rollback, "tables": tables,
                "cpu": cpu, "polls": dict(_polls)}

    @staticmethod
    def _delta(a: dict, b: dict) -> dict:
        own = 4  # the earlier snapshot's own statements (the later one's are not flushed yet)
        polls = {t: b["polls"].get(t, 0) - a["polls"].get(t, 0) for t in b["polls"]}
        empty = dict.fromkeys(PgStats.TABLE_COLUMNS, 0)
        return {"commit": b["xact_commit"] - a["xact_commit"] - own - sum(polls.values()),
                "rollback": b["xact_rollback"] - a["xact_rollback"], "polls": polls,
                "cpu": sum(cpu - a["cpu"].get(pid, 0.0) for pid, cpu in b["cpu"].items()),
                "tables": {t: {c: v[c] - a["tables"].get(t, empty)[c] for c in PgStats.TABLE_COLUMNS}
                           for t, v in b["tables"].items()}}

    @staticmethod
    def table(title: str, a: dict, b: dict, idle: dict, n: int) -> list[str]:
        """Per operation: from a to b (the run and one wait) minus from b to idle (one wait)."""
        run, tail = PgStats._delta(a, b), PgStats._delta(b, idle)
        commits, rollbacks = run["commit"] - tail["commit"], run["rollback"] - tail["rollback"]
        backends, polls = run["cpu"] - tail["cpu"], run["polls"]
        lines = [f"{title}: Postgres per operation (pg_stat_*, minus an idle wait's; the bench's own polls "
                 f"subtracted from commits, listed under 'polls')",
                 f"  transactions: commit {commits / n:.2f}, rollback {rollbacks / n:.2f}; CPU of the bench "
                 f"database's backends {backends * 1000 / n:.2f} ms ({len(b['cpu'])} backends); idle wait: "
                 f"{tail['commit']} commits, {tail['rollback']} rollbacks, {tail['cpu'] * 1000:.0f} ms CPU",
                 f"  {'table':<38} {'ins':>6} {'upd':>6} {'(hot)':>6} {'del':>6} {'idxscan':>8} {'seqscan':>8} polls"]
        for name in sorted(b["tables"]):
            d = {c: (run["tables"][name][c] - tail["tables"].get(name, {}).get(c, 0)) / n
                 for c in PgStats.TABLE_COLUMNS}
            if not any(d.values()):
                continue
            lines.append(f"  {name:<38} {d['n_tup_ins']:6.2f} {d['n_tup_upd']:6.2f} {d['n_tup_hot_upd']:6.2f} "
                         f"{d['n_tup_del']:6.2f} {d['idx_scan']:8.2f} {d['seq_scan']:8.2f} "
                         f"{polls.get(name, 0) / n:.2f}")
        return lines


async def _db_count(db_url: str, sql: str, *args) -> int:
    """One count from the bench's own connection, kept open: a connection per poll (several a
    second) cost Postgres a backend start each, and that CPU was counted as the stack's."""
    import asyncpg

    from shared.config import to_plain_url

    conn = _counting.get(db_url)
    if conn is None:
        conn = _counting[db_url] = await asyncpg.connect(to_plain_url(db_url))
    table = sql.split(" FROM ", 1)[1].split()[0]
    _polls[table] = _polls.get(table, 0) + 1
    return int(await conn.fetchval(sql, *args))


_STATUS_TEMPLATES = "('invoice_status', 'invoice_status_digest')"
# Events whose creator has been told by a sent status e-mail (a digest covers several). The bench's
# database is new and only stamps send status mail in it: these are the stamped invoices'.
_COVERED = f"""
SELECT count(DISTINCT e) FROM notification.email_messages m, unnest(m.event_ids) AS e
WHERE m.status = 'sent' AND m.template IN {_STATUS_TEMPLATES}"""


async def run(args) -> None:
    from tests.conftest import unique_email
    from tests.e2e.conftest import GATEWAY_SECRET
    from tests.gateway_flows import STAMP, STAMP_MANY, new_issuer
    from tests.graphql_client import GraphQLClient
    from tests.invoice.conftest import concept
    from tests.stack import Mailbox, Stack

    admin = os.environ.get("DATABASE_URL") or embedded.ensure_postgres("pg-bench")
    db = embedded.create_database(admin, args.db_name)  # dropped and recreated: one per engineer on a shared server
    from shared.migrations import SERVICES, upgrade

    for schema in SERVICES:
        upgrade(schema, db)
    redis_proc = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_proc, redis_url = embedded.start_redis()
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    await redis.flushdb()

    mailbox = Mailbox()
    names = [s.name for s in subgraphs()]
    ports = {s: embedded.free_port() for s in names}
    gateway_port = embedded.free_port()
    env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis_url, "APP_ENV": "test", "LOG_LEVEL": "WARNING",
           "AUTH_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
           "INVOICE_SERVICE_URL": f"http://127.0.0.1:{ports['invoice']}",
           "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}",
           "GATEWAY_PORT": str(gateway_port), "GATEWAY_HOST": "127.0.0.1", "GATEWAY_SHARED_SECRET": GATEWAY_SECRET,
           "LOGIN_MAX_FAILURES_PER_IP": "1000", "RATE_LIMIT_DISABLED": "true", "AUTHZ_CACHE_SECONDS": "0",
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port)}
    for s, p in ports.items():
        env[f"{s.upper()}_URL"] = f"http://127.0.0.1:{p}/graphql"
    log_dir = Path(args.log_dir or "/tmp") / f"bench-stamping-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(env, log_dir)
    out: list[str] = []
    try:
        def profiled(name: str, argv: list[str]) -> list[str]:
            if not args.profile:
                return argv
            spy = str(Path(sys.executable).with_name("py-spy"))
            return [spy, "record", "-r", "250", "-f", "raw", "-o", str(Path(args.profile) / f"{name}.txt"), "--", *argv]

        for name, port in ports.items():
            stack.start(name, profiled(name, stack.subgraph_argv(name, port)), f"http://127.0.0.1:{port}/health/ready")
        for i in range(args.workers):
            stack.start(f"worker{i + 1}", profiled(f"worker{i + 1}", [sys.executable, "-m", "workers.main"]), None)
        stack.start("gateway", [str(Path(__file__).resolve().parents[1] / "supergraph" / "gateway.sh")],
                    f"http://127.0.0.1:{gateway_port}/readiness", env={"LOG_LEVEL": "warn"})
        # Idle connections are dropped after 2 s: Node closes a keep-alive connection idle for 5 s
        # (keepAliveTimeout), httpx keeps one 5 s by default, and a request sent on a connection the
        # gateway is closing at that moment fails with ReadError (seen in 3 of ~16 runs).
        limits = httpx.Limits(max_connections=args.invoices + 10, max_keepalive_connections=args.invoices + 10,
                              keepalive_expiry=2.0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=300, limits=limits) as http:
            gw = GraphQLClient(http)
            token, customer_id = await new_issuer(gw, mailbox, customer_email=unique_email("cliente"))
            meter = Meter(stack)

            # --- createInvoice at concurrency C ---
            create = """mutation($i: InvoiceInput!) { createInvoice(input: $i) { invoice { id folio }
                userErrors { code field message } } }"""
            data = {"customerId": customer_id, "paymentForm": "03", "paymentMethod": "PUE", "concepts": [concept()]}
            for _ in range(5):  # warm-up (connections, caches)
                await gw.ok(create, {"i": data}, token=token)
            queue = list(range(args.invoices))
            ids: list[str] = []
            folios: list[int] = []

            async def creator():
                while queue:
                    queue.pop()
                    r = (await gw.ok(create, {"i": data}, token=token))["createInvoice"]
                    assert r["userErrors"] == [], r
                    ids.append(r["invoice"]["id"])
                    folios.append(r["invoice"]["folio"])

            await asyncio.sleep(2)
            floor_a, t0 = meter.snapshot(), time.monotonic()
            await asyncio.sleep(args.floor_seconds)
            floor_s = time.monotonic() - t0
            floor = {k: v / floor_s for k, v in Meter.delta(floor_a, meter.snapshot()).items()}
            a, t0 = meter.snapshot(), time.monotonic()
            await asyncio.gather(*[creator() for _ in range(args.concurrency)])
            create_s = time.monotonic() - t0
            create_cpu = Meter.delta(a, meter.snapshot())
            assert len(set(folios)) == len(folios), "duplicate folios"
            out.append(f"createInvoice: {len(ids)} at concurrency {args.concurrency} in {create_s:.2f} s = "
                       f"{len(ids) / create_s:.1f}/s; duplicate folios: {len(folios) - len(set(folios))}")
            out += _table("createInvoice", create_cpu, floor, create_s, len(ids))

            # --- stampInvoice for all at once (or stampInvoices, a chunk of --batch per request) ---
            await asyncio.sleep(3)  # let the relay and consumers settle after the creations
            workers = [p for name, p in stack.procs.items() if name.startswith("worker")]
            if args.backlog:  # the workers stopped while the requests are accepted: they find a backlog
                import signal

                for p in workers:
                    os.killpg(os.getpgid(p.pid), signal.SIGSTOP)
            pg_stats = PgStats(db) if args.pg_stats else None
            pg_a = await pg_stats.snapshot() if pg_stats else None
            a, t0 = meter.snapshot(), time.monotonic()
            if args.batch:
                chunks = [ids[n:n + args.batch] for n in range(0, len(ids), args.batch)]
                results = await asyncio.gather(*[gw.ok(STAMP_MANY, {"items": [{"id": i, "idempotencyKey": f"bench-{i}"}
                                                                               for i in chunk]}, token=token)
                                                 for chunk in chunks])
                bad = [r for r in results if r["stampInvoices"]["userErrors"]] + [
                    x for r in results for x in r["stampInvoices"]["results"] if x["userErrors"]]
                mode = f"stampInvoices x{len(chunks)} (chunks of {args.batch})"
            else:
                results = await asyncio.gather(*[gw.ok(STAMP, {"id": i, "k": f"bench-{i}"}, token=token) for i in ids])
                bad = [r for r in results if r["stampInvoice"]["userErrors"]]
                mode = f"stampInvoice x{len(ids)}"
            accepted_s = time.monotonic() - t0
            requests_cpu = Meter.delta(a, meter.snapshot())
            if args.backlog:
                a, t0 = meter.snapshot(), time.monotonic()
                for p in workers:
                    os.killpg(os.getpgid(p.pid), signal.SIGCONT)
            assert not bad, bad[:3]
            id_list = [uuid.UUID(i) for i in ids]
            stamped = 0
            while stamped < len(ids):
                await asyncio.sleep(0.2)
                stamped = await _db_count(db, "SELECT count(*) FROM invoice.invoices WHERE id = ANY($1) AND "
                                              "status = 'STAMPED'", id_list)
                failed = await _db_count(db, "SELECT count(*) FROM invoice.invoices WHERE id = ANY($1) AND "
                                             "status = 'STAMP_FAILED'", id_list)
                assert failed == 0, f"{failed} STAMP_FAILED"
                assert time.monotonic() - t0 < args.timeout, f"only {stamped} stamped after {args.timeout}s"
            stamp_s = time.monotonic() - t0
            # The worker's share is done once every stamped invoice is in a status e-mail sent (its
            # own or a digest of several) and no e-mail is left to send (the customers' CFDI mails).
            while True:
                covered = await _db_count(db, _COVERED)
                queued = await _db_count(db, "SELECT count(*) FROM notification.email_messages WHERE status = 'queued'")
                if covered >= len(ids) and queued == 0:
                    break
                assert time.monotonic() - t0 < args.timeout, f"mail not drained: {covered} covered, {queued} queued"
                await asyncio.sleep(0.2)
            drained_s = time.monotonic() - t0
            stamp_cpu = Meter.delta(a, meter.snapshot())
            pg_b = await pg_stats.snapshot() if pg_stats else None

            # --- exactly once ---
            distinct = await _db_count(db, "SELECT count(DISTINCT uuid) FROM invoice.invoices WHERE id = ANY($1)", id_list)
            transitions = await _db_count(db, "SELECT count(*) FROM invoice.invoice_events WHERE invoice_id = ANY($1) "
                                              "AND to_status = 'STAMPED'", id_list)
            timbres = len([k async for k in redis.scan_iter("pac:sandbox:cfdi:*")])
            status_sent = await _db_count(db, "SELECT count(*) FROM notification.email_messages WHERE status = 'sent' "
                                              f"AND template IN {_STATUS_TEMPLATES}")
            digests = await _db_count(db, "SELECT count(*) FROM notification.email_messages WHERE status = 'sent' "
                                          "AND template = 'invoice_status_digest'")
            to_customers = await _db_count(db, "SELECT count(*) FROM notification.email_messages WHERE status = 'sent' "
                                               "AND template = 'cfdi_to_customer'")
            if args.backlog:
                out.append("--backlog: workers stopped until every request was accepted; times and the end-to-end "
                           "table from their resumption (the requests' CPU is not in it)")
            out.append(f"{mode} fired at once: accepted in {accepted_s:.2f} s, all STAMPED in "
                       f"{stamp_s:.2f} s = {len(ids) / stamp_s:.1f} stamps/s; e-mails sent by {drained_s:.2f} s")
            out.append(f"duplicates: invoices sharing a UUID {len(ids) - distinct}, PAC timbres beyond one per "
                       f"invoice {timbres - len(ids)}, STAMPED transitions beyond one {transitions - len(ids)}; "
                       f"invoices in a sent status e-mail {covered}")
            out.append(f"e-mails sent for the stamps: {status_sent + to_customers} = {status_sent} status e-mails to "
                       f"the creator ({digests} digests, {status_sent - digests} single) + {to_customers} CFDIs to customers")
            out += _table(f"{mode.split()[0]} requests, per invoice (until all accepted; workers already busy)",
                          requests_cpu, floor, accepted_s, len(ids))
            out += _table("stamp end to end (request, worker, mail)", stamp_cpu, floor, drained_s, len(ids))
            if pg_stats:
                out += PgStats.table("stamp end to end", pg_a, pg_b, await pg_stats.snapshot(), len(ids))
            out.append(f"idle floor CPU ms/s: " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(floor.items())))
            out.append(f"workers: {args.workers}; cores: {os.cpu_count()}; logs: {log_dir}")
    finally:
        if args.backlog:  # a stopped process would never see the SIGTERM that ends the stack
            import signal

            for name, proc in stack.procs.items():
                if name.startswith("worker") and proc.poll() is None:
                    os.killpg(os.getpgid(proc.pid), signal.SIGCONT)
        if args.profile:  # py-spy writes its file when interrupted (SIGTERM to the group would lose it)
            import signal

            for proc in stack.procs.values():
                if Path(proc.args[0]).name == "py-spy":
                    proc.send_signal(signal.SIGINT)
            for proc in stack.procs.values():
                if Path(proc.args[0]).name == "py-spy":
                    proc.wait(30)
        stack.stop_all()
        mailbox.stop()
        for conn in _counting.values():
            await conn.close()
        await redis.aclose()
        if redis_proc is not None:
            redis_proc.terminate()
    print("\n".join(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invoices", type=int, default=int(os.environ.get("BENCH_INVOICES", "300")))
    from shared.devstack import worker_processes

    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", worker_processes())),
                        help="worker processes (default: as `make dev` runs them)")
    parser.add_argument("--concurrency", type=int, default=16, help="createInvoice requests in flight")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="stamp through stampInvoices, N invoices per request (all requests at once); "
                             "default: one stampInvoice per invoice")
    parser.add_argument("--floor-seconds", type=float, default=3.0, help="idle measurement before the runs")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--backlog", action="store_true",
                        help="stop the workers (SIGSTOP) until every stamp request is accepted: the workers' own "
                             "rate and CPU, with a queue as at a request rate above theirs")
    parser.add_argument("--pg-stats", action="store_true",
                        help="print, per stamp, the bench database's transactions, its backends' CPU and each "
                             "table's row operations and scans (pg_stat_database / pg_stat_user_tables)")
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--db-name", default=os.environ.get("BENCH_DATABASE", "facturacion_bench_stamping"),
                        help="the database created (dropped first) beside DATABASE_URL's: give each concurrent run "
                             "its own, or one run drops the other's")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="run the subgraphs and workers under py-spy (pip install py-spy), raw stacks into DIR "
                             "(CPU figures then include py-spy's own)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
