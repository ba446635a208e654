"""Typed errors.

Two kinds, as GraphQL clients expect them:
- `UserError` values inside mutation payloads (`userErrors { field code message }`) for bad input
  the user can fix: the mutation writes nothing and says what and where.
- `AppError` exceptions for requests that cannot run at all (not authenticated, not allowed, not
  found): they become GraphQL errors with `extensions.code`. Anything else is masked as
  INTERNAL_SERVER_ERROR so no stack trace or secret leaks to clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field

import strawberry
from graphql import GraphQLError


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


def is_expected_error(error: GraphQLError) -> bool:
    """Errors that may be shown to clients as they are (everything else gets masked)."""
    original = error.original_error
    if original is None:
        return True  # parse/validation errors from graphql-core itself
    return isinstance(original, (AppError, GraphQLError, InputError))


@strawberry.type
class Payload:
    """Base of every mutation payload: `userErrors` is empty when the mutation succeeded."""

    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def payload_or_errors(payload_cls, action):
    """Run `action()`; if it raises `InputError`, answer `payload_cls(user_errors=...)` instead."""
    try:
        return await action()
    except InputError as exc:
        return payload_cls(user_errors=exc.errors)
