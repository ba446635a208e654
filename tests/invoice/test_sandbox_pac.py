"""The sandbox PAC refuses what a real PAC refuses and answers a repeated CFDI with its timbre."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from sat.cfdi import build_tree, compute_totals, load_csd, sign_cfdi, to_bytes, verify_cfdi
from sat.cfdi.rules import place_timezone
from sat.pac import PacError
from sat.pac.sandbox import PAC_RFC, SandboxPac, certificate_lookup
from tests.cfdi.conftest import CSD_DIR, make_invoice
from tests.invoice.conftest import CSD_PASSWORD, pac_env


def _csd():
    return load_csd((CSD_DIR / "eku9003173c9_csd_2023.cer").read_bytes(),
                    (CSD_DIR / "eku9003173c9_csd_2023.key").read_bytes(), CSD_PASSWORD)


def _sealed(**overrides) -> bytes:
    now = datetime.now(place_timezone("42501")).replace(tzinfo=None, microsecond=0)
    inv = compute_totals(replace(make_invoice(issued_at=now, folio=str(uuid.uuid4().int % 10**9)), **overrides))
    tree = build_tree(inv)
    sign_cfdi(tree, _csd())
    return to_bytes(tree)


async def test_stamps_and_repeats_the_same_timbre(runtime):
    pac = SandboxPac(runtime.redis)
    xml = _sealed()
    first = await pac.stamp(xml)
    assert first.uuid == first.uuid.upper() and uuid.UUID(first.uuid).version == 4
    assert verify_cfdi(first.xml, certificate_lookup).ok
    assert f'RfcProvCertif="{PAC_RFC}"' in first.xml.decode()
    again = await pac.stamp(xml)
    assert again.previously_stamped and again.uuid == first.uuid and again.xml == first.xml
    assert await pac.status(first.uuid) == "ACTIVE"


async def test_refuses_a_tampered_seal_and_an_old_date(runtime):
    pac = SandboxPac(runtime.redis)
    tampered = _sealed().replace(b'Descripcion="Servicio', b'Descripcion="Xervicio')
    with pytest.raises(PacError) as exc:
        await pac.stamp(tampered)
    assert exc.value.code == "302" and not exc.value.transient
    old = datetime.now(place_timezone("42501")).replace(tzinfo=None, microsecond=0) - timedelta(hours=73)
    with pytest.raises(PacError) as exc:
        await pac.stamp(_sealed(issued_at=old))
    assert exc.value.code == "401"
    with pytest.raises(PacError) as exc:
        await pac.stamp(b"<no-es-xml")
    assert exc.value.code == "301"


async def test_injected_failures(runtime):
    pac = SandboxPac(runtime.redis)
    xml = _sealed()
    with pac_env(PAC_SANDBOX_FAIL="5xx", PAC_SANDBOX_FAIL_MODE="once", PAC_SANDBOX_LATENCY_MS="20"):
        with pytest.raises(PacError) as exc:
            await pac.stamp(xml)
        assert exc.value.transient and exc.value.code == "PAC_UNAVAILABLE"
        assert (await pac.stamp(xml)).uuid
    with pac_env(PAC_SANDBOX_FAIL="reject:CFDI40102"):
        with pytest.raises(PacError) as exc:
            await pac.stamp(_sealed())
        assert exc.value.code == "CFDI40102" and not exc.value.transient


async def test_its_cpu_runs_off_the_event_loop_and_calls_run_concurrently(runtime, monkeypatch):
    """A remote PAC's CPU is not the worker's: parsing, checks and the TFD's signature run in a
    thread, and two calls (two CFDIs, two requests) are in there at the same time."""
    import threading

    from sat.pac import sandbox

    seen: list[int] = []
    both_inside = threading.Barrier(2, timeout=10)  # broken (test fails) if the calls run one after the other
    real = sandbox.check_stampable

    def recording(root, now):
        seen.append(threading.get_ident())
        both_inside.wait()
        return real(root, now)

    monkeypatch.setattr(sandbox, "check_stampable", recording)
    pac = SandboxPac(runtime.redis)
    first, second = await asyncio.gather(pac.stamp(_sealed()), pac.stamp(_sealed()))
    assert first.uuid != second.uuid and not first.previously_stamped and not second.previously_stamped
    assert len(seen) == 2 and threading.get_ident() not in seen


async def test_one_redis_round_trip_per_timbre(runtime, monkeypatch):
    pac = SandboxPac(runtime.redis)
    calls: list[str] = []
    real = runtime.redis.execute_command

    async def counting(*args, **kw):
        calls.append(str(args[0]))
        return await real(*args, **kw)

    monkeypatch.setattr(runtime.redis, "execute_command", counting)
    xml = _sealed()
    first = await pac.stamp(xml)
    assert calls == ["EVALSHA"] or calls == ["EVAL"]
    calls.clear()
    again = await pac.stamp(xml)  # the same CFDI: its timbre comes back in the same one round trip
    assert again.previously_stamped and (again.uuid, again.xml) == (first.uuid, first.xml)
    assert len(calls) == 1


async def test_a_stamped_cfdi_refused_now_still_gets_its_timbre_back(runtime, monkeypatch):
    """E.g. asked again past the 72-hour window: a PAC answers with the timbre it issued."""
    from sat.pac import sandbox

    pac = SandboxPac(runtime.redis)
    xml = _sealed()
    first = await pac.stamp(xml)

    def too_late(root, now):
        raise PacError("401", "El rango de la fecha de generación no debe ser mayor a 72 horas.")

    monkeypatch.setattr(sandbox, "check_stampable", too_late)
    again = await pac.stamp(xml)
    assert again.previously_stamped and again.uuid == first.uuid
    with pytest.raises(PacError) as exc:  # never stamped: the refusal
        await pac.stamp(_sealed())
    assert exc.value.code == "401"


async def test_reads_an_issuers_certificate_once_and_still_refuses_a_bad_or_foreign_one(runtime, monkeypatch):
    from sat.pac import sandbox

    sandbox._issuer_certificate.cache_clear()
    xmls = [_sealed() for _ in range(3)]  # sealing reads certificates too, as does the TFD signer: before counting
    sandbox.signer()
    loads: list[int] = []
    real = sandbox.x509.load_der_x509_certificate

    def counting(data):
        loads.append(1)
        return real(data)

    monkeypatch.setattr(sandbox.x509, "load_der_x509_certificate", counting)
    pac = SandboxPac(runtime.redis)
    for xml in xmls:
        assert (await pac.stamp(xml)).uuid
    assert len(loads) == 1  # the issuer's CFDIs all carry the same certificate
    xml = _sealed()
    at = xml.index(b' Certificado="') + len(b' Certificado="')
    bad = xml[:at] + b"AAAAAAAA" + xml[at + 8:]  # still base64, no longer a certificate
    with pytest.raises(PacError) as exc:
        await pac.stamp(bad)
    assert exc.value.code == "303"
    now = datetime.now(place_timezone("42501")).replace(tzinfo=None, microsecond=0)
    tree = build_tree(compute_totals(make_invoice(issued_at=now, folio=str(uuid.uuid4().int % 10**9))))
    sign_cfdi(tree, sandbox.signer())  # another RFC's CSD
    with pytest.raises(PacError) as exc:
        await pac.stamp(to_bytes(tree))
    assert exc.value.code == "303" and "RFC" in exc.value.message
