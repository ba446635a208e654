"""PAC adapter tests run against local simulators, and also against the providers' real test
environments when their credentials are in the environment:

    FINKOK_TEST_USER / FINKOK_TEST_PASSWORD   (demo-facturacion.finkok.com, RFC EKU9003173C9 registered)
    SW_TEST_TOKEN                             (services.test.sw.com.mx)

CFDIs are built and sealed by our engine with SAT's test CSD of EKU9003173C9 (valid to 2027-05-18).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sat import cfdi
from sat.cfdi.rules import place_timezone
from sat.pac import finkok, swsapien
from sat.pac.sat_status import SatStatusService
from sat.pac.transport import Timeouts
from tests.cfdi.conftest import OLD_CSD_NOW, make_invoice

from .simulators import Faults, SatLedger, SimServer, StampingEngine
from .simulators.finkok_sim import finkok_app
from .simulators.sat_sim import sat_app
from .simulators.sw_sim import sw_app

CSD_DIR = Path("/work/shared/data/csd") if Path("/work/shared/data/csd").is_dir() else \
    Path(__file__).parents[1] / "cfdi" / "fixtures" / "csd"
PASSWORD = "12345678a"
SIM_TIMEOUTS = Timeouts(connect=2.0, read=1.5)  # the simulators answer in milliseconds unless told to hang
FINKOK_USER, FINKOK_PASSWORD = "sim@example.com", "Sim-Password-1"
SW_TOKEN = "sim-token-" + "x" * 20


@pytest.fixture(scope="session")
def csd_issuer() -> cfdi.Csd:
    return cfdi.load_csd((CSD_DIR / "eku9003173c9_csd_2023.cer").read_bytes(),
                         (CSD_DIR / "eku9003173c9_csd_2023.key").read_bytes(), PASSWORD)


@pytest.fixture(scope="session")
def csd_receiver() -> cfdi.Csd:
    """XIA190128J61, the receiver of our test invoices (expired CSD: fine for the simulators)."""
    return cfdi.load_csd((CSD_DIR / "xia190128j61_csd.cer").read_bytes(),
                         (CSD_DIR / "xia190128j61_csd.key").read_bytes(), PASSWORD, now=OLD_CSD_NOW)


@pytest.fixture
def new_cfdi(csd_issuer):
    """A fresh, sealed CFDI (unique folio, issued now) each call: EKU9003173C9 → XIA190128J61."""
    def build(**overrides) -> bytes:
        now = datetime.now(timezone.utc).astimezone(place_timezone("42501")).replace(tzinfo=None, microsecond=0)
        invoice = cfdi.compute_totals(replace(make_invoice(issued_at=now, folio=str(secrets.randbelow(10**9))),
                                              **overrides))
        tree = cfdi.build_tree(invoice)
        cfdi.sign_cfdi(tree, csd_issuer)
        return cfdi.to_bytes(tree)
    return build


@dataclass
class Simulators:
    ledger: SatLedger
    finkok: SimServer
    finkok_faults: Faults
    finkok_engine: StampingEngine
    sw: SimServer
    sw_faults: Faults
    sw_engine: StampingEngine
    sat: SimServer
    sat_faults: Faults

    def faults(self, provider: str) -> Faults:
        return self.finkok_faults if provider == "finkok" else self.sw_faults

    def records(self, xml_seal: str) -> list:
        return [r for r in self.ledger.records.values() if r.invoice.seal == xml_seal]


@pytest.fixture(scope="session")
def sims():
    ledger = SatLedger()
    fk_faults, sw_faults, sat_faults = Faults(), Faults(), Faults()
    fk_engine = StampingEngine(ledger, "FIN1203015JA", "finkok")
    sw_engine = StampingEngine(ledger, "LSO1306189R5", "swsapien")
    servers = [
        SimServer(finkok_app(ledger, fk_engine, {FINKOK_USER: FINKOK_PASSWORD}, fk_faults), fk_faults.released.set),
        SimServer(sw_app(ledger, sw_engine, {"sim-user": "Sim-Password-2"}, {SW_TOKEN}, sw_faults),
                  sw_faults.released.set),
        SimServer(sat_app(ledger, sat_faults), sat_faults.released.set),
    ]
    for s in servers:
        s.start()
    yield Simulators(ledger, servers[0], fk_faults, fk_engine, servers[1], sw_faults, sw_engine, servers[2], sat_faults)
    for s in servers:
        s.stop()


def reset(sims: Simulators) -> None:
    """Each test starts with no queued fault, quirk or forced acceptance, and no peer seen."""
    for f in (sims.finkok_faults, sims.sw_faults, sims.sat_faults):
        f.clear()
    sims.ledger.force_acceptance = False


@pytest.fixture(autouse=True)
def _clean_faults(request):
    if "sims" in request.fixturenames:
        reset(request.getfixturevalue("sims"))


@dataclass
class Target:
    """One provider in one environment: the adapter, and the simulator when there is one."""
    provider: str
    pac: object
    sims: Simulators | None

    def faults(self) -> Faults:
        if self.sims is None:
            pytest.skip("fault injection needs the simulator")
        return self.sims.faults(self.provider)


TARGETS = ["finkok-sim", "swsapien-sim", "finkok-real", "swsapien-real"]


def build_adapter(provider: str, mode: str, csd, sims: Simulators | None, sat=None):
    if provider == "finkok":
        if mode == "real":
            account = finkok.FinkokAccount(os.environ["FINKOK_TEST_USER"], os.environ["FINKOK_TEST_PASSWORD"])
            return finkok.FinkokPac(account, url=finkok.TEST_URL, csd=csd, sat=sat)
        return finkok.FinkokPac(finkok.FinkokAccount(FINKOK_USER, FINKOK_PASSWORD), url=sims.finkok.url, csd=csd,
                                sat=sat, timeouts=SIM_TIMEOUTS)
    if mode == "real":
        return swsapien.SwSapienPac(swsapien.SwAccount(token=os.environ["SW_TEST_TOKEN"]), url=swsapien.TEST_URL,
                                    csd=csd, sat=sat)
    return swsapien.SwSapienPac(swsapien.SwAccount(token=SW_TOKEN), url=sims.sw.url, csd=csd, sat=sat,
                                timeouts=SIM_TIMEOUTS)


def _real_available(provider: str) -> bool:
    if provider == "finkok":
        return bool(os.environ.get("FINKOK_TEST_USER") and os.environ.get("FINKOK_TEST_PASSWORD"))
    return bool(os.environ.get("SW_TEST_TOKEN"))


@pytest.fixture(params=TARGETS)
async def target(request, csd_issuer):
    provider, mode = request.param.split("-")
    if mode == "real" and not _real_available(provider):
        pytest.skip(f"{provider}: no test-environment credentials in the environment")
    sims = request.getfixturevalue("sims") if mode == "sim" else None
    if sims is not None:
        reset(sims)
    sat = SatStatusService(f"{sims.sat.url}/ConsultaCFDIService.svc", timeouts=SIM_TIMEOUTS) if sims else None
    pac = build_adapter(provider, mode, csd_issuer, sims, sat)
    yield Target(provider, pac, sims)
    await pac.aclose()
    if sat is not None:
        await sat.aclose()


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    keys = [k async for k in client.scan_iter("pac:failover:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
