"""Garbled or hostile input never reaches a 500 (the masked internal error) and writes nothing."""

from __future__ import annotations

import pytest

from tests.invoice.conftest import CREATE_CUSTOMER, CREATE_INVOICE, STAMP, UPLOAD_CSD, concept

INTERNAL = "Error interno del servidor."


def _no_internal_error(result) -> None:
    for e in result.errors or []:
        assert e["message"] != INTERNAL, result.errors


@pytest.mark.parametrize("bad", [
    {"quantity": "abc"}, {"quantity": "-1"}, {"quantity": "0"}, {"unitPrice": "1e400"}, {"unitPrice": "NaN"},
    {"unitPrice": "-5"}, {"productCode": "<script>"}, {"unitCode": ""}, {"description": ""},
    {"taxObject": "99"}, {"taxes": [{"tax": "002", "factorType": "Tasa", "rate": "abc"}]},
    {"taxes": [{"tax": "999", "factorType": "Cuota", "rate": "0.16"}]}, {"discount": "5000"},
])
async def test_bad_concepts_are_typed_errors(org, bad):
    r = await org.execute(CREATE_INVOICE, {"i": {"customerId": org.customer_id, "paymentForm": "03", "paymentMethod": "PUE",
                                                 "concepts": [{**concept(), **bad}]}})
    _no_internal_error(r)
    if r.data:
        out = r.data["createInvoice"]
        # Either refused with a field path, or saved as a draft whose SAT issues say what is wrong.
        assert out["userErrors"] or out["issues"], out
        for e in out["userErrors"]:
            assert e["field"] and e["code"]


@pytest.mark.parametrize("bad", [
    {"customerId": "not-a-uuid"}, {"customerId": "00000000-0000-0000-0000-000000000000"}, {"concepts": []},
    {"paymentForm": "ZZ"}, {"paymentMethod": "XYZ"}, {"currency": "XYZ"}, {"currency": "USD"},
])
async def test_bad_invoice_headers_are_typed_errors(org, bad):
    r = await org.execute(CREATE_INVOICE, {"i": {"customerId": org.customer_id, "paymentForm": "03", "paymentMethod": "PUE",
                                                 "concepts": [concept()], **bad}})
    _no_internal_error(r)
    if r.data:
        out = r.data["createInvoice"]
        assert out["userErrors"] or out["issues"], out


@pytest.mark.parametrize("invoice_id", ["nope", "00000000-0000-0000-0000-000000000000", "' OR 1=1 --"])
async def test_stamping_unknown_or_garbage_ids_is_typed(org, invoice_id):
    r = await org.execute(STAMP, {"id": invoice_id, "k": "x"})
    _no_internal_error(r)
    assert r.errors or r.data["stampInvoice"]["userErrors"]


@pytest.mark.parametrize("cer,key", [("%%%", "%%%"), ("aGVsbG8=", "aGVsbG8="), ("", "")])
async def test_garbage_csd_upload_is_typed(org, cer, key):
    r = await org.execute(UPLOAD_CSD, {"c": cer, "k": key, "p": "x"})
    _no_internal_error(r)
    assert r.data["uploadCsd"]["userErrors"] and r.data["uploadCsd"]["certificate"] is None


@pytest.mark.parametrize("rfc", ["", "ABC", "XIA190128J6!", "X" * 200])
async def test_bad_customer_rfc_is_typed(org, rfc):
    r = await org.execute(CREATE_CUSTOMER, {"i": {"rfc": rfc, "legalName": "X", "taxRegime": "601", "postalCode": "76343",
                                                  "cfdiUse": "G03"}})
    _no_internal_error(r)
    assert r.data["createCustomer"]["userErrors"]


@pytest.mark.parametrize("query", [
    "query($a: String) { invoices(first: 5, after: $a) { edges { node { id } } } }",
    "query($a: String) { customers(first: 5, after: $a) { edges { node { id } } } }",
])
async def test_forged_cursors_are_typed(org, query):
    from shared.pagination import encode_cursor

    r = await org.execute(query, {"a": encode_cursor(["x", "y"])})
    _no_internal_error(r)
    assert r.error_codes == ["INVALID_CURSOR"]
