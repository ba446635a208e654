"""What the benchmarks measure with: CPU time of server processes (read from /proc, so a bench can
meter uvicorn/node processes it started) and the cost per request of an in-process ASGI app."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _utime_stime(stat: str) -> tuple[int, list[str]]:
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces
    return int(fields[11]) + int(fields[12]), fields


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process."""
    ticks, _ = _utime_stime(Path(f"/proc/{pid}/stat").read_text())
    return ticks / CLK_TCK


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process of a process group (a gateway's workers,
    a supervisor's children)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ticks, fields = _utime_stime(Path(entry.path, "stat").read_text())
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += ticks
    return total / CLK_TCK


def servers_cpu_seconds(commands: tuple[str, ...] = ("postgres", "redis-server")) -> dict[str, float]:
    """User + system CPU seconds of the database servers (every process whose name starts with
    one of `commands`), exited children included (a postmaster's cutime holds its ended backends).
    Machine-wide: meaningful only when nothing else uses those servers during the measurement."""
    total = dict.fromkeys(commands, 0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        for name in commands:
            if comm.startswith(name):
                ticks, fields = _utime_stime(stat)
                total[name] += ticks + int(fields[13]) + int(fields[14])
    return {name: ticks / CLK_TCK for name, ticks in total.items()}


async def per_request_us(client, method: str, path: str, *, n: int, clock: Callable[[], float] = time.perf_counter,
                         **kw) -> float:
    """Microseconds per request by `clock` (wall by default, `time.process_time` for CPU) over `n`
    requests after 50 to warm up; every answer must be a 200."""
    for _ in range(50):
        await client.request(method, path, **kw)
    start = clock()
    for _ in range(n):
        r = await client.request(method, path, **kw)
        assert r.status_code == 200, r.text
    return (clock() - start) / n * 1e6


async def database_activity(conn, *, except_application: str = "") -> tuple[dict[int, float], int, int]:
    """The current database's work so far, read on `conn` (asyncpg): CPU seconds of each of its
    other backends (per pid, from /proc: other databases' backends do not count), and its
    committed and rolled-back transactions (pg_stat_database)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    pids = [r[0] for r in await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND application_name IS DISTINCT FROM $1", except_application or None)]
    commit, rollback = await conn.fetchrow("SELECT xact_commit, xact_rollback FROM pg_stat_database "
                                           "WHERE datname = current_database()")
    cpu = {}
    for pid in pids:
        try:
            cpu[pid] = process_cpu_seconds(pid)
        except OSError:  # the backend ended meanwhile
            pass
    return cpu, commit, rollback
