"""Building a subgraph's Strawberry schema and ASGI app the same way in every service.

This is the one boundary every request crosses, so what no service should ever see is refused
here, once: request bodies that are not a JSON object (HTTP 400, GraphQL-shaped), arguments beyond
their declared `Limits` (`shared.validation`), forged federation representations. It is also where
errors are classified for the client (typed, SERVICE_UNAVAILABLE, or masked) and for the logs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import strawberry
from cross_web import HTTPException
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.types import Info
from strawberry.extensions import (
    AddValidationRules, FieldExtension, MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, ParserCache,
    QueryDepthLimiter, ValidationCache,
)
from strawberry.federation.schema import FederationAny
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from graphql.validation import NoSchemaIntrospectionCustomRule

from shared.compiled import CompiledExecution
from shared.config import Settings, get_settings
from shared.context import RequestContext
from shared.errors import (
    AppError, InputError, Payload, ServiceUnavailableError, UserError, is_expected_error, is_unavailable,
    log_user_errors,
)
from shared.health import health_routes
from shared.live_graphql import SharedEventExecutor, SharedResultsSchema, next_message_text
from shared.logs import RequestIdMiddleware, configure_logging, redacted_traceback, request_id_var
from shared.runtime import Runtime, build_runtime
from shared.telemetry import graphql_extensions, instrument_asgi_app, setup_tracing
from shared.validation import DEFAULT_LIMITS, limits_of, value_problems

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "Error interno del servidor."
_SUGGESTION = re.compile(r"\s*Did you mean .*\?\s*$", re.DOTALL)


# --- arguments: every root field's arguments against their declared limits ----------------------

def _input_problems(field, info, kwargs: dict) -> list[UserError]:
    names = info.schema.config.name_converter

    def fields_of(value):
        definition = getattr(type(value), "__strawberry_definition__", None)
        if not getattr(definition, "is_input", False):
            return None
        return [(names.from_field(f), getattr(value, f.python_name, None), limits_of(f.metadata))
                for f in definition.fields]

    problems = []
    for arg in field.arguments:
        if arg.python_name in kwargs:
            problems += value_problems(kwargs[arg.python_name], limits_of(arg.metadata), [names.from_argument(arg)],
                                       fields_of)
    return [UserError(field=path, code=p.code, message=p.message) for path, p in problems]


class InputBoundary(FieldExtension):
    """Refuses arguments beyond their limits before the resolver runs: as `userErrors` when the
    field answers a mutation payload, else as a typed error with the same codes."""

    def apply(self, field) -> None:
        self.field = field

    def _refusal(self, info, kwargs: dict) -> Any:
        errors = _input_problems(self.field, info, kwargs)
        if not errors:
            return None
        payload = self.field.type if isinstance(self.field.type, type) else None
        if payload is not None and issubclass(payload, Payload):
            try:
                refusal = payload(user_errors=errors)
                log_user_errors(errors)
                return refusal
            except TypeError:  # a payload with other required fields: fall back to the error form
                pass
        raise InputError(errors)

    def resolve(self, next_, source, info, **kwargs):
        refusal = self._refusal(info, kwargs)
        return refusal if refusal is not None else next_(source, info, **kwargs)

    async def resolve_async(self, next_, source, info, **kwargs):
        refusal = self._refusal(info, kwargs)
        if refusal is not None:
            return refusal
        result = next_(source, info, **kwargs)
        return await result if inspect.isawaitable(result) else result  # subscriptions: a generator


def _guard_arguments(*roots: type | None) -> None:
    for root in roots:
        for field in root.__strawberry_definition__.fields if root else ():
            if field.arguments and not any(isinstance(e, InputBoundary) for e in field.extensions):
                field.extensions.append(InputBoundary())


# --- errors: what the client sees, what the logs say --------------------------------------------

def _default_code(error: GraphQLError) -> str | None:
    """A code for graphql-core's own errors, which come without one (Apollo's names)."""
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.original_error is None or isinstance(error.original_error, GraphQLError):
        if error.path is None:
            return "BAD_USER_INPUT" if error.message.startswith("Variable ") else "GRAPHQL_VALIDATION_FAILED"
    return None


def error_code(error: GraphQLError) -> str | None:
    return (error.extensions or {}).get("code") or _default_code(error)


def log_error(error: GraphQLError) -> None:
    """Expected errors in one line; a traceback only for what nobody expected. Never the message
    of a database error, which may quote SQL parameters (see `redacted_traceback`)."""
    rid, path = request_id_var.get(), ".".join(map(str, error.path or [])) or "-"
    original = error.original_error
    if is_unavailable(original):
        log.warning("service unavailable code=SERVICE_UNAVAILABLE path=%s request_id=%s cause=%s", path, rid,
                    type(original).__name__)
    elif is_expected_error(error):
        # Our own messages are safe to log; graphql-core's may echo the value a client sent.
        ours = isinstance(original, (AppError, InputError))
        log.info("client error code=%s path=%s request_id=%s%s", error_code(error), path, rid,
                 f" message={error.message[:200]!r}" if ours else "")
    else:
        log.error("unexpected error path=%s request_id=%s\n%s", path, rid, redacted_traceback(original))


class ServiceSchema(SharedResultsSchema, strawberry.federation.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context=None) -> None:
        for error in errors:
            log_error(error)

    def entities_resolver(self, info: Info, representations: list[FederationAny]) -> list[FederationAny]:
        # Only the gateway sends representations, but anyone reaching a subgraph can forge them.
        entity = self._schema.get_type("_Entity")
        names = {t.name for t in entity.types} if entity is not None else set()
        errors: list[UserError] = []
        for i, rep in enumerate(representations):
            where = ["representations", str(i)]
            if not isinstance(rep, dict) or not isinstance(rep.get("__typename"), str) or rep["__typename"] not in names:
                errors.append(UserError(field=where, code="INVALID_REPRESENTATION",
                                        message="Representación de entidad inválida."))
            else:
                errors += [UserError(field=path, code=p.code, message=p.message)
                           for path, p in value_problems(rep, DEFAULT_LIMITS, where)]
        if errors:
            raise InputError(errors)
        return super().entities_resolver(info, representations)


class ErrorPolicy(MaskErrors):
    """Typed errors pass (with a code even when graphql-core gave none), an unreachable database or
    Redis becomes SERVICE_UNAVAILABLE, anything else is masked. Field-name suggestions ("Did you
    mean ...?") are for developers only: outside APP_ENV=development they are cut."""

    def __init__(self):
        super().__init__(error_message=INTERNAL_MESSAGE)
        self.suggestions = os.environ.get("APP_ENV", "development") == "development"

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._one(e) for e in errors]

    def _process_stream_result(self, result) -> None:
        # Once per subscriber and event: the common case (no errors) skips the base class's
        # typing.Protocol isinstance checks, the costliest part of a live event's delivery.
        if getattr(result, "errors", None) or getattr(result, "incremental", None) or getattr(result, "completed", None):
            super()._process_stream_result(result)

    def _one(self, error: GraphQLError) -> GraphQLError:
        if is_unavailable(error.original_error):
            unavailable = ServiceUnavailableError()
            return GraphQLError(unavailable.message, nodes=error.nodes, path=error.path,
                                extensions={**unavailable.extensions,
                                            "retryAfter": ServiceUnavailableError.retry_after_seconds})
        if not is_expected_error(error):
            masked = self.anonymise_error(error)
            masked.extensions = {"code": "INTERNAL_SERVER_ERROR"}
            return masked
        code = error_code(error)
        message = error.message if self.suggestions or error.path is not None else _SUGGESTION.sub("", error.message)
        if code == (error.extensions or {}).get("code") and message == error.message:
            return error
        # A copy: validation errors are cached and shared between requests.
        return GraphQLError(message, nodes=error.nodes, source=error.source, positions=error.positions,
                            path=error.path, original_error=error.original_error,
                            extensions={**(error.extensions or {}), **({"code": code} if code else {})})


def schema_extensions() -> list:
    """Hardening and per-request overhead cuts shared by every subgraph.

    Read from the environment directly (not `Settings`) so that exporting the SDL needs no
    database URL. Parsing and validation results are cached: dashboards repeat the same documents.
    """
    max_depth = int(os.environ.get("GRAPHQL_MAX_DEPTH", "12"))
    # The limiters' rule classes are built here, once per schema. `QueryDepthLimiter(...)` and
    # `MaxAliasesLimiter(...)` each create a new rule class when constructed, and the validation
    # cache is keyed by (schema, document, rule classes): built per request, they made every
    # request a cache miss and validation ran every time.
    rules = [*QueryDepthLimiter(max_depth=max_depth).validation_rules,
             *MaxAliasesLimiter(max_alias_count=30).validation_rules]
    introspection = os.environ.get("GRAPHQL_INTROSPECTION")
    production = os.environ.get("APP_ENV") == "production"
    if (introspection or "").lower() in ("0", "false") or (introspection is None and production):
        rules.append(NoSchemaIntrospectionCustomRule)
    # Factories, not instances: Strawberry builds fresh extensions per request. The caches are
    # module-level functools caches inside these extensions, so they persist across requests.
    tracing = graphql_extensions()  # operation and resolver spans, only when tracing is on (first: outermost)
    return [
        *tracing,
        lambda: ParserCache(maxsize=512),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=512),
        lambda: MaxTokensLimiter(max_token_count=5000),
        # Known query documents skip the generic per-field machinery (shared/compiled.py), which
        # also skips field middleware: with tracing on (resolver spans are field middleware) every
        # document runs on the generic executor.
        *([] if tracing else [CompiledExecution]),
        ErrorPolicy,
    ]


def build_schema(*, query: type, mutation: type | None = None, subscription: type | None = None,
                 types: Sequence[type] = ()) -> strawberry.federation.Schema:
    _guard_arguments(query, mutation, subscription)
    return ServiceSchema(
        query=query, mutation=mutation, subscription=subscription, types=list(types),
        extensions=schema_extensions(),
        execution_context_class=SharedEventExecutor,  # live events: one execution per selection
    )


class ServiceGraphQL(GraphQL):
    def __init__(self, schema, runtime_getter: Callable[[], Runtime]):
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            keep_alive=True,
            keep_alive_interval=15,
        )
        self._runtime_getter = runtime_getter

    async def get_context(self, request, response) -> RequestContext:
        ctx = RequestContext(request=request, response=response, runtime=self._runtime_getter())
        if scope_type(request) == "http":
            request.state.graphql_context = ctx  # closed by __call__ when the answer is ready
        return ctx

    def encode_json(self, data: object) -> str | bytes:
        # A shared subscription result is serialized once for all its subscribers.
        text = next_message_text(data)
        return text if text is not None else super().encode_json(data)

    def decode_json(self, data: str | bytes) -> object:
        """Only a JSON object (or a batch list, refused as such) is a GraphQL request: invalid
        UTF-8, nesting deeper than the parser's stack, numbers too long to convert, `null` and bare
        values are the client's mistake (HTTP 400), never a 500."""
        try:
            value = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise HTTPException(400, "El cuerpo de la petición no es JSON válido (UTF-8).") from None
        if not isinstance(value, (dict, list)):
            raise HTTPException(400, "El cuerpo de la petición debe ser un objeto JSON.")
        return value

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        from starlette.requests import Request

        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as e:  # GraphQL-shaped, so clients parse every answer the same way
            code = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(e.status_code, "BAD_REQUEST")
            log.info("client error code=%s request_id=%s message=%r", code, request_id_var.get(), e.reason)
            response = JSONResponse({"errors": [{"message": e.reason, "extensions": {"code": code}}]},
                                    status_code=e.status_code)
        finally:
            ctx = getattr(request.state, "graphql_context", None)
            if ctx is not None:
                await ctx.close()
        await response(scope, receive, send)

    def create_response(self, response_data, sub_response):
        response = super().create_response(response_data, sub_response)
        if _only_unavailable(response_data):
            # The whole answer is "try again shortly": say it at the HTTP level too.
            response.status_code = 503
            response.headers["Retry-After"] = str(ServiceUnavailableError.retry_after_seconds)
        return response


def scope_type(request) -> str | None:
    scope = getattr(request, "scope", None)
    return scope.get("type") if isinstance(scope, dict) else None


def _only_unavailable(response_data) -> bool:
    if not isinstance(response_data, dict) or not response_data.get("errors"):
        return False
    data = response_data.get("data")
    no_data = data is None or (isinstance(data, dict) and all(v is None for v in data.values()))
    return no_data and all((e.get("extensions") or {}).get("code") == ServiceUnavailableError.code
                           for e in response_data["errors"])


def create_service_app(
    service: str,
    schema,
    *,
    routes: Sequence[BaseRoute] = (),
    settings: Settings | None = None,
    runtime_factory: Callable[[str, Settings], Runtime] = build_runtime,
    on_startup: Callable[[Runtime], Awaitable[None]] | None = None,
    on_shutdown: Callable[[Runtime], Awaitable[None]] | None = None,
) -> Starlette:
    """A subgraph's ASGI app: `/graphql` (HTTP + WebSocket), health checks, its own routes."""
    holder: dict[str, Runtime] = {}

    def runtime() -> Runtime:
        return holder["runtime"]

    @asynccontextmanager
    async def lifespan(app):
        cfg = settings or get_settings()
        if cfg.app_env != "test":  # under pytest, its own log capture stays in charge
            configure_logging(service, cfg.log_level)
        if not cfg.serve_graphql:
            # A public-links instance (signed document/receipt links published to the internet):
            # only its own routes and health, never the GraphQL API, which stays behind the gateway.
            app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/graphql"]
        rt = runtime_factory(service, cfg)
        holder["runtime"] = rt
        app.state.runtime = rt
        if on_startup:
            await on_startup(rt)
        log.info("service started")
        try:
            yield
        finally:
            if on_shutdown:
                await on_shutdown(rt)
            await rt.close()

    setup_tracing(service)  # before the runtime's engine exists: its statements are traced too
    graphql_app = ServiceGraphQL(schema, runtime)
    app = Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            *health_routes(runtime),
            *routes,
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    instrument_asgi_app(app)
    return app
