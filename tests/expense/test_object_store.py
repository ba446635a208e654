"""The receipts' object store: local filesystem by default, an S3-compatible server by
configuration (a real one here: moto's HTTP server on loopback). A store that fails is a 503 the
client may retry, with nothing recorded and no credential in the logs."""

from __future__ import annotations

import logging

import pytest

from shared.config import SettingsError, load_settings
from shared.object_store import LocalStore, ObjectStoreError, S3Store, receipts_store
from tests.conftest import in_process_jwks_runtime_factory, running_app
from tests.expense.conftest import S3_BUCKET, S3_KEY_ID, S3_SECRET, s3_settings
from tests.expense.test_receipts import jpeg, path_of

REQUEST = """mutation($id: ID!, $s: Int!) { requestReceiptUpload(expenseId: $id, contentType: "image/jpeg", size: $s) {
  receiptId uploadUrl userErrors { code } } }"""
CREATE = "mutation { createExpense(input: {amount: \"10.00\", date: \"2026-11-20\", paymentMethod: CASH}) { expense { id } } }"
DOWNLOAD = "query($id: ID!) { expense(id: $id) { receipts { downloadUrl } } }"


def test_local_is_the_default_and_s3_needs_a_bucket(settings):
    assert isinstance(receipts_store(settings), LocalStore)
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        load_settings(database_url=settings.database_url, redis_url=settings.redis_url, receipts_store="s3")
    cfg = load_settings(database_url=settings.database_url, redis_url=settings.redis_url, receipts_store="s3",
                        s3_bucket="b", s3_secret_access_key=S3_SECRET)
    assert S3_SECRET not in repr(cfg) and S3_SECRET not in str(cfg.model_dump())


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_both_backends_keep_bytes_and_say_none_for_a_missing_key(backend, tmp_path, s3_endpoint):
    store = LocalStore(tmp_path) if backend == "local" else S3Store(
        S3_BUCKET, endpoint_url=s3_endpoint, access_key_id=S3_KEY_ID, secret_access_key=S3_SECRET)
    store.put("org/exp/a", b"\x00bytes\xff")
    store.put("org/exp/a", b"again")  # overwrite is whole
    assert store.get("org/exp/a") == b"again"
    assert store.get("org/exp/missing") is None


def test_one_s3_client_per_configuration(settings, s3_endpoint):
    cfg = s3_settings(settings, s3_endpoint)
    assert receipts_store(cfg) is receipts_store(cfg.model_copy())


async def test_a_failing_store_is_a_503_with_nothing_recorded_and_no_secret_logged(
        team, expense_http, settings, auth_http, s3_endpoint, s3_expense_http, caplog):
    from subgraphs.expense.app import create_app

    # Misconfigured: the bucket does not exist (S3 answers NoSuchBucket).
    broken = create_app(s3_settings(settings, s3_endpoint, bucket="no-such-bucket"),
                        runtime_factory=in_process_jwks_runtime_factory(auth_http))
    e = (await team.ok(team.member, CREATE))["createExpense"]["expense"]
    image = jpeg()
    up = (await team.ok(team.member, REQUEST, {"id": e["id"], "s": len(image)}))["requestReceiptUpload"]
    caplog.set_level(logging.DEBUG)
    async with running_app(broken) as broken_http:
        r = await broken_http.put(path_of(up["uploadUrl"]), content=image)
        assert r.status_code == 503 and r.json()["code"] == "STORE_UNAVAILABLE"
        # Nothing was recorded: the same link works once the store is right.
        assert (await s3_expense_http.put(path_of(up["uploadUrl"]), content=image)).status_code == 201
        [rec] = (await team.ok(team.member, DOWNLOAD, {"id": e["id"]}))["expense"]["receipts"]
        got = await broken_http.get(path_of(rec["downloadUrl"]))
        assert got.status_code == 503 and got.json()["code"] == "STORE_UNAVAILABLE"
    assert (await s3_expense_http.get(path_of(rec["downloadUrl"]))).content == image
    assert "NoSuchBucket" in caplog.text and S3_SECRET not in caplog.text
