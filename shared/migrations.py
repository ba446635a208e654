"""Alembic, once per service: each service's migrations live in `subgraphs/<service>/migrations`
and version their own Postgres schema (with its own `alembic_version` table).

`python -m shared.migrations upgrade [service ...]` brings every (or the named) schema to head.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.config import to_async_url
from shared.registry import schema_names

ROOT = Path(__file__).resolve().parent.parent
SERVICES = schema_names()  # shared/registry.py is the one list


def alembic_config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "subgraphs" / service / "migrations"))
    cfg.attributes["database_url"] = database_url  # not a main option: ConfigParser chokes on '%'
    cfg.attributes["service_schema"] = service
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, database_url), revision)


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's `migrations/env.py`."""
    cfg = context.config
    schema = cfg.attributes.get("service_schema") or target_metadata.schema
    url = to_async_url(cfg.attributes["database_url"])

    def do_run(connection):
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, parent: type_ != "schema" or name == schema,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run():
        engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.commit()
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return
    # Called from async code (a test fixture, a start-up hook): run on a private loop in a thread.
    import threading

    errors: list[BaseException] = []

    def target():
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def main(argv: list[str]) -> int:
    from shared.config import load_settings

    if not argv or argv[0] != "upgrade":
        print("usage: python -m shared.migrations upgrade [service ...]", file=sys.stderr)
        return 2
    settings = load_settings()
    for service in argv[1:] or SERVICES:
        if (ROOT / "subgraphs" / service / "migrations").is_dir():
            upgrade(service, settings.database_url)
            print(f"migrated {service}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
