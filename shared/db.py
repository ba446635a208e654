"""Async SQLAlchemy per service: one Postgres schema per service, one engine per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import json
import time

from sqlalchemy import MetaData, Select, Table, Text, cast, event, exc, select
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from shared.config import to_async_url

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_base(schema: str) -> type[DeclarativeBase]:
    """A declarative base whose tables all live in the service's own Postgres schema."""

    class Base(DeclarativeBase):
        metadata = MetaData(schema=schema, naming_convention=NAMING_CONVENTION)

    return Base


# A pooled connection idle longer than this is pinged before use (see `_ping_when_idle`).
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "facturacion_checked_in_at"


def make_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    # Looked up on the module at call time: when tracing is on, shared.telemetry has wrapped it so
    # the engine's statements become spans.
    engine = sa_asyncio.create_async_engine(
        to_async_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        hide_parameters=True,  # SQL parameters carry password hashes and sealed keys: never in logs
        # Statement timeout keeps a runaway query from holding a connection forever.
        connect_args={"server_settings": {"statement_timeout": "30000", "application_name": "facturacion"}},
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pre-ping, but only connections that sat idle in the pool: `pool_pre_ping` cost one round
    trip on every checkout (one per transaction: ~7% of a worker's CPU per stamp, a syscall pair
    each), to catch connections the server dropped while they waited. A connection given back
    less than PING_AFTER_IDLE_SECONDS ago was just working; if the server died since, its first
    statement fails as a disconnect, SQLAlchemy invalidates the whole pool, and the callers'
    outage handling (retry, "try again" to the client) applies as for a failure mid-transaction."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        if dbapi_connection is not None:
            record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:
        # asyncpg notices a server that closed the socket as soon as the loop reads the EOF: free.
        is_closed = getattr(getattr(dbapi_connection, "_connection", None), "is_closed", None)
        if is_closed is not None and is_closed():
            raise exc.InvalidatePoolError()
        at = record.info.get(_CHECKED_IN_AT)
        if at is None or time.monotonic() - at < PING_AFTER_IDLE_SECONDS:
            return  # fresh, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as err:  # noqa: BLE001 - any failure: this connection (and the pool) is stale
            raise exc.InvalidatePoolError() from err


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success (with its outbox rows), roll back on any error."""
    async with sessionmaker() as session:
        async with session.begin():
            yield session


@asynccontextmanager
async def core_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`transaction` for a unit of work made only of Core statements: a connection in a
    transaction (committed on success, rolled back on any error), without an ORM session around
    it. Building the session, its transaction bookkeeping and the ORM dispatch of every statement
    cost more than the statements' own SQLAlchemy work on a short request path (stampInvoice).
    Code that needs the ORM for a moment can open `AsyncSession(bind=conn)` in it: that session
    joins this transaction."""
    async with engine.begin() as conn:
        yield conn


class PlainRow:
    """A row read only to be shown (list pages, loaders): its columns as plain attributes, named
    as the mapped class's, without the ORM's identity map and instance state. JSON columns come
    as text and are decoded on first use, so a page that shows none of them never decodes them."""

    def __init__(self, mapping) -> None:
        self.__dict__.update(mapping)

    def __getattr__(self, name: str):  # only for names not set: the JSON columns, on first use
        try:
            raw = self.__dict__[f"{name}{_JSON_SUFFIX}"]
        except KeyError:
            raise AttributeError(name) from None
        value = self.__dict__[name] = json.loads(raw) if raw is not None else None
        return value


_JSON_SUFFIX = "__json"


def plain_select(table: Table, *, json_columns: tuple[str, ...] = ()) -> Select:
    """`select(table)` for `PlainRow`s: the JSON columns cast to text for lazy decoding."""
    return select(*(c for c in table.c if c.key not in json_columns),
                  *(cast(table.c[name], Text).label(f"{name}{_JSON_SUFFIX}") for name in json_columns))


async def plain_rows(session, statement) -> list[PlainRow]:
    return [PlainRow(r) for r in (await session.execute(statement)).mappings()]
