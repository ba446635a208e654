"""Async SQLAlchemy per service: one Postgres schema per service, one engine per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import json

from sqlalchemy import MetaData, Select, Table, Text, cast, select
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
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


def make_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    # Looked up on the module at call time: when tracing is on, shared.telemetry has wrapped it so
    # the engine's statements become spans.
    return sa_asyncio.create_async_engine(
        to_async_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,  # SQL parameters carry password hashes and sealed keys: never in logs
        # Statement timeout keeps a runaway query from holding a connection forever.
        connect_args={"server_settings": {"statement_timeout": "30000", "application_name": "facturacion"}},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success (with its outbox rows), roll back on any error."""
    async with sessionmaker() as session:
        async with session.begin():
            yield session


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
