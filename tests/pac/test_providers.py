"""What is particular to each provider: Finkok's quick_stamp/stamped/get_receipt/query_pending and
its 307 without the timbre; SW's user/password tokens, cancel by XML and customid; the SAT status
expression; and the error-code tables (temporary vs permanent)."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from shared.embedded import free_port
from sat import cfdi
from sat.pac import finkok, swsapien
from sat.pac.base import PacError
from sat.pac.sat_status import CfdiStatus, SatStatusService, expression
from sat.pac.transport import PacInDoubt, Timeouts, send

from .conftest import SIM_TIMEOUTS, build_adapter


@pytest.fixture
async def fk(sims, csd_issuer):
    pac = build_adapter("finkok", "sim", csd_issuer, sims)
    yield pac
    await pac.aclose()


@pytest.fixture
async def sw(sims, csd_issuer):
    pac = build_adapter("swsapien", "sim", csd_issuer, sims)
    yield pac
    await pac.aclose()


# --- Finkok -----------------------------------------------------------------------------------

async def test_finkok_307_without_the_timbre_is_recovered_with_stamped(fk, sims, new_cfdi):
    xml = new_cfdi()
    first = await fk.stamp(xml)
    sims.finkok_faults.quirks.add("omit_previous_xml")
    again = await fk.stamp(xml)
    assert again.uuid == first.uuid and again.previously_stamped
    assert sims.finkok_faults.calls.get("stamped", 0) >= 1


async def test_finkok_quick_stamp_and_stamped(fk, new_cfdi):
    xml = new_cfdi()
    assert await fk.stamped(xml) is None  # 603: never stamped
    quick = await fk.quick_stamp(xml)
    assert (await fk.stamped(xml)).uuid == quick.uuid
    assert (await fk.quick_stamp(xml)).uuid == quick.uuid  # 307 without xml → stamped


async def test_finkok_query_pending_and_receipt(fk, new_cfdi):
    stamped = await fk.stamp(new_cfdi())
    pending = await fk.query_pending(stamped.uuid)
    assert pending.uuid == stamped.uuid and pending.status == "F" and pending.xml == stamped.xml
    with pytest.raises(PacError) as caught:
        await fk.get_receipt(stamped.uuid, "EKU9003173C9")
    assert caught.value.code == "RECEIPT_NOT_FOUND"
    await fk.cancel(stamped.uuid, "EKU9003173C9", "02", None)
    assert stamped.uuid.encode() in await fk.get_receipt(stamped.uuid, "EKU9003173C9")


async def test_finkok_own_sat_status_matches_sat(fk, new_cfdi):
    stamped = await fk.stamp(new_cfdi())
    total = cfdi.parse_cfdi(stamped.xml).total
    status = await fk.sat_status(stamped.uuid, "EKU9003173C9", "XIA190128J61", total)
    assert status.state == "Vigente" and status.lifecycle == "ACTIVE"


async def test_finkok_wrong_password_is_permanent(sims, new_cfdi):
    pac = finkok.FinkokPac(finkok.FinkokAccount("sim@example.com", "wrong"), url=sims.finkok.url,
                           timeouts=SIM_TIMEOUTS)
    with pytest.raises(PacError) as caught:
        await pac.stamp(new_cfdi())
    await pac.aclose()
    assert caught.value.code == "300" and not caught.value.transient


def test_finkok_codes():
    assert finkok._error(finkok.STAMP_CODES, "708").transient
    assert not finkok._error(finkok.STAMP_CODES, "302").transient
    cfdi_code = finkok._error(finkok.STAMP_CODES, "CFDI40108", "El TipoDeComprobante no es válido")
    assert cfdi_code.message == "El TipoDeComprobante no es válido" and not cfdi_code.transient
    assert finkok.cancel_outcome("Cancelado sin aceptación") == "CANCELLED"
    assert finkok.cancel_outcome("En proceso") == "PENDING"
    assert finkok.cancel_outcome("Solicitud rechazada") == "REJECTED"


# --- SW Sapien --------------------------------------------------------------------------------

async def test_sw_user_password_gets_a_token_and_stamps(sims, new_cfdi):
    pac = swsapien.SwSapienPac(swsapien.SwAccount(user="sim-user", password="Sim-Password-2"), url=sims.sw.url,
                               timeouts=SIM_TIMEOUTS)
    result = await pac.stamp(new_cfdi())
    pac._token = "expired-token"  # the 2-hour token died early: one 401, renewed, retried
    again = await pac.stamp(new_cfdi())
    await pac.aclose()
    assert again.uuid != result.uuid and pac._token != "expired-token"


async def test_sw_bad_credentials_are_permanent(sims, new_cfdi):
    pac = swsapien.SwSapienPac(swsapien.SwAccount(user="sim-user", password="nope"), url=sims.sw.url,
                               timeouts=SIM_TIMEOUTS)
    with pytest.raises(PacError) as caught:
        await pac.stamp(new_cfdi())
    await pac.aclose()
    assert caught.value.code == "AU2000" and not caught.value.transient


async def test_sw_customid_reused_for_another_cfdi_is_refused(sw, new_cfdi):
    await sw.stamp(new_cfdi(), idempotency_key="sw-reused-key")
    with pytest.raises(PacError) as caught:
        await sw.stamp(new_cfdi(), idempotency_key="sw-reused-key")
    assert caught.value.code == "SWCUSTOMID" and not caught.value.transient


async def test_sw_cancel_by_signed_xml(sw, new_cfdi):
    stamped = await sw.stamp(new_cfdi())
    request = (f'<Cancelacion xmlns="http://cancelacfd.sat.gob.mx" Fecha="2026-01-01T00:00:00" RfcEmisor="EKU9003173C9">'
               f'<Folios><Folio UUID="{stamped.uuid}" Motivo="02" FolioSustitucion=""/></Folios>'
               f'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/></Cancelacion>').encode()
    assert (await sw.cancel_xml(request, stamped.uuid, "EKU9003173C9")).status == "PENDING"  # no SAT to ask
    unsigned = request.replace(b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/>', b"")
    with pytest.raises(PacError):
        await sw.cancel_xml(unsigned, stamped.uuid, "EKU9003173C9")


def test_sw_codes():
    assert swsapien.error_from({"message": "CFDI40108 - El TipoDeComprobante no es válido"}).code == "CFDI40108"
    assert swsapien.error_from({"message": "307. El comprobante contiene un timbre previo."}).code == "307"
    assert swsapien.error_from({"message": "AU4101 - El token proporcionado viene vacio."}).code == "AU4101"
    assert swsapien.error_from({"message": "CASD - sin conexión"}).transient
    unknown = swsapien.error_from({"message": "Algo raro"})
    assert not unknown.transient and unknown.message == "Algo raro"


# --- SAT status and transport ----------------------------------------------------------------

def test_sat_expression_follows_anexo_20():
    expr = expression("5fb2822e-396d-4725-8521-cdc4bdd20ccf", "eku9003173c9", "XIA190128J61", Decimal("2864.1800"),
                      "…ABCDEFGH")
    assert expr.endswith("?id=5FB2822E-396D-4725-8521-CDC4BDD20CCF&re=EKU9003173C9&rr=XIA190128J61"
                         "&tt=2864.18&fe=ABCDEFGH")
    assert "&tt=100.0&" in expression("u", "a", "b", Decimal("100"), "12345678") + "&"


@pytest.mark.parametrize("state, cancellation, lifecycle", [
    ("Vigente", "", "ACTIVE"), ("Vigente", "En proceso", "PENDING"), ("Cancelado", "Cancelado con aceptación",
    "CANCELLED"), ("Vigente", "Solicitud rechazada", "REJECTED"), ("No Encontrado", "", "NOT_FOUND")])
def test_sat_status_vocabulary(state, cancellation, lifecycle):
    code = "N - 602: Comprobante no encontrado." if state == "No Encontrado" else "S - Comprobante obtenido"
    assert CfdiStatus(code, state, "Cancelable con aceptación", cancellation).lifecycle == lifecycle


async def test_sat_status_service_reads_the_simulator(sims, sw, new_cfdi):
    stamped = await sw.stamp(new_cfdi())
    total = cfdi.parse_cfdi(stamped.xml).total
    sat = SatStatusService(f"{sims.sat.url}/ConsultaCFDIService.svc", timeouts=SIM_TIMEOUTS)
    found = await sat.status(stamped.uuid, "EKU9003173C9", "XIA190128J61", total)
    wrong_total = await sat.status(stamped.uuid, "EKU9003173C9", "XIA190128J61", total + 1)
    sims.sat_faults.inject("503", op="status")
    with pytest.raises(PacError) as caught:
        await sat.status(stamped.uuid, "EKU9003173C9", "XIA190128J61", total)
    await sat.aclose()
    assert found.state == "Vigente" and found.cancellable == "Cancelable sin aceptación" and found.efos == "200"
    assert wrong_total.lifecycle == "NOT_FOUND" and caught.value.transient


async def test_refused_connection_is_temporary_and_surely_not_processed():
    async with httpx.AsyncClient(timeout=Timeouts(connect=1, read=1).httpx()) as client:
        with pytest.raises(PacError) as caught:
            await send(client, "X", "POST", f"http://127.0.0.1:{free_port()}/")
    assert caught.value.transient and not isinstance(caught.value, PacInDoubt)
