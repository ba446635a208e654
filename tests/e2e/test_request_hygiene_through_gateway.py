"""Request hygiene at the edge (supergraph/hygiene.mjs and the persisted-document lookup):
only JSON POSTs execute (no CSRF through forms or text/plain), GET never mutates, bodies are
bounded, and an unknown or prototype-named documentId is PERSISTED_QUERY_NOT_FOUND."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.e2e
MUTATION = 'mutation { logIn(input: {email: "csrf@ejemplo.mx", password: "no-importa-nada"}) { __typename } }'


@pytest.fixture
async def http(stack):
    async with httpx.AsyncClient(base_url=stack.urls["gateway"], timeout=30) as client:
        yield client


@pytest.mark.parametrize("content_type, body", [
    ("application/x-www-form-urlencoded", "query=" + MUTATION),
    ("text/plain", json.dumps({"query": MUTATION})),
    ("multipart/form-data; boundary=x", f'--x\r\nContent-Disposition: form-data; name="query"\r\n\r\n{MUTATION}\r\n--x--\r\n'),
    ("application/graphql", MUTATION),
])
async def test_posts_that_a_foreign_page_can_send_never_execute(http, content_type, body):
    r = await http.post("/graphql", content=body, headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    assert r.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
async def test_json_posts_execute(http, accept):
    r = await http.post("/graphql", content=json.dumps({"query": "{ __typename }"}),
                        headers={"content-type": "application/json; charset=utf-8", "accept": accept})
    assert r.status_code == 200 and r.json()["data"] == {"__typename": "Query"}, r.text
    assert r.headers["content-type"].startswith(accept)


async def test_get_runs_queries_but_never_mutations(http):
    assert (await http.get("/graphql", params={"query": "{ __typename }"})).json()["data"] == {"__typename": "Query"}
    r = await http.get("/graphql", params={"query": MUTATION})
    assert r.status_code == 405, r.text


async def test_oversized_body_is_refused_before_parsing(http):
    body = json.dumps({"query": "{ __typename }", "variables": {"x": "a" * 2_100_000}})
    r = await http.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


@pytest.mark.parametrize("document_id", ["__proto__", "constructor", "toString", "sha256:" + "0" * 64, "nope"])
async def test_unknown_document_ids_are_not_found(http, document_id):
    r = await http.post("/graphql", json={"documentId": document_id})
    codes = [e.get("extensions", {}).get("code") for e in r.json()["errors"]]
    assert codes == ["PERSISTED_QUERY_NOT_FOUND"], r.text


@pytest.mark.parametrize("header", ["apollographql-client-name", "x-client-name"])
async def test_mobile_clients_send_only_persisted_documents(http, header):
    from tests.e2e.conftest import ROOT

    persisted = json.loads((ROOT / "supergraph" / "persisted-documents.json").read_text())
    doc_id, document = next((k, v) for k, v in persisted.items() if v.startswith("query ") and "$" not in v.split("{")[0])
    ios = {header: "iOS"}
    refused = await http.post("/graphql", json={"query": document}, headers=ios)
    assert [e["extensions"]["code"] for e in refused.json()["errors"]] == ["PERSISTED_QUERY_ONLY"], refused.text
    by_id = await http.post("/graphql", json={"documentId": doc_id}, headers=ios)
    assert "PERSISTED_QUERY_ONLY" not in by_id.text, by_id.text
    web = await http.post("/graphql", json={"query": "{ __typename }"}, headers={header: "web"})
    assert web.json()["data"] == {"__typename": "Query"}, web.text
