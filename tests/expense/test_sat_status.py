"""Supplier CFDI import asks SAT's ConsultaCFDIService (through the invoice service's adapter)
whether the CFDI is vigente. SAT is the local simulator of tests/pac/simulators, a real HTTP
server on loopback; "SAT down" is a closed port, "SAT slow" a handler that never answers."""

from __future__ import annotations

import pytest
from lxml import etree

from shared.embedded import free_port
from subgraphs.expense.sat_check import SatCheckSettings
from sat.cfdi import parse_cfdi
from tests.expense.test_supplier_cfdi import ATTACH, IMPORT, PROFILE, RECEIVER, csd, stamped, xml  # noqa: F401
from tests.pac.simulators import Faults, SatLedger, SimServer
from tests.pac.simulators.core import Record
from tests.pac.simulators.sat_sim import sat_app

RECHECK = """mutation($id: ID!) { recheckSupplierCfdiStatus(expenseId: $id) { expense { id cfdiSatStatus
  deductibleReady deductibility { ready reasons } } userErrors { field code message } } }"""
SAT_FIELDS = "cfdiSatStatus cfdiSatCheckedAt"


class Sat:
    def __init__(self):
        self.ledger, self.faults = SatLedger(), Faults()
        self.server = SimServer(sat_app(self.ledger, self.faults), self.faults.released.set).start()
        self.url = f"{self.server.url}/ConsultaCFDIService.svc"

    def knows(self, data: bytes, state: str = "Vigente") -> str:
        """SAT learns of the CFDI (as after its PAC reported the timbre) in the given state."""
        inv = parse_cfdi(data)
        self.ledger.register(Record(inv.stamp.uuid.upper(), data, inv.issuer.rfc.upper(), inv.receiver.rfc.upper(),
                                    inv.total, inv, "sim", state=state,
                                    cancellation_status="Cancelado sin aceptación" if state == "Cancelado" else ""))
        return inv.stamp.uuid.upper()


@pytest.fixture(scope="module")
def sat():
    s = Sat()
    yield s
    s.server.stop()


@pytest.fixture
def sat_on(sat, monkeypatch):
    monkeypatch.setenv("SAT_STATUS_CHECK", "true")
    monkeypatch.setenv("SAT_STATUS_URL", sat.url)
    monkeypatch.setenv("SAT_STATUS_TIMEOUT_SECONDS", "5")
    sat.faults.clear()
    return sat


@pytest.fixture
async def org(team):
    assert (await team.ok(team.owner, PROFILE, {"r": RECEIVER}))["setExpenseFiscalProfile"]["userErrors"] == []
    return team


def _import(query: str) -> str:
    return query.replace("deductibleReady", f"deductibleReady {SAT_FIELDS}")


@pytest.mark.parametrize("env, flag, on", [("development", None, False), ("test", None, False),
                                           ("production", None, True), ("development", "true", True),
                                           ("production", "false", False)])
def test_the_check_is_off_for_local_work_and_on_in_production(monkeypatch, env, flag, on):
    monkeypatch.setenv("APP_ENV", env)
    monkeypatch.delenv("SAT_STATUS_CHECK", raising=False)
    if flag is not None:
        monkeypatch.setenv("SAT_STATUS_CHECK", flag)
    assert SatCheckSettings().enabled is on


async def test_vigente_at_sat_makes_the_expense_ready(org, sat_on, csd):
    data = xml(stamped(csd))
    sat_on.knows(data)
    out = (await org.ok(org.member, _import(IMPORT), {"x": data.decode()}))["importSupplierCfdi"]
    assert out["userErrors"] == [], out
    e = out["expense"]
    assert e["cfdiSatStatus"] == "VIGENTE" and e["cfdiSatCheckedAt"]
    assert e["deductibleReady"] is True and e["deductibility"] == {"ready": True, "reasons": []}
    assert sat_on.faults.calls.get("status") == 1


async def test_cancelled_at_sat_is_refused_on_import_and_attach(org, sat_on, csd):
    data = xml(stamped(csd)).decode()
    sat_on.knows(data.encode(), "Cancelado")
    out = (await org.ok(org.member, IMPORT, {"x": data}))["importSupplierCfdi"]
    assert out["expense"] is None
    assert [(u["field"], u["code"]) for u in out["userErrors"]] == [(["xml"], "CFDI_CANCELLED")]
    assert "cancelado" in out["userErrors"][0]["message"]
    created = (await org.ok(org.member, "mutation { createExpense(input: {amount: \"1\", date: \"2025-06-01\", "
                                        "paymentMethod: TRANSFER}) { expense { id } } }"))["createExpense"]["expense"]
    att = (await org.ok(org.member, ATTACH, {"id": created["id"], "x": data}))["attachSupplierCfdi"]
    assert [u["code"] for u in att["userErrors"]] == ["CFDI_CANCELLED"]
    still = await org.ok(org.member, "query($id: ID!) { expense(id: $id) { cfdiUuid amount } }", {"id": created["id"]})
    assert still["expense"] == {"cfdiUuid": None, "amount": "1.00"}
    # Nothing was written: the same CFDI is not a duplicate of anything.
    mine = await org.ok(org.member, "{ expenses(first: 50) { edges { node { cfdiUuid } } } }")
    assert all(n["node"]["cfdiUuid"] is None for n in mine["expenses"]["edges"])


async def test_sat_down_imports_unconfirmed_then_a_recheck_confirms(org, sat_on, csd, monkeypatch):
    data = xml(stamped(csd))
    sat_on.knows(data)
    monkeypatch.setenv("SAT_STATUS_URL", f"http://127.0.0.1:{free_port()}/ConsultaCFDIService.svc")
    out = (await org.ok(org.member, _import(IMPORT), {"x": data.decode()}))["importSupplierCfdi"]
    assert out["userErrors"] == [], out
    e = out["expense"]
    assert e["cfdiSatStatus"] == "UNCONFIRMED" and e["deductibleReady"] is False
    assert len(e["deductibility"]["reasons"]) == 1 and "No se pudo confirmar con el SAT" in e["deductibility"]["reasons"][0]
    monkeypatch.setenv("SAT_STATUS_URL", sat_on.url)  # SAT is back
    again = (await org.ok(org.approver, RECHECK, {"id": e["id"]}))["recheckSupplierCfdiStatus"]
    assert again["userErrors"] == [] and again["expense"]["cfdiSatStatus"] == "VIGENTE"
    assert again["expense"]["deductibility"] == {"ready": True, "reasons": []}
    # SAT down again: silence does not undo the confirmed answer.
    monkeypatch.setenv("SAT_STATUS_URL", f"http://127.0.0.1:{free_port()}/ConsultaCFDIService.svc")
    later = (await org.ok(org.member, RECHECK, {"id": e["id"]}))["recheckSupplierCfdiStatus"]
    assert later["expense"]["cfdiSatStatus"] == "VIGENTE" and later["expense"]["deductibleReady"] is True


async def test_sat_too_slow_is_bounded_and_unconfirmed(org, sat_on, csd, monkeypatch):
    data = xml(stamped(csd))
    sat_on.knows(data)
    monkeypatch.setenv("SAT_STATUS_TIMEOUT_SECONDS", "0.5")
    sat_on.faults.inject("hang", "status")
    out = (await org.ok(org.member, _import(IMPORT), {"x": data.decode()}))["importSupplierCfdi"]
    assert out["userErrors"] == [] and out["expense"]["cfdiSatStatus"] == "UNCONFIRMED"
    assert out["expense"]["deductibleReady"] is False


async def test_sat_5xx_is_unconfirmed(org, sat_on, csd):
    data = xml(stamped(csd))
    sat_on.knows(data)
    sat_on.faults.inject("503", "status")
    out = (await org.ok(org.member, _import(IMPORT), {"x": data.decode()}))["importSupplierCfdi"]
    assert out["expense"]["cfdiSatStatus"] == "UNCONFIRMED"


async def test_not_yet_at_sat_waits_and_a_later_cancellation_is_recorded(org, sat_on, csd):
    data = xml(stamped(csd))
    out = (await org.ok(org.member, _import(IMPORT), {"x": data.decode()}))["importSupplierCfdi"]
    e = out["expense"]
    assert e["cfdiSatStatus"] == "NOT_FOUND" and e["deductibleReady"] is False
    assert "72 horas" in e["deductibility"]["reasons"][0]
    sat_on.knows(data, "Cancelado")  # the supplier cancelled it after we imported it
    again = (await org.ok(org.member, RECHECK, {"id": e["id"]}))["recheckSupplierCfdiStatus"]
    assert again["expense"]["cfdiSatStatus"] == "CANCELLED" and again["expense"]["deductibleReady"] is False
    assert "cancelado" in again["expense"]["deductibility"]["reasons"][0]


async def test_recheck_needs_a_cfdi_and_the_check_off_records_not_checked(org, csd, monkeypatch):
    monkeypatch.delenv("SAT_STATUS_CHECK", raising=False)
    monkeypatch.setenv("APP_ENV", "test")
    out = (await org.ok(org.member, _import(IMPORT), {"x": xml(stamped(csd)).decode()}))["importSupplierCfdi"]
    assert out["expense"]["cfdiSatStatus"] == "NOT_CHECKED" and out["expense"]["deductibleReady"] is True
    created = (await org.ok(org.member, "mutation { createExpense(input: {amount: \"1\", date: \"2025-06-01\", "
                                        "paymentMethod: TRANSFER}) { expense { id } } }"))["createExpense"]["expense"]
    none = (await org.ok(org.member, RECHECK, {"id": created["id"]}))["recheckSupplierCfdiStatus"]
    assert [(u["field"], u["code"]) for u in none["userErrors"]] == [(["expenseId"], "CFDI_REQUIRED")]


def test_a_cfdi_reads_with_its_seal_for_the_sat_query(csd):
    from subgraphs.expense.supplier_cfdi import read_supplier_cfdi

    tree = stamped(csd)
    assert read_supplier_cfdi(xml(tree), RECEIVER).seal == tree.get("Sello") and isinstance(tree, etree._Element)
