"""shared/telemetry.py: off costs nothing (no OpenTelemetry module is even imported); on, traces
start only at requests and jobs, and neither error texts nor the string literals of GraphQL
documents leave the process.

The whole path with tracing on (gateway -> subgraph -> SQL -> worker -> PAC) is
tests/e2e/test_tracing.py."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.stack import ROOT


def test_tracing_off_loads_no_opentelemetry_module_and_adds_nothing_to_the_apps():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = """
import sys
from shared import telemetry
import subgraphs.auth.app, subgraphs.invoice.app, subgraphs.expense.app, subgraphs.notification.app, workers.main
apps = [subgraphs.auth.app.app, subgraphs.invoice.app.app, subgraphs.expense.app.app, subgraphs.notification.app.app]
assert telemetry.setup_tracing("worker") is False and not telemetry.tracing_enabled()
assert telemetry.graphql_extensions() == []
assert telemetry.span("PAC stamp") is telemetry.span("other") is telemetry.job_span("job", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")
assert telemetry.current_traceparent() is None
assert all([m.cls.__name__ for m in app.user_middleware] == ["RequestIdMiddleware"] for app in apps)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def _provider(exporter, sampler=None):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_traces_start_only_at_requests_and_jobs():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased
    from opentelemetry.trace import SpanKind

    from shared.telemetry import _request_root_sampler

    exported = InMemorySpanExporter()
    tracer = _provider(exported, ParentBased(root=_request_root_sampler())).get_tracer("test")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):  # the relay's sweep: no trace
        with tracer.start_as_current_span("inner"):
            pass
    with tracer.start_as_current_span("POST /graphql", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("UPDATE", kind=SpanKind.CLIENT):
            pass
    with tracer.start_as_current_span("stamp_invoice_job", kind=SpanKind.CONSUMER):
        with tracer.start_as_current_span("PAC stamp", kind=SpanKind.CLIENT):
            pass
    assert sorted(s.name for s in exported.get_finished_spans()) == ["PAC stamp", "POST /graphql", "UPDATE",
                                                                    "stamp_invoice_job"]


def test_exported_spans_keep_the_error_type_but_never_its_text():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    from shared.telemetry import _redacting

    exported = InMemorySpanExporter()
    tracer = _provider(_redacting(exported)).get_tracer("test")
    try:
        with tracer.start_as_current_span("UPDATE") as span:
            span.set_status(Status(StatusCode.ERROR, "invalid input for query argument $1: '$argon2id$v=19$secret'"))
            raise ValueError("invalid input for query argument $1: '$argon2id$v=19$secret'")
    except ValueError:
        pass
    with tracer.start_as_current_span("fine", attributes={"pac.operation": "stamp"}):
        pass
    inline = 'mutation { logIn(input: {email: "ana@example.mx", password: "se\\"creto"}) { ok } }'
    with tracer.start_as_current_span("GraphQL Query", attributes={"query": inline, "graphql.document": '{ a(b: """x\ny""") }'}):
        pass
    failed, fine, document = exported.get_finished_spans()
    assert document.attributes["query"] == 'mutation { logIn(input: {email: "***", password: "***"}) { ok } }'
    assert document.attributes["graphql.document"] == '{ a(b: "***") }'
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description is None
    (event,) = failed.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert "secret" not in repr(dict(event.attributes)) and "secret" not in repr(failed.to_json())
    assert fine.attributes["pac.operation"] == "stamp"
