"""Async SQLAlchemy per service: one Postgres schema per service, one engine per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import MetaData
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
