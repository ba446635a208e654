"""The outbox relay alone: CPU per delivered event of the relay loops and of their Postgres backends.

K relay loops (one per simulated worker process, each with its runtime, all in this process) run
while a producer process commits N transactions of E events each into the auth outbox, with the
NOTIFY services send, at R commits per second (stamping's pattern: small commits, spread). The
producer then waits until every row is delivered. Printed: this process's CPU (only the relay
loops run in it) and the relays' Postgres backends' CPU (per pid, from /proc), per commit and per
event, and the transactions they committed / rolled back.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/6 \\
        .venv/bin/python bench/relay.py --commits 300 --events 2 --rate 60 --relays 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRODUCER = "bench-relay-producer"
_INSERT = ("INSERT INTO auth.outbox (event_id, type, version, organization_id, aggregate_id, occurred_at, payload) "
           "SELECT gen_random_uuid(), 'auth.member_removed', 1, gen_random_uuid(), 'bench-' || n, now(), "
           "jsonb_build_object('user_id', gen_random_uuid()::text) FROM generate_series(1, $1) AS n")


def _produce(url: str, commits: int, events: int, rate: float, polls) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, server_settings={"application_name": PRODUCER})
        try:
            t0 = time.monotonic()
            for i in range(commits):
                async with conn.transaction():
                    await conn.execute(_INSERT, events)
                    await conn.execute("SELECT pg_notify('outbox_wakeup', 'auth')")
                await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
            while await conn.fetchval("SELECT count(*) FROM auth.outbox WHERE delivered_at IS NULL"):
                polls.value += 1
                await asyncio.sleep(0.05)
            polls.value += 1
        finally:
            await conn.close()

    asyncio.run(run())


async def _backends(conn) -> tuple[dict[int, float], int, int]:
    from bench.measure import database_activity

    return await database_activity(conn, except_application=PRODUCER)


async def run(args) -> None:
    import asyncpg

    from shared import embedded
    from shared.config import load_settings, to_plain_url
    from shared.runtime import build_runtime
    from workers.relay import relay_loop, relay_once

    admin = os.environ["DATABASE_URL"]
    with embedded.migrated_database(admin, args.db_name) as url:
        settings = load_settings(database_url=url, redis_url=os.environ["REDIS_URL"], app_env="test")
        runtimes = [build_runtime(f"relay-bench-{i}", settings) for i in range(args.relays)]
        await relay_once(runtimes[0])  # the pool's and Redis' first connections
        loops = [asyncio.create_task(relay_loop(rt)) for rt in runtimes]
        stats = await asyncpg.connect(to_plain_url(url))
        try:
            await asyncio.sleep(2.5)  # the loops connected, led or stood by, swept once
            cpu_a, commit_a, rollback_a = await _backends(stats)
            me_a, t0 = time.process_time(), time.monotonic()
            ctx = multiprocessing.get_context("spawn")
            polls = ctx.Value("i", 0)
            producer = ctx.Process(target=_produce, args=(to_plain_url(url), args.commits, args.events, args.rate, polls))
            producer.start()
            while producer.is_alive():
                await asyncio.sleep(0.05)
            seconds = time.monotonic() - t0
            me = time.process_time() - me_a
            await asyncio.sleep(11)  # backends flush their counters within 10 s
            cpu_b, commit_b, rollback_b = await _backends(stats)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await stats.close()
            for rt in runtimes:
                await rt.close()
    pg = sum(cpu - cpu_a.get(pid, 0.0) for pid, cpu in cpu_b.items())
    n, e = args.commits, args.commits * args.events
    # The database's totals hold the producer's transactions (one per commit, one per poll) and
    # the stats connection's 3: subtracted.
    relays = commit_b - commit_a - n - polls.value - 3
    print(f"{n} commits x {args.events} events at {args.rate}/s, {args.relays} relay loops: drained in {seconds:.2f} s")
    print(f"  relay process CPU: {me * 1000 / n:.3f} ms per commit, {me * 1000 / e:.3f} ms per event")
    print(f"  relays' Postgres backends CPU: {pg * 1000 / n:.3f} ms per commit ({len(cpu_b)} backends)")
    print(f"  the relays' transactions per commit: commit {relays / n:.2f}, rollback {(rollback_b - rollback_a) / n:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--events", type=int, default=2, help="events per commit")
    parser.add_argument("--rate", type=float, default=60.0, help="commits per second")
    parser.add_argument("--relays", type=int, default=2, help="relay loops (worker processes)")
    parser.add_argument("--db-name", default=os.environ.get("BENCH_DATABASE", "facturacion_bench_relay"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
