"""uploadCsd against hostile files: typed errors before any costly work, and the costly work (key
decryption, certificate checks) done off the event loop with no row locked meanwhile."""

from __future__ import annotations

import base64
import threading
import uuid

import psycopg2

from shared.config import to_plain_url
from sat import cfdi
from tests.cfdi.hostile_keys import claiming
from tests.cfdi.test_csd_hostile import _forge
from tests.invoice.conftest import CSD_DIR, CSD_PASSWORD, ISSUER, SAVE_ISSUER, UPLOAD_CSD, csd_files


async def _issuer(api, sign_up):
    account = await sign_up("Kemper")
    out = (await api.ok(SAVE_ISSUER, {"i": ISSUER}, token=account.token))["saveIssuer"]
    assert out["userErrors"] == []
    return account


async def _upload(api, account, cer: str, key: str, password: str = CSD_PASSWORD) -> dict:
    return (await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": password}, token=account.token))["uploadCsd"]


async def test_key_claiming_millions_of_iterations_is_refused_with_a_typed_error(api, sign_up):
    account = await _issuer(api, sign_up)
    cer, _ = csd_files()
    out = await _upload(api, account, cer, base64.b64encode(claiming(30_000_000)).decode(), "cualquiera")
    assert out["certificate"] is None
    assert out["userErrors"][0]["code"] == "CSD_KEY_UNSUPPORTED"
    assert out["userErrors"][0]["field"] == ["privateKey"]


async def test_self_signed_certificate_is_refused(api, sign_up):
    account = await _issuer(api, sign_up)
    _, key = csd_files()
    out = await _upload(api, account, base64.b64encode(_forge()).decode(), key)
    assert out["certificate"] is None
    assert [(e["code"], e["field"]) for e in out["userErrors"]] == [("CSD_NOT_ISSUED_BY_SAT", ["certificate"])]


async def test_key_is_opened_off_the_event_loop_with_the_issuer_row_unlocked(api, sign_up, runtime, monkeypatch):
    account = await _issuer(api, sign_up)
    org = uuid.UUID(account.org_id)
    seen: dict = {}
    real = cfdi.load_csd

    def spy(*args, **kwargs):
        seen["thread"] = threading.current_thread()
        # Another session may lock the issuer row while the key is being decrypted: nothing of
        # ours holds it. (The old code decrypted inside the transaction that locked it.)
        with psycopg2.connect(to_plain_url(runtime.settings.database_url)) as conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '1ms'")
            try:
                cur.execute("SELECT 1 FROM invoice.issuers WHERE organization_id = %s FOR UPDATE NOWAIT",
                            (str(org),))
                seen["locked_by_us"] = False
            except psycopg2.errors.LockNotAvailable:
                seen["locked_by_us"] = True
        return real(*args, **kwargs)

    monkeypatch.setattr(cfdi, "load_csd", spy)
    cer, key = csd_files()
    out = await _upload(api, account, cer, key)
    assert out["userErrors"] == [] and out["certificate"]["active"] is True
    assert seen["thread"] is not threading.main_thread()
    assert seen["locked_by_us"] is False


async def test_stamping_loads_the_stored_key_off_the_event_loop(org, job_ctx, monkeypatch):
    from subgraphs.invoice.service import issuer, stamping
    from workers.stamping import stamp_invoice_job

    threads = []
    real = stamping.open_csd

    def spy(row, settings):
        threads.append(threading.current_thread())
        return real(row, settings)

    monkeypatch.setattr(stamping, "open_csd", spy)
    issuer._open_csds.clear()  # a cache miss: unsealing and parsing the key, in the worker thread
    inv = await org.create_invoice()
    await org.stamp(inv["id"])
    assert await stamp_invoice_job(job_ctx, inv["id"]) == "STAMPED"
    assert threads and all(t is not threading.main_thread() for t in threads)
