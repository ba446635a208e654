"""Typed errors.

Two kinds, as GraphQL clients expect them:
- `UserError` values inside mutation payloads (`userErrors { field code message }`) for bad input
  the user can fix: the mutation writes nothing and says what and where.
- `AppError` exceptions for requests that cannot run at all (not authenticated, not allowed, not
  found): they become GraphQL errors with `extensions.code`. Anything else is masked as
  INTERNAL_SERVER_ERROR so no stack trace or secret leaks to clients.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field as dc_field

import strawberry
from graphql import GraphQLError

from shared.logs import request_id_var

log = logging.getLogger(__name__)


# Every subgraph defines these same value types, so the supergraph needs them @shareable.
@strawberry.federation.type(shareable=True, description="A problem with the input of a mutation; nothing was written.")
class UserError:
    field: list[str] | None = strawberry.field(
        description="Path to the input field at fault, e.g. ['input', 'concepts', '0', 'quantity']."
    )
    code: str = strawberry.field(description="Stable machine-readable code, e.g. INVALID_RFC.")
    message: str = strawberry.field(description="Human-readable explanation (es-MX).")


@dataclass
class InputError(Exception):
    """Raised by service code for bad input; resolvers turn it into `userErrors`."""

    errors: list[UserError] = dc_field(default_factory=list)

    @classmethod
    def single(cls, code: str, message: str, field: list[str] | str | None = None) -> "InputError":
        if isinstance(field, str):
            field = ["input", field]
        return cls([UserError(field=field, code=code, message=message)])

    def __str__(self) -> str:
        return "; ".join(e.message for e in self.errors)

    @property
    def extensions(self) -> dict:
        # Raised outside a mutation payload (e.g. a bad cursor in a query), graphql-core copies
        # these onto the GraphQL error, so the client still gets a code and the field path.
        first = self.errors[0] if self.errors else None
        return {"code": first.code if first else "BAD_USER_INPUT", "field": first.field if first else None,
                "userErrors": [{"field": e.field, "code": e.code, "message": e.message} for e in self.errors]}


class AppError(GraphQLError):
    code = "BAD_REQUEST"

    def __init__(self, message: str, *, code: str | None = None, extensions: dict | None = None):
        ext = {"code": code or self.code, **(extensions or {})}
        super().__init__(message, extensions=ext)


class UnauthenticatedError(AppError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "Se requiere iniciar sesión.", **kw):
        super().__init__(message, **kw)


class ForbiddenError(AppError):
    code = "FORBIDDEN"

    def __init__(self, message: str = "No tienes permiso para esta operación.", **kw):
        super().__init__(message, **kw)


class NotFoundError(AppError):
    code = "NOT_FOUND"

    def __init__(self, message: str = "No encontrado.", **kw):
        super().__init__(message, **kw)


class ServiceUnavailableError(AppError):
    """A backing service (Postgres, Redis) cannot be reached: nothing is wrong with the request,
    and the same request will work once it is back."""

    code = "SERVICE_UNAVAILABLE"
    retry_after_seconds = 5

    def __init__(self, message: str = "El servicio no está disponible por el momento; intenta de nuevo en unos segundos.",
                 **kw):
        super().__init__(message, **kw)


def is_expected_error(error: GraphQLError) -> bool:
    """Errors that may be shown to clients as they are (everything else gets masked)."""
    original = error.original_error
    if original is None:
        return True  # parse/validation errors from graphql-core itself
    return isinstance(original, (AppError, GraphQLError, InputError))


def _unavailable_types() -> tuple[type[BaseException], ...]:
    import asyncpg
    import httpx
    import redis.exceptions
    import sqlalchemy.exc

    return (
        ConnectionError, TimeoutError, socket.gaierror,  # refused, reset, connect timeout, unknown host
        sqlalchemy.exc.TimeoutError,  # the pool had no connection to give within its timeout
        asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
        asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.ConnectionDoesNotExistError,  # the server went away mid-statement
        redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
        httpx.TransportError,  # another service of ours (e.g. the auth JWKS) cannot be reached
    )


def is_unavailable(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says a database or Redis cannot be reached right now."""
    import sqlalchemy.exc

    types = _unavailable_types()
    seen: set[int] = set()
    pending = [exc]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, types) or (isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated):
            return True
        pending += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False


@strawberry.type
class Payload:
    """Base of every mutation payload: `userErrors` is empty when the mutation succeeded."""

    user_errors: list[UserError] = strawberry.field(default_factory=list)


def log_user_errors(errors: list[UserError]) -> None:
    """A refused mutation is the client's business: one INFO line, never a traceback."""
    log.info("user errors codes=%s fields=%s request_id=%s", ",".join(e.code for e in errors),
             ";".join(".".join(e.field or []) for e in errors), request_id_var.get())


async def payload_or_errors(payload_cls, action):
    """Run `action()`; if it raises `InputError`, answer `payload_cls(user_errors=...)` instead."""
    try:
        return await action()
    except InputError as exc:
        log_user_errors(exc.errors)
        return payload_cls(user_errors=exc.errors)
