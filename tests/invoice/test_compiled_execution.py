"""The invoice subgraph answers the same JSON on the compiled path (shared/compiled.py) as on the
generic executor: every persisted operation that the invoice subgraph can answer, and random
valid queries over its schema, errors and nulls included."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from shared import compiled
from subgraphs.invoice.schema import schema as invoice_schema
from tests.compiled_diff import assert_persisted_queries_match, both_paths

MISSING = "00000000-0000-4000-8000-000000000000"


async def _both(org, query: str, variables: dict) -> tuple[dict, dict]:
    return await both_paths(org.execute, query, variables)


@pytest.fixture
async def invoices(org):
    ids = [(await org.create_invoice())["id"] for _ in range(3)]
    ids.append((await org.create_invoice(concepts=[{"productCode": "84111506", "quantity": "2", "unitCode": "E48",
                                                    "description": "Otro", "unitPrice": "10.00", "taxObject": "01"}],
                                         paymentMethod="PPD", paymentForm="99"))["id"])
    return ids


async def test_persisted_operations_match(org, invoices):
    before = compiled.stats["compiled"]
    names = await assert_persisted_queries_match(invoice_schema, org.execute, [
        {"id": invoices[0], "first": 2, "uuid": "X", "year": 2026},
        {"id": MISSING, "first": 500, "after": "not-a-cursor", "uuid": "", "year": 1},
        {"id": "not-an-id", "first": 0, "filter": {"status": "DRAFT", "search": "XENON"}},
    ])
    assert {"Invoices", "Invoice", "McpInvoicesSearch"} <= set(names), names
    assert compiled.stats["compiled"] > before


INVOICE_LEAVES = ["id", "type", "status", "series", "folio", "customerRfc", "customerName", "currency", "exchangeRate",
                  "subtotal", "discount", "totalTaxesTransferred", "totalTaxesWithheld", "total", "paymentForm",
                  "paymentMethod", "cfdiUse", "issuedAt", "uuid", "stampedAt", "satCertificateNumber", "pacCode",
                  "pacMessage", "cancellationReason", "replacementUuid", "createdAt", "xml", "__typename"]
INVOICE_OBJECTS = ["customer { id rfc legalName taxRegime postalCode cfdiUse email products { productCode unitPrice } }",
                   "concepts { productCode quantity unitPrice discount taxObject taxes { tax factorType rate base withholding } }",
                   "history { fromStatus toStatus reason actor { id } }", "issues { code field message }",
                   "createdBy { id }", "organization { id }", "downloadUrls { xml }"]


@st.composite
def invoice_selection(draw):
    picks = draw(st.lists(st.sampled_from(INVOICE_LEAVES + INVOICE_OBJECTS), min_size=1, max_size=8))
    return " ".join(f"{draw(st.sampled_from(['', f'a{i}: ']))}{p}" for i, p in enumerate(picks))


@st.composite
def invoice_query(draw):
    sel = draw(invoice_selection())
    root = draw(st.sampled_from([
        "invoices(first: {n}) {{ edges {{ cursor node {{ {sel} }} }} pageInfo {{ hasNextPage endCursor }} }}",
        "invoices(first: {n}, filter: {{status: DRAFT}}) {{ nodes {{ {sel} }} }}",
        "invoice(id: $id) {{ {sel} }}",
        "invoice(id: \"nope\") {{ {sel} }}",
        "_entities(representations: [{{__typename: \"Invoice\", id: $id}}]) {{ ... on Invoice {{ {sel} }} }}",
    ]))
    n = draw(st.sampled_from([0, 1, 3, 50, -1, 101]))
    extra = draw(st.sampled_from(["", "customers(first: 2) { nodes { id rfc } }", "issuer { rfc legalName }", "__typename"]))
    body = "r: %s %s" % (root.format(n=n, sel=sel), extra)
    return ("query($id: ID!) { %s }" if "$id" in body else "query { %s }") % body


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=invoice_query())
async def test_random_queries_match(org, invoices, q):
    generic, fast = await _both(org, q, {"id": invoices[-1]} if "$id" in q else {})
    assert generic == fast, q
    # Valid by construction: the comparison is about execution, not validation.
    assert all(e.get("extensions", {}).get("code") != "GRAPHQL_VALIDATION_FAILED" for e in generic["errors"] or []), generic
