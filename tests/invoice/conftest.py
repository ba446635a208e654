"""Invoice tests: the auth app (real sign-up, real tokens) and the invoice app, both in-process,
against the run's real Postgres and Redis."""

from __future__ import annotations

import base64
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.auth.conftest import (  # noqa: F401 - fixtures re-exported for this package
    Account, auth_app, auth_http, auth_settings, gql, ip, sign_up,
)
from tests.conftest import in_process_jwks_runtime_factory, running_app
from tests.graphql_client import GraphQLClient

CSD_DIR = Path(__file__).resolve().parents[1] / "cfdi" / "fixtures" / "csd"
CSD_PASSWORD = "12345678a"

ISSUER = {"rfc": "EKU9003173C9", "legalName": "ESCUELA KEMPER URGATE", "taxRegime": "601", "postalCode": "42501"}
MORAL_CUSTOMER = {"rfc": "XIA190128J61", "legalName": "XENON INDUSTRIAL ARTICLES", "taxRegime": "601",
                  "postalCode": "76343", "cfdiUse": "G03", "email": "compras@xenon.example.mx"}

SAVE_ISSUER = """mutation($i: IssuerInput!) { saveIssuer(input: $i) { issuer { rfc legalName postalCode defaultSeries }
  userErrors { field code message } } }"""
UPLOAD_CSD = """mutation($c: String!, $k: String!, $p: String!) { uploadCsd(certificate: $c, privateKey: $k, password: $p) {
  certificate { id certificateNumber rfc active validTo } userErrors { field code message } } }"""
CREATE_CUSTOMER = """mutation($i: CustomerInput!) { createCustomer(input: $i) { customer { id rfc legalName cfdiUse }
  userErrors { field code message } } }"""
INVOICE_FIELDS = """id type status series folio subtotal totalTaxesTransferred total currency uuid pacCode pacMessage
  issues { code field message } cancellationReason"""
CREATE_INVOICE = """mutation($i: InvoiceInput!) { createInvoice(input: $i) { invoice { %s }
  issues { code field message } userErrors { field code message } } }""" % INVOICE_FIELDS
STAMP = """mutation($id: ID!, $k: String!) { stampInvoice(id: $id, idempotencyKey: $k) { invoice { %s }
  userErrors { field code message } } }""" % INVOICE_FIELDS
CANCEL = """mutation($id: ID!, $r: String!, $u: String) { cancelInvoice(id: $id, reason: $r, replacementUuid: $u) {
  invoice { %s } userErrors { field code message } } }""" % INVOICE_FIELDS
GET_INVOICE = "query($id: ID!) { invoice(id: $id) { %s xml history { fromStatus toStatus reason } } }" % INVOICE_FIELDS


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def csd_files(stem: str = "eku9003173c9_csd_2023") -> tuple[str, str]:
    return b64(CSD_DIR / f"{stem}.cer"), b64(CSD_DIR / f"{stem}.key")


def concept(price: str = "1000.00", quantity: str = "1", iva: bool = True) -> dict:
    return {"productCode": "84111506", "quantity": quantity, "unitCode": "E48", "description": "Servicio de facturación",
            "unitPrice": price, "taxObject": "02" if iva else "01",
            "taxes": [{"tax": "002", "factorType": "Tasa", "rate": "0.160000"}] if iva else []}


def make_invoice_app(settings, auth_http):
    """The invoice app verifying tokens with the in-process auth app's JWKS."""
    from subgraphs.invoice.app import create_app

    return create_app(settings, runtime_factory=in_process_jwks_runtime_factory(auth_http))


@pytest.fixture(scope="session")
def invoice_app(settings, auth_http):
    return make_invoice_app(settings, auth_http)


@pytest.fixture(scope="session")
async def invoice_http(invoice_app):
    async with running_app(invoice_app) as http:
        yield http


@pytest.fixture
def runtime(invoice_app, invoice_http):
    return invoice_app.state.runtime


@pytest.fixture
def api(invoice_http):
    return GraphQLClient(invoice_http)


@pytest.fixture
def job_ctx(runtime):
    return {"runtime": runtime, "job_try": 1}


@contextmanager
def pac_env(**values):
    """Set PAC_SANDBOX_* variables for the duration of a block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Org:
    """A signed-up organization with issuer, CSD and one persona-moral customer."""

    def __init__(self, api: GraphQLClient, account: Account, customer_id: str):
        self.api, self.account, self.customer_id = api, account, customer_id

    @property
    def token(self) -> str:
        return self.account.token

    async def ok(self, query: str, variables: dict | None = None) -> dict:
        return await self.api.ok(query, variables, token=self.token)

    async def execute(self, query: str, variables: dict | None = None):
        return await self.api.execute(query, variables, token=self.token)

    async def create_invoice(self, **overrides) -> dict:
        data = {"customerId": self.customer_id, "paymentForm": "03", "paymentMethod": "PUE",
                "concepts": [concept()], **overrides}
        out = (await self.ok(CREATE_INVOICE, {"i": data}))["createInvoice"]
        assert out["userErrors"] == [], out["userErrors"]
        return out["invoice"]

    async def stamp(self, invoice_id: str, key: str = "k1") -> dict:
        out = (await self.ok(STAMP, {"id": invoice_id, "k": key}))["stampInvoice"]
        assert out["userErrors"] == [], out["userErrors"]
        return out["invoice"]

    async def get(self, invoice_id: str) -> dict | None:
        return (await self.ok(GET_INVOICE, {"id": invoice_id}))["invoice"]


@pytest.fixture
def new_org(api, sign_up):
    async def make(*, with_csd: bool = True) -> Org:
        account = await sign_up("Escuela Kemper")
        # Every test organization shares the demo RFC; a series of its own keeps their CFDIs distinct
        # (the sandbox PAC, like a real one, answers an identical CFDI with its earlier timbre).
        series = "T" + uuid.uuid4().hex[:8].upper()
        out = (await api.ok(SAVE_ISSUER, {"i": {**ISSUER, "defaultSeries": series}}, token=account.token))["saveIssuer"]
        assert out["userErrors"] == [], out
        if with_csd:
            cer, key = csd_files()
            up = (await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": CSD_PASSWORD}, token=account.token))["uploadCsd"]
            assert up["userErrors"] == [], up
        cust = (await api.ok(CREATE_CUSTOMER, {"i": MORAL_CUSTOMER}, token=account.token))["createCustomer"]
        assert cust["userErrors"] == [], cust
        return Org(api, account, cust["customer"]["id"])

    return make


@pytest.fixture
async def org(new_org) -> Org:
    return await new_org()
