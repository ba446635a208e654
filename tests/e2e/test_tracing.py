"""OpenTelemetry traces through the real processes: one `stampInvoice` is one trace, from the
gateway through the invoice subgraph (server span, resolver, SQL) to the worker's stamping job
and its PAC call, exported over OTLP/HTTP to a receiver this test runs.

The stack here is its own (auth and invoice subgraphs, worker, gateway) with
OTEL_EXPORTER_OTLP_ENDPOINT set, on a private database and Redis: the session's e2e stack runs
with tracing off, as production does by default, and its worker must not take this one's jobs."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from shared import embedded
from shared.embedded import free_port
from tests.conftest import admin_database_url, unique_email
from tests.e2e.conftest import GATEWAY_SECRET, subscribe
from tests.gateway_flows import STAMP, create_invoice, new_issuer
from tests.graphql_client import GraphQLClient
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.e2e


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver (protobuf, optionally gzipped) keeping every span with
    the service.name of the process that sent it."""

    def __init__(self):
        self.spans: list[tuple[str, Span]] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def body(self) -> bytes:
                if "chunked" not in (self.headers.get("transfer-encoding") or "").lower():
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                chunks = []  # Node's exporter streams its body
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers up to the empty line
                    pass
                return b"".join(chunks)

            def do_POST(self):
                body = self.body()
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or "protobuf" not in (self.headers.get("content-type") or ""):
                    self.send_response(415 if self.path == "/v1/traces" else 404)
                    self.end_headers()
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
                for ss in rs.scope_spans:
                    self.spans.extend((service, s) for s in ss.spans)

    def snapshot(self) -> list[tuple[str, Span]]:
        with self._lock:
            return list(self.spans)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def otlp():
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced_stack(otlp, mailbox, tmp_path_factory):
    redis_proc, redis_url = embedded.start_redis()
    try:
        with embedded.migrated_database(admin_database_url(), f"facturacion_tracing_{os.getpid()}") as database_url:
            ports = {"auth": free_port(), "invoice": free_port()}
            gateway_port, nobody = free_port(), free_port()  # nothing listens on `nobody`
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            env.update({
                "DATABASE_URL": database_url, "REDIS_URL": redis_url, "APP_ENV": "test",
                "AUTH_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
                "AUTH_SERVICE_URL": f"http://127.0.0.1:{ports['auth']}",
                "INVOICE_SERVICE_URL": f"http://127.0.0.1:{ports['invoice']}",
                "GATEWAY_PORT": str(gateway_port), "GATEWAY_HOST": "127.0.0.1", "GATEWAY_SHARED_SECRET": GATEWAY_SECRET,
                "RATE_LIMIT_DISABLED": "true", "MAIL_REQUESTS_MAX_PER_CLIENT": "60", "AUTHZ_CACHE_SECONDS": "0",
                "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(mailbox.port),
                "AUTH_URL": f"http://127.0.0.1:{ports['auth']}/graphql",
                "INVOICE_URL": f"http://127.0.0.1:{ports['invoice']}/graphql",
                # Not needed for stamping: not started.
                "EXPENSE_URL": f"http://127.0.0.1:{nobody}/graphql", "NOTIFICATION_URL": f"http://127.0.0.1:{nobody}/graphql",
                # Tracing on, every process exporting to the receiver, batches sent within 100 ms.
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
            })
            st = Stack(env, tmp_path_factory.mktemp("traced-stack-logs"))
            try:
                # Started together, then waited for: the four boot in parallel.
                for name, port in ports.items():
                    st.start(name, st.subgraph_argv(name, port), None)
                    st.urls[name] = f"http://127.0.0.1:{port}"
                st.start_worker()
                st.start("gateway", [str(ROOT / "supergraph" / "gateway.sh")], None)
                st.urls["gateway"] = f"http://127.0.0.1:{gateway_port}"
                for name, port in ports.items():
                    st.wait(name, f"http://127.0.0.1:{port}/health/ready")
                st.wait("gateway", f"{st.urls['gateway']}/readiness")
                yield st
            finally:
                st.stop_all()
    finally:
        redis_proc.terminate()
        redis_proc.wait(5)


@pytest.fixture
async def traced_gateway(traced_stack):
    async with httpx.AsyncClient(base_url=traced_stack.urls["gateway"], timeout=30) as http:
        yield GraphQLClient(http)


async def _until(what: str, check, timeout: float = 60, seen=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}{seen()}")
        await asyncio.sleep(0.2)


def _attr(span: Span, key: str):
    for a in span.attributes:
        if a.key == key:
            return getattr(a.value, a.value.WhichOneof("value"))
    return None


async def test_one_stamp_is_one_trace_from_gateway_to_pac(traced_stack, traced_gateway, otlp, mailbox):
    gateway = traced_gateway
    token, customer_id = await new_issuer(gateway, mailbox, customer_email=unique_email("cliente"))
    invoice = await create_invoice(gateway, token, customer_id, price="500.00")
    # Watched over a WebSocket through the gateway: subscriptions keep working with tracing on.
    ws, statuses = await subscribe(traced_stack.urls["gateway"],
                                   "subscription($id: ID!) { invoiceStatusChanged(id: $id) { status } }",
                                   {"id": invoice["id"]}, token)
    try:
        await asyncio.sleep(0.5)  # let the gateway open its upstream subscription
        stamped = await gateway.ok(STAMP, {"id": invoice["id"], "k": "trace-1"}, token=token)
        assert stamped["stampInvoice"]["invoice"]["status"] == "STAMPING", stamped
        seen = [(await statuses.next())["data"]["invoiceStatusChanged"]["status"]]
        while seen[-1] == "STAMPING":
            seen.append((await statuses.next())["data"]["invoiceStatusChanged"]["status"])
        assert seen == ["STAMPING", "STAMPED"], seen
    finally:
        await ws.close()

    def stamp_trace():
        spans = otlp.snapshot()
        resolver = [s for svc, s in spans if svc == "invoice" and s.name == "GraphQL Resolving: stampInvoice"]
        if len(resolver) != 1:
            return None
        trace = [(svc, s) for svc, s in spans if s.trace_id == resolver[0].trace_id]
        # Complete once the worker's job and PAC spans and the gateway's root span have been
        # exported (the job span ends last: the result is recorded after the PAC answers).
        names = {(svc, s.name) for svc, s in trace}
        if not {("worker", "PAC stamp"), ("worker", "stamp_invoice_job")} <= names or not any(svc == "gateway" and not s.parent_span_id for svc, s in trace):
            return None
        return trace

    async def exported():
        return stamp_trace()

    def seen() -> str:
        return "; spans received: " + ", ".join(sorted({f"{svc}:{s.name}:{s.trace_id.hex()[:6]}" for svc, s in otlp.snapshot()}))

    trace = await _until("the stamp's spans at the receiver", exported, timeout=30, seen=seen)
    by_id = {s.span_id: (svc, s) for svc, s in trace}

    def ancestors(span: Span) -> list[tuple[str, Span]]:
        chain = []
        while span.parent_span_id in by_id:
            svc, span = by_id[span.parent_span_id]
            chain.append((svc, span))
        return chain

    def one(service: str, predicate) -> Span:
        found = [s for svc, s in trace if svc == service and predicate(s)]
        assert found, f"no {service} span matching in {sorted((svc, s.name) for svc, s in trace)}"
        return found[0]

    # The gateway's request span is the trace's root; the invoice subgraph's server span is a
    # child of a gateway span (the traceparent the gateway sent with the subgraph request).
    root = one("gateway", lambda s: not s.parent_span_id)
    server = one("invoice", lambda s: s.kind == Span.SPAN_KIND_SERVER and s.name == "POST /graphql")
    assert by_id[server.parent_span_id][0] == "gateway"
    assert ancestors(server)[-1][1] == root
    # Strawberry's resolver span under that server span, and SQL (SQLAlchemy) under the resolver.
    resolver = one("invoice", lambda s: s.name == "GraphQL Resolving: stampInvoice")
    assert server in [s for _, s in ancestors(resolver)]
    sql = one("invoice", lambda s: s.kind == Span.SPAN_KIND_CLIENT and _attr(s, "db.system") == "postgresql"
              and resolver in [a for _, a in ancestors(s)] and "UPDATE invoice.invoices" in (_attr(s, "db.statement") or ""))
    assert "$1" in _attr(sql, "db.statement") or "%(" in _attr(sql, "db.statement")  # placeholders, never values
    # The worker's job continues the same trace, as a child of the request (through the outbox
    # row's traceparent and the job's keyword), and the PAC call is a child of the job.
    job = one("worker", lambda s: s.name == "stamp_invoice_job")
    assert job.kind == Span.SPAN_KIND_CONSUMER
    assert by_id[job.parent_span_id] == ("invoice", resolver)
    pac = one("worker", lambda s: s.name == "PAC stamp")
    assert pac.parent_span_id == job.span_id and _attr(pac, "pac.operation") == "stamp"
    assert any(svc == "worker" and _attr(s, "db.system") == "postgresql" for svc, s in trace)  # the job's SQL
    # One trace per request: the invoice created before it is another trace.
    assert not [s for _, s in trace if s.name == "GraphQL Resolving: createInvoice"]
    # No argument values recorded by the subgraphs' resolver spans.
    assert not [s for _, s in otlp.snapshot() for a in s.attributes if a.key.startswith("graphql.param.")]


async def test_a_password_written_inline_never_leaves_in_a_span(traced_stack, traced_gateway, otlp):
    secret = "clave-en-linea-" + uuid.uuid4().hex
    login = f'mutation {{ logIn(input: {{email: "nadie@example.mx", password: "{secret}"}}) {{ userErrors {{ code }} }} }}'
    r = await traced_gateway.execute(login)
    assert r.data["logIn"]["userErrors"], r

    async def exported():
        spans = otlp.snapshot()
        resolver = [s for svc, s in spans if svc == "auth" and s.name == "GraphQL Resolving: logIn"]
        gateway = [s for svc, s in spans if svc == "gateway" and "logIn(" in str(_attr(s, "graphql.document"))]
        return resolver and gateway and spans

    spans = await _until("the logIn's spans at the receiver", exported, timeout=30)
    documents = [str(_attr(s, key)) for _, s in spans for key in ("graphql.document", "query") if _attr(s, key)]
    assert any('password: "***"' in d for d in documents), documents  # the gateway's and auth's
    assert secret.encode() not in b"".join(s.SerializeToString() for _, s in spans)
