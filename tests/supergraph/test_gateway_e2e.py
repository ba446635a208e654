"""End to end: the Hive Gateway (supergraph/gateway.sh + gateway.config.mjs) in front of two tiny
Strawberry federation subgraphs (fixtures/gateway_subgraphs.py) with a JWKS we serve ourselves.

Checks subgraph URL overrides from env, federated queries, optional JWT (RS256 + EdDSA; forged,
expired, wrong-audience and HS256 tokens rejected), Authorization / x-request-id forwarding,
security limits, persisted documents, subscriptions over WebSocket (graphql-transport-ws) and SSE,
health endpoints and a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.stack import wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NODE is None or not (ROOT / "supergraph" / "node_modules" / "@graphql-hive" / "gateway").is_dir(),
        reason="node or supergraph/node_modules missing (npm ci --prefix supergraph)",
    ),
]

jwt = pytest.importorskip("jwt")
websockets = pytest.importorskip("websockets")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_keys(path: Path) -> dict:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

    def pem(k) -> str:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not in the JWKS
    pub_rsa = {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa1", "alg": "RS256", "use": "sig"}
    pub_ed = {**json.loads(OKPAlgorithm.to_jwk(ed_key.public_key())), "kid": "ed1", "alg": "EdDSA", "use": "sig"}
    keys = {"public": [pub_rsa, pub_ed], "rsa": pem(rsa_key), "ed": pem(ed_key), "forger": pem(forger)}
    path.write_text(json.dumps(keys))
    return keys


class Stack:
    def __init__(self, url: str, keys: dict, procs: list[subprocess.Popen], gateway: subprocess.Popen, persisted: dict):
        self.url, self.keys, self.procs, self.gateway, self.persisted = url, keys, procs, gateway, persisted

    def token(self, key: str = "rsa", alg: str = "RS256", kid: str = "rsa1", **claims) -> str:
        now = int(time.time())
        body = {"sub": "u1", "iss": "facturacion-auth", "aud": "facturacion-api", "iat": now, "exp": now + 600, **claims}
        secret = self.keys[key] if key in self.keys else key
        return jwt.encode(body, secret, algorithm=alg, headers={"kid": kid})

    def post(self, body: dict, token: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
        h = {"content-type": "application/json", **(headers or {})}
        if token:
            h["authorization"] = f"Bearer {token}"
        r = httpx.post(self.url, json=body, headers=h, timeout=10)
        return r.status_code, r.json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("gateway")
    keys = _make_keys(tmp / "keys.json")
    env = {**os.environ, "GATEWAY_TEST_KEYS": str(tmp / "keys.json"), "PYTHONPATH": str(FIXTURES)}
    for name in ("auth", "notification"):
        sdl = subprocess.run([sys.executable, str(FIXTURES / "gateway_subgraphs.py"), name], env=env,
                             capture_output=True, text=True, check=True).stdout
        (tmp / f"{name}.graphql").write_text(sdl)
    # Routing URLs in the supergraph point nowhere: only the env overrides make it work.
    (tmp / "supergraph.yaml").write_text(
        "federation_version: =2.14.4\nsubgraphs:\n"
        "  auth: {routing_url: 'http://127.0.0.1:9/graphql', schema: {file: auth.graphql}}\n"
        "  notification: {routing_url: 'http://127.0.0.1:9/graphql', schema: {file: notification.graphql}}\n"
    )
    subprocess.run([NODE, str(ROOT / "supergraph" / "compose.mjs"), "--config", str(tmp / "supergraph.yaml"),
                    "--output", str(tmp / "supergraph.graphql"), "--quiet"], check=True, capture_output=True)
    ops = tmp / "operations"
    ops.mkdir()
    (ops / "Me.graphql").write_text("query Me { me { id email } }\n")
    subprocess.run([NODE, str(ROOT / "supergraph" / "persist.mjs"), "--operations", str(ops), "--output",
                    str(tmp / "pd.json"), "--schema", str(tmp / "supergraph.graphql")], check=True, capture_output=True)

    procs: list[subprocess.Popen] = []
    ports = {}
    try:
        for name in ("auth", "notification"):
            ports[name] = _free_port()
            p = subprocess.Popen([sys.executable, "-m", "uvicorn", f"gateway_subgraphs:{name}_app", "--host", "127.0.0.1",
                                  "--port", str(ports[name]), "--log-level", "warning"], env=env, cwd=FIXTURES)
            procs.append(p)
            wait_http_ok(f"http://127.0.0.1:{ports[name]}/.well-known/jwks.json", p)
        gw_port = _free_port()
        gw_env = {
            **os.environ,
            "SUPERGRAPH_PATH": str(tmp / "supergraph.graphql"),
            "GATEWAY_PORT": str(gw_port),
            "AUTH_URL": f"http://127.0.0.1:{ports['auth']}/graphql",
            "NOTIFICATION_URL": f"http://127.0.0.1:{ports['notification']}/graphql",
            "PERSISTED_DOCUMENTS_PATH": str(tmp / "pd.json"),
            "LOG_LEVEL": "warn",
        }
        gw_env.pop("NODE_ENV", None)
        gateway = subprocess.Popen(["sh", str(ROOT / "supergraph" / "gateway.sh")], env=gw_env,
                                   stdout=open(tmp / "gateway.log", "w"), stderr=subprocess.STDOUT)
        procs.append(gateway)
        wait_http_ok(f"http://127.0.0.1:{gw_port}/readiness", gateway)
        st = Stack(f"http://127.0.0.1:{gw_port}/graphql", keys, procs, gateway, json.loads((tmp / "pd.json").read_text()))
        st.gw_env, st.tmp = gw_env, tmp
        yield st
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


Q = "{ me { id email notifications { id message } } unreadCount authSeen notificationSeen }"


def test_health_endpoints(stack: Stack) -> None:
    base = stack.url.removesuffix("/graphql")
    assert httpx.get(f"{base}/healthcheck").status_code == 200
    assert httpx.get(f"{base}/readiness").status_code == 200


def test_anonymous_federated_query_via_env_overrides(stack: Stack) -> None:
    status, body = stack.post({"query": Q})
    assert status == 200, body
    data = body["data"]
    assert data["me"] == {"id": "u1", "email": "u1@example.com", "notifications": [{"id": "n0", "message": "hello"}]}
    seen = json.loads(data["authSeen"])
    assert seen["authorization"] is None
    assert seen["x-request-id"], "the gateway generates an x-request-id when the client sends none"


def test_anonymous_mutation(stack: Stack) -> None:
    status, body = stack.post({"query": 'mutation { logIn(email: "a@b.c", password: "x") }'})
    assert status == 200 and body["data"]["logIn"] == "token-for-a@b.c", body


@pytest.mark.parametrize("key, alg, kid", [("rsa", "RS256", "rsa1"), ("ed", "EdDSA", "ed1")])
def test_valid_token_is_forwarded_with_request_id(stack: Stack, key: str, alg: str, kid: str) -> None:
    token = stack.token(key, alg, kid)
    rid = str(uuid.uuid4())
    status, body = stack.post({"query": Q}, token, {"x-request-id": rid})
    assert status == 200 and body.get("data"), body
    for field in ("authSeen", "notificationSeen"):
        seen = json.loads(body["data"][field])
        assert seen["authorization"] == f"Bearer {token}"
        assert seen["x-request-id"] == rid


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.token("forger"),  # signature by a key that is not in the JWKS
        lambda s: s.token(aud="someone-else"),
        lambda s: s.token(iss="someone-else"),
        lambda s: s.token(exp=int(time.time()) - 3600),
        lambda s: s.token("x" * 32, "HS256"),
    ],
    ids=["forged", "audience", "issuer", "expired", "hs256"],
)
def test_invalid_token_is_rejected(stack: Stack, make) -> None:
    status, body = stack.post({"query": Q}, make(stack))
    assert status == 401, body
    assert not body.get("data")
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_verified_token_is_refused_once_it_expires(stack: Stack) -> None:
    # The gateway remembers tokens it verified (gateway.config.mjs): expiry is still checked on
    # every use. This one expired 26 s ago, inside the 30 s clock tolerance: accepted for ~4 s more.
    token = stack.token("ed", "EdDSA", "ed1", exp=int(time.time()) - 26)
    for _ in range(2):
        status, body = stack.post({"query": Q}, token)
        assert status == 200 and body.get("data"), body
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] + 31 - time.time()))
    status, body = stack.post({"query": Q}, token)
    assert status == 401, body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_malformed_authorization_is_rejected(stack: Stack) -> None:
    status, _ = stack.post({"query": Q}, headers={"authorization": "Basic Zm9vOmJhcg=="})
    assert status == 401


def test_limits(stack: Stack) -> None:
    inner = "id"
    for _ in range(7):
        inner = "notifications { recipient { " + inner + " } }"
    _, body = stack.post({"query": "{ me { " + inner + " } }"})
    assert "depth limit" in json.dumps(body) and "data" not in body
    _, body = stack.post({"query": "{ " + " ".join(f"a{i}: unreadCount" for i in range(31)) + " }"})
    assert "Aliases limit" in json.dumps(body)
    _, body = stack.post({"query": "{ " + " unreadCount" * 2100 + " }"})
    assert "Token limit" in json.dumps(body)
    _, body = stack.post({"query": "{ unreadCont }"})
    assert "Did you mean" not in json.dumps(body)


def test_persisted_documents(stack: Stack) -> None:
    (digest,) = stack.persisted
    status, body = stack.post({"documentId": digest})
    assert status == 200 and body["data"]["me"]["id"] == "u1", body
    status, body = stack.post({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}})
    assert status == 200 and body["data"]["me"]["id"] == "u1", body
    _, body = stack.post({"documentId": "0" * 64})
    assert body.get("errors") and not body.get("data")
    unknown = [e["extensions"]["code"] for e in body["errors"]]
    assert unknown[0].startswith("PERSISTED_QUERY_NOT_"), body  # Hive says _NOT_IN_LIST, the Router _NOT_FOUND
    # Ids that name a property of every JS object are unknown ids too, not a 500.
    for forged in ("__proto__", "constructor", "toString", "sha256:__proto__"):
        status, body = stack.post({"documentId": forged})
        assert status < 500 and [e["extensions"]["code"] for e in body["errors"]] == unknown, body


def test_automatic_persisted_queries(stack: Stack) -> None:
    """APQ by hand: the hash alone is unknown, the document with its sha256 registers it, then the
    hash alone runs it; a wrong hash and a persisted-only client register nothing."""
    import hashlib

    token = stack.token()
    query = f"query Apq{uuid.uuid4().hex[:8]} {{ me {{ id }} }}"
    digest = hashlib.sha256(query.encode()).hexdigest()
    pq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}

    def codes(body: dict) -> list:
        return [e["extensions"]["code"] for e in body.get("errors") or []]

    assert codes(stack.post({"extensions": pq}, token)[1]) == ["PERSISTED_QUERY_NOT_FOUND"]
    ios = {"apollographql-client-name": "ios"}
    assert codes(stack.post({"query": query, "extensions": pq}, token, ios)[1]) == ["PERSISTED_QUERY_ONLY"]
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": "f" * 64}}
    status, body = stack.post({"query": query, "extensions": wrong}, token)
    assert status == 400 and codes(body) == ["PERSISTED_QUERY_MISMATCH"], body
    invalid = "query Broken { me { nope } }"
    broken = {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(invalid.encode()).hexdigest()}}
    assert codes(stack.post({"query": invalid, "extensions": broken}, token)[1]) == ["GRAPHQL_VALIDATION_FAILED"]
    for ext in (pq, wrong, broken):  # nothing registered yet
        assert codes(stack.post({"extensions": ext}, token)[1]) == ["PERSISTED_QUERY_NOT_FOUND"], ext

    status, body = stack.post({"query": query, "extensions": pq}, token)
    assert status == 200 and body["data"]["me"]["id"] == "u1", body
    status, body = stack.post({"extensions": pq}, token)
    assert status == 200 and body["data"]["me"]["id"] == "u1", body
    assert codes(stack.post({"extensions": pq}, token, ios)[1]) == ["PERSISTED_QUERY_NOT_FOUND"]  # safelist only


async def _ws_subscribe(url: str, token: str | None) -> list[dict]:
    return await _ws_messages(url, "subscription { notificationAdded(count: 3) { id message seen recipient { id email } } }",
                              token)


def test_websocket_subscription_anonymous(stack: Stack) -> None:
    msgs = asyncio.run(_ws_subscribe(stack.url, None))
    events = [m["payload"]["data"]["notificationAdded"] for m in msgs if m["type"] == "next"]
    assert [e["message"] for e in events] == ["msg 1", "msg 2", "msg 3"]
    assert events[0]["recipient"] == {"id": "u1", "email": "u1@example.com"}  # entity from the other subgraph


def test_websocket_subscription_forwards_token(stack: Stack) -> None:
    token = stack.token("ed", "EdDSA", "ed1")
    msgs = asyncio.run(_ws_subscribe(stack.url, token))
    events = [m["payload"]["data"]["notificationAdded"] for m in msgs if m["type"] == "next"]
    assert len(events) == 3, msgs
    seen = json.loads(events[0]["seen"])
    assert seen["connection_params"].get("Authorization") == f"Bearer {token}"
    assert seen["authorization"] == f"Bearer {token}"


def test_websocket_subscription_rejects_forged_token(stack: Stack) -> None:
    msgs = asyncio.run(_ws_subscribe(stack.url, stack.token("forger")))
    assert not [m for m in msgs if m["type"] == "next" and m["payload"].get("data")]
    assert "UNAUTHENTICATED" in json.dumps(msgs)


def test_sse_subscription(stack: Stack) -> None:
    with httpx.stream("POST", stack.url, json={"query": "subscription { notificationAdded(count: 2) { id message } }"},
                      headers={"accept": "text/event-stream"}, timeout=10) as r:
        body = "".join(r.iter_text())
    assert r.status_code == 200 and body.count("msg ") == 2, body


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the gateway uses Redis only with REDIS_URL")
def test_a_starting_gateway_serves_its_own_supergraph_not_one_found_in_redis(stack: Stack) -> None:
    """Hive Gateway caches the loaded supergraph under one fixed key and a new instance used to
    serve that before its own file: another stack's schema on a shared Redis, the previous
    release's during a deploy. Seed the key with the product's real supergraph, start a gateway on
    this toy one: it must answer the toy's own fields."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    seed = (ROOT / "schema" / "supergraph.graphql").read_text()
    client.set("hive-gateway:supergraph", seed, ex=60)
    port = _free_port()
    gw = subprocess.Popen(["sh", str(ROOT / "supergraph" / "gateway.sh")], env={**stack.gw_env, "GATEWAY_PORT": str(port)},
                          stdout=open(stack.tmp / "gateway2.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readiness", gw)
        r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ authSeen notificationSeen }"}, timeout=10)
        assert r.status_code == 200 and "errors" not in r.json(), r.text
        assert client.get("hive-gateway:supergraph").decode() == seed  # untouched: never written either
    finally:
        client.delete("hive-gateway:supergraph")
        gw.send_signal(signal.SIGTERM)
        gw.wait(15)


async def _ws_messages(url: str, query: str, token: str | None = None) -> list[dict]:
    async with websockets.connect(url.replace("http", "ws", 1), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"} if token else {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        messages = []
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            messages.append(msg)
            if msg["type"] in ("complete", "error"):
                return messages


def _sse_events(url: str, query: str, token: str | None = None) -> list[dict]:
    headers = {"accept": "text/event-stream", **({"authorization": f"Bearer {token}"} if token else {})}
    with httpx.stream("POST", url, json={"query": query}, headers=headers, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:") and line[5:].strip()]


# How a subgraph ends a subscription with a typed error: refused before its stream exists (the
# graphql-transport-ws `error` message), refused at its first step or ended after two events (the
# error in a `next` payload, then `complete`).
ENDINGS = {
    "refused-error": ("notificationRefused(code: \"FORBIDDEN\")", 0, "Suscripción rechazada (FORBIDDEN).", {"code": "FORBIDDEN"}),
    "refused-next": ("notificationAdded(failAfter: 0, code: \"TOO_MANY_SUBSCRIPTIONS\")", 0,
                     "Suscripción terminada (TOO_MANY_SUBSCRIPTIONS).", {"code": "TOO_MANY_SUBSCRIPTIONS", "limit": 2}),
    "ended-next": ("notificationAdded(failAfter: 2, code: \"STALE_TOKEN\")", 2,
                   "Suscripción terminada (STALE_TOKEN).", {"code": "STALE_TOKEN", "limit": 2}),
}


def _subscription_payloads(stack: Stack, transport: str, query: str, token: bool) -> list[dict]:
    """The payloads one subscription delivers over `transport` ("ws": graphql-transport-ws, which
    must end with `complete`; "sse"), anonymous or with a token."""
    jwt_ = stack.token() if token else None
    if transport == "sse":
        return _sse_events(stack.url, query, jwt_)
    msgs = asyncio.run(_ws_messages(stack.url, query, jwt_))
    assert msgs[-1] == {"id": "1", "type": "complete"}, msgs
    return [m["payload"] for m in msgs if m["type"] == "next"]


@pytest.mark.parametrize("token", [False, True], ids=["anonymous", "token"])  # with a token: shared (subscriptions.mjs)
@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_subscription_errors_from_a_subgraph_reach_the_client(stack: Stack, transport: str, ending: str, token: bool) -> None:
    """The client gets the subgraph's message and extensions (not the masked INTERNAL_SERVER_ERROR
    "Unexpected error."), after the events sent before it, then the end of the stream."""
    field, events, message, extensions = ENDINGS[ending]
    query = f"subscription {{ {field} {{ id message }} }}"
    payloads = _subscription_payloads(stack, transport, query, token)
    assert len(payloads) == events + 1, payloads
    assert all(p["data"] and "errors" not in p for p in payloads[:-1]), payloads
    root = field.split("(")[0]
    assert payloads[-1]["errors"] == [{"message": message, "path": [root],
                                       "extensions": {**extensions, "serviceName": "notification"}}], payloads


@pytest.mark.parametrize("token", [False, True], ids=["anonymous", "token"])
@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_untyped_subscription_failures_stay_masked(stack: Stack, transport: str, token: bool) -> None:
    """What no subgraph sent as a GraphQL error (here: the subgraph drops the gateway's socket)
    reaches the client as the masked INTERNAL_SERVER_ERROR "Unexpected error.", nothing of the
    failure itself (it used to arrive as an error without a message)."""
    query = "subscription { notificationBroken { id } }"
    payloads = _subscription_payloads(stack, transport, query, token)
    [payload] = payloads
    [error] = payload["errors"]
    assert error["message"] == "Unexpected error." and error["extensions"]["code"] == "INTERNAL_SERVER_ERROR", payload
    assert "4500" not in json.dumps(payload) and "WebSocket" not in json.dumps(payload), payload


def test_zz_gateway_exits_cleanly_on_sigterm(stack: Stack) -> None:
    stack.gateway.send_signal(signal.SIGTERM)
    assert stack.gateway.wait(15) == 0
