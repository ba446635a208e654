"""The per-request context every resolver receives: who is calling, and per-request loaders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiodataloader import DataLoader
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from sqlalchemy.ext.asyncio import AsyncSession

from shared.client_address import client_address
from shared.errors import ForbiddenError, UnauthenticatedError
from shared.runtime import Runtime
from shared.tokens import InvalidTokenError, Principal, bearer_token

_UNSET = object()
_STALE = object()


@dataclass
class RequestContext:
    request: Request | WebSocket
    response: Response | None
    runtime: Runtime
    connection_params: dict | None = None
    _principal: Any = field(default=_UNSET, repr=False)
    _loaders: dict[str, DataLoader] = field(default_factory=dict, repr=False)
    _session: AsyncSession | None = field(default=None, repr=False)
    _session_lock: asyncio.Lock | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def settings(self):
        return self.runtime.settings

    @property
    def client_ip(self) -> str:
        return client_address(self.request, self.runtime.settings.gateway_shared_secret)

    def _authorization(self) -> str | None:
        params = self.connection_params or {}
        for key in ("Authorization", "authorization"):
            if isinstance(params.get(key), str):
                return params[key]
        headers = params.get("headers") if isinstance(params.get("headers"), dict) else {}
        for key in ("Authorization", "authorization"):
            if isinstance(headers.get(key), str):
                return headers[key]
        return self.request.headers.get("authorization")

    async def optional_principal(self) -> Principal | None:
        """The caller, or None when no token was sent. A bad token is an error, never anonymous."""
        if self._principal is _UNSET:
            # One check per request, shared by resolvers that ask at the same time (so their
            # DataLoader calls still land in one batch).
            self._principal = asyncio.ensure_future(self._identify())
        outcome = await asyncio.shield(self._principal)
        if outcome is InvalidTokenError:
            raise UnauthenticatedError("Token de acceso inválido o expirado.", code="INVALID_TOKEN")
        if outcome is _STALE:
            raise UnauthenticatedError("Tus permisos cambiaron; renueva tu sesión.", code="STALE_TOKEN")
        return outcome

    async def _identify(self):
        try:
            token = bearer_token(self._authorization())
            p = await self.runtime.verifier.principal(token) if token else None
        except InvalidTokenError:
            return InvalidTokenError
        # A token minted before its member's role changed (or before removal) is refused in every
        # subgraph, not trusted until it expires (shared/authz.py).
        if p is not None and not await self.runtime.authz.is_current(p.organization_id, p.user_id, p.authz_version):
            return _STALE
        return p

    async def principal(self) -> Principal:
        p = await self.optional_principal()
        if p is None:
            raise UnauthenticatedError()
        return p

    async def require(self, *permissions: str) -> Principal:
        p = await self.principal()
        missing = [perm for perm in permissions if not p.has(perm)]
        if missing:
            raise ForbiddenError(extensions={"missingPermissions": missing})
        return p

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """The request's one read transaction: the page query and every loader batch of an HTTP
        request share a session (one pool checkout, one BEGIN, one pre-ping) instead of opening
        one each. Resolvers running concurrently take turns (a session is not concurrency-safe);
        under READ COMMITTED each statement still sees the latest commits, so a mutation earlier
        in the request is visible. The session ends with the request (`close`). A WebSocket
        context lives as long as its subscriptions, so it never pins a connection: there each
        use gets its own short session."""
        if self._closed or isinstance(self.request, WebSocket):
            # (closed: a subscription over HTTP streams after the request's own work is done)
            async with self.runtime.sessionmaker() as session:
                yield session
            return
        if self._session_lock is None:
            self._session_lock = asyncio.Lock()
        async with self._session_lock:
            if self._session is None:
                self._session = self.runtime.sessionmaker()
            try:
                yield self._session
            except BaseException:
                # A failed statement leaves the transaction aborted: the next reader starts afresh.
                await self._session.rollback()
                raise

    async def close(self) -> None:
        """End the request's read transaction (rolled back: reads have nothing to commit)."""
        session, self._session, self._closed = self._session, None, True
        if session is not None:
            await session.close()

    def loader(self, name: str, factory: Callable[[], DataLoader]) -> DataLoader:
        """DataLoaders live for one request: batching within it, no stale cache across requests."""
        if name not in self._loaders:
            self._loaders[name] = factory()
        return self._loaders[name]

    def batch_loader(self, name: str, fetch: Callable[[Any, list], Awaitable[dict]], *, default: Any = None) -> DataLoader:
        """The usual loader: `fetch(session, keys)` answers a dict for the whole batch in one
        query; keys it does not answer get `default` (None, or e.g. [] for list fields)."""

        async def batch(keys: list) -> list:
            async with self.read_session() as session:
                found = await fetch(session, keys)
            return [found.get(k, default) for k in keys]

        return self.loader(name, lambda: DataLoader(batch))
