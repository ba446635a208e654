"""OpenTelemetry traces, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

One trace per request: the gateway's spans, each subgraph's server span, its resolvers and SQL,
and, for work the request queued, the worker's job and the PAC call. The request's W3C
`traceparent` is written with its outbox row (`shared.outbox.emit`), the relay hands it to the job
as the `traceparent` keyword, and the job span continues the trace (`job_span`).

Off (no endpoint) is the normal case and must cost nothing per request: `setup_tracing` returns
without importing the SDK, no middleware or schema extension is added, and the helpers below
check one module-level flag and return (a shared `nullcontext`, `None`). The OpenTelemetry API
is imported only once tracing is on.

Exported over OTLP/HTTP (protobuf) to `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`; the SDK's own
variables apply (OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_SCHEDULE_DELAY, OTEL_TRACES_SAMPLER, ...).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
_NOOP = contextlib.nullcontext()
_enabled = False  # set by setup_tracing(); read by every helper
# String literals of a GraphQL document (block strings first): a client may write a password or an
# RFC inline instead of in variables, and documents are recorded as span attributes.
_STRING_LITERAL = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"')
_DOCUMENT_ATTRIBUTES = ("query", "graphql.document")  # Strawberry's, Hive Gateway's


def without_literals(document: str) -> str:
    """The document with every string literal replaced by "***" (the gateway does the same)."""
    return _STRING_LITERAL.sub('"***"', document)


def tracing_requested() -> bool:
    """Whether this process should trace (the environment asks for it), before or after setup."""
    return bool(os.environ.get(ENDPOINT_ENV, "").strip()) and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"


def tracing_enabled() -> bool:
    return _enabled


def setup_tracing(service_name: str) -> bool:
    """Install the tracer provider, the OTLP exporter and the library instrumentations for this
    process, once. Returns whether tracing is on. Call it before the database engine is made."""
    global _enabled
    if _enabled or not tracing_requested():
        return _enabled
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased

    # The service's own name wins over a stack-wide OTEL_SERVICE_NAME: every process of the stack
    # reads the same environment (compose, make dev), and "invoice" vs "worker" is what matters.
    resource = Resource.create().merge(Resource({SERVICE_NAME: service_name}))
    # An operator's OTEL_TRACES_SAMPLER wins; otherwise ours (_request_root_sampler).
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(root=_request_root_sampler())
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(_redacting(OTLPSpanExporter())))
    trace.set_tracer_provider(provider)
    # Patches sqlalchemy.ext.asyncio.create_async_engine: every engine made after this traces its
    # statements (shared.db.make_engine calls it through the module for that reason). The
    # instrumentation declares SQLAlchemy < 2.1 and would silently do nothing on our 2.1; it only
    # listens to the engine's cursor events, which 2.1 keeps, so the check is skipped (the tracing
    # e2e test fails if SQL spans ever stop appearing).
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    # Outgoing HTTP (PAC providers, the worker asking auth for mail links): a client span and the
    # traceparent header on every request.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _enabled = True
    return True


def _request_root_sampler():
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class RequestRootSampler(Sampler):
        """A trace starts only where work starts: a request (SERVER) or a job (CONSUMER). Statements
        and HTTP calls made by background loops (the relay's sweep every 2 s, crons, JWKS refresh)
        would otherwise be a stream of one-span traces nobody asked for."""

        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                          trace_state=None):
            if kind in (SpanKind.SERVER, SpanKind.CONSUMER):
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
            return SamplingResult(Decision.DROP)

        def get_description(self) -> str:
            return "RequestRootSampler"

    return RequestRootSampler()


def _redacting(exporter):
    """The exporter, with error texts cut from what it sends: an exception message or an error
    status may quote SQL parameters or input (password hashes, sealed keys, RFCs), which never
    leave the process in logs either (shared.logs). The exception's type stays. Likewise the
    string literals of recorded GraphQL documents."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Status

    def event(e):
        if e.name != "exception" or not e.attributes:
            return e
        return Event(e.name, {k: v for k, v in e.attributes.items()
                              if k not in ("exception.message", "exception.stacktrace")}, e.timestamp)

    def clean(span: ReadableSpan) -> ReadableSpan:
        attributes = span.attributes or {}
        documents = [k for k in _DOCUMENT_ATTRIBUTES if isinstance(attributes.get(k), str)]
        if not span.events and span.status.description is None and not documents:
            return span
        if documents:
            attributes = {**attributes, **{k: without_literals(attributes[k]) for k in documents}}
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=attributes, events=tuple(event(e) for e in span.events), links=span.links,
            kind=span.kind, status=Status(span.status.status_code), start_time=span.start_time,
            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)

    class Redacting(SpanExporter):
        def export(self, spans):
            return exporter.export([clean(s) for s in spans])

        def shutdown(self):
            return exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000):
            return exporter.force_flush(timeout_millis)

    return Redacting()


# --- what the services call (each a no-op when tracing is off) ------------------------------------

def instrument_asgi_app(app) -> None:
    """Server spans for a Starlette app, continuing the caller's trace (the gateway's traceparent).
    Health probes are not traced; nor are the per-message send/receive spans of a request."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(OpenTelemetryMiddleware, excluded_urls="/health", exclude_spans=["receive", "send"],
                       default_span_details=_span_details)


def _span_details(scope) -> tuple[str, dict]:
    # The path without its query string: signed document links carry their signature there.
    method = scope.get("method") or scope.get("type", "").upper()
    return f"{method} {scope.get('path', '')}".strip(), {}


def graphql_extensions() -> list:
    """Strawberry's OpenTelemetry extension (operation and resolver spans) when tracing is on.
    Argument values are never recorded: they carry passwords, CSD keys and personal data."""
    if not tracing_requested():
        return []
    from strawberry.extensions.tracing import OpenTelemetryExtension

    return [lambda: OpenTelemetryExtension(arg_filter=lambda args, info: {})]


def span(name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False):
    """A span around a block (e.g. a PAC call); the shared nullcontext when tracing is off."""
    if not _enabled:
        return _NOOP
    from opentelemetry import trace

    kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
    return trace.get_tracer("facturacion").start_as_current_span(name, kind=kind, attributes=attributes)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with work that continues later."""
    if not _enabled:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def job_span(name: str, traceparent: str | None, attributes: Mapping[str, Any] | None = None):
    """A CONSUMER span for a background job, a child of the request that queued it when its
    traceparent came along (a job the sweep re-queued starts a trace of its own)."""
    if not _enabled:
        return _NOOP
    from opentelemetry import propagate, trace

    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    return trace.get_tracer("facturacion.worker").start_as_current_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes)
