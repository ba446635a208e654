"""Structured JSON logs carrying the request id of the request that produced them."""

from __future__ import annotations

import contextvars
import logging
import sys
import traceback
import uuid

from pythonjsonlogger.json import JsonFormatter

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Never log these even if someone passes them in `extra=`.
_REDACT = {"password", "new_password", "private_key", "privateKey", "token", "refresh_token", "code", "secret"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        for key in _REDACT & set(record.__dict__):
            setattr(record, key, "[redacted]")
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        static_fields={"service": service},
    ))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log repeats what our middleware logs, with less context.
    logging.getLogger("uvicorn.access").disabled = True
    # arq's CLI installs its own plain-text handler; one JSON line per record is enough.
    arq_logger = logging.getLogger("arq")
    arq_logger.handlers[:] = []
    arq_logger.propagate = True


def _database_error_line(exc: BaseException) -> str | None:
    """How a database error is logged: its type, SQLSTATE and statement, never its message when the
    message may quote a value (client-side argument errors and SQLSTATE class 22 do: "invalid input
    for query argument $1: '$argon2id$...'"). None for anything that is not a database error."""
    module = type(exc).__module__.split(".")[0]
    if module not in ("asyncpg", "sqlalchemy"):
        return None
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    sqlstate = getattr(exc, "sqlstate", None)
    message = getattr(exc, "message", None)  # asyncpg server errors: the server's own text
    statement = getattr(exc, "statement", None)  # sqlalchemy: the SQL, with placeholders only
    if statement:
        return f"{name}: [SQL: {' '.join(str(statement).split())[:300]}] (message and parameters hidden)"
    if sqlstate and message and not str(sqlstate).startswith("22"):
        return f"{name}: [{sqlstate}] {message}"
    return f"{name}: [{sqlstate or '-'}] (message hidden: it may quote parameters)"


def redacted_traceback(exc: BaseException) -> str:
    """`exc`'s traceback, cause and context chain included, as `traceback` prints it, except that
    database errors' messages are replaced by `_database_error_line`."""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    link: str | None = None
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append((e, link))
        if e.__cause__ is not None:
            e, link = e.__cause__, "The above exception was the direct cause of the following exception:"
        elif e.__context__ is not None and not e.__suppress_context__:
            e, link = e.__context__, "During handling of the above exception, another exception occurred:"
        else:
            e = None
    parts: list[str] = []
    for e, link_to_next in reversed(chain):
        line = _database_error_line(e)
        if line is None:
            line = "".join(traceback.format_exception_only(type(e), e)).rstrip()
        parts.append("Traceback (most recent call last):\n" + "".join(traceback.format_tb(e.__traceback__)) + line)
        if link_to_next:
            parts.append(link_to_next)
    return "\n\n".join(parts)


class RequestIdMiddleware:
    """Takes `X-Request-Id` from the caller (the gateway) or makes one, and echoes it back."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming[:100] if incoming else uuid.uuid4().hex
        token = request_id_var.set(rid)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
