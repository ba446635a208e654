"""Hostile input never reaches a 500 and writes nothing: every argument of every query and mutation
of every subgraph (generated from the live schema, recursively into input objects) × hostile values
(NUL, lone surrogates, 100 KB and at-the-limit strings, CR/LF, extreme numbers and dates, forged
cursors, huge lists), sent through the subgraph's real ASGI app with a fresh organization owner's
token. Each answer must be a typed error (`extensions.code`, never the masked internal error) or
`userErrors`; a refused request must leave the service's rows as they were.
"""

from __future__ import annotations

import importlib
import random
import time
import uuid

import pytest
from sqlalchemy import text

from tests.conftest import unique_email
from tests.invoice.conftest import (
    CREATE_CUSTOMER, CREATE_INVOICE, ISSUER, MORAL_CUSTOMER, SAVE_ISSUER, UPLOAD_CSD, CSD_PASSWORD, concept, csd_files,
)
from tests.graphql_client import GraphQLClient
from tests.security.conftest import SERVICES
from tests.security.hostile import Case, body, cases, entity_cases, fill

INTERNAL = "Error interno del servidor."
UNTYPED = {None, "INTERNAL_SERVER_ERROR", "INTERNAL"}


# --- what each service needs to be reached past "not found": known-good inputs and ids -----------

def _invoice_known() -> dict:
    c = concept()
    return {
        "IssuerInput": {**ISSUER, "defaultSeries": "{series}"},
        "CustomerInput": MORAL_CUSTOMER,
        "ProductInput": {"productCode": c["productCode"], "description": c["description"], "unitCode": c["unitCode"],
                         "unitPrice": c["unitPrice"]},
        "ConceptInput": c,
        "TaxInput": c["taxes"][0],
        "InvoiceInput": {"customerId": "{customer_id}", "paymentForm": "03", "paymentMethod": "PUE", "concepts": [c]},
        "GlobalInformationInput": {"periodicity": "01", "months": "01", "year": 2025},
        "RelatedCfdiInput": {"relationType": "04", "uuids": [str(uuid.uuid4()).upper()]},
        "PaymentDocumentInput": {"invoiceId": "{invoice_id}", "amountPaid": "1"},
        **{f"{op}.id": "{invoice_id}" for op in ("invoice", "updateInvoice", "stampInvoice", "cancelInvoice")},
        **{f"{op}.id": "{customer_id}" for op in ("customer", "updateCustomer", "deleteCustomer")},
        "activateCsd.id": "{csd_id}",
    }


async def _invoice_setup(api: GraphQLClient, token: str, refs: dict) -> None:
    refs["series"] = "S" + uuid.uuid4().hex[:8].upper()
    await api.ok(SAVE_ISSUER, {"i": {**ISSUER, "defaultSeries": refs["series"]}}, token=token)
    cer, key = csd_files()
    up = await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": CSD_PASSWORD}, token=token)
    refs["csd_id"] = up["uploadCsd"]["certificate"]["id"]
    cust = await api.ok(CREATE_CUSTOMER, {"i": MORAL_CUSTOMER}, token=token)
    refs["customer_id"] = cust["createCustomer"]["customer"]["id"]
    inv = await api.ok(CREATE_INVOICE, {"i": {"customerId": refs["customer_id"], "paymentForm": "03",
                                              "paymentMethod": "PUE", "concepts": [concept()]}}, token=token)
    refs["invoice_id"] = inv["createInvoice"]["invoice"]["id"]


KNOWN = {
    "auth": lambda: {"SignUpInput": {"email": "{new_email}", "password": "correcto-caballo-bateria",
                                     "fullName": "Ana López", "organizationName": "Comercializadora"},
                     "LogInInput": {"email": "{email}", "password": "correcto-caballo-bateria"}},
    "invoice": _invoice_known,
}
SETUP = {"invoice": _invoice_setup}


# --- rows of the service, to prove a refused request wrote nothing ------------------------------

async def _fingerprint_sql(engine, schema: str) -> str:
    """One statement: every table's row count, and a digest of the rows of this organization/user."""
    async with engine.connect() as conn:
        cols = (await conn.execute(text(
            "select table_name, array_agg(column_name::text) from information_schema.columns "
            "where table_schema = :s group by table_name order by table_name"), {"s": schema})).all()
    parts = []
    for table, columns in cols:
        if table == "alembic_version":
            continue
        q = f'"{schema}"."{table}"'
        where = " or ".join(f"x.{c}::text in (:org, :user)" for c in ("organization_id", "user_id", "id") if c in columns)
        parts.append(f"(select count(*) from {q})::text")
        if where:
            parts.append(f"(select md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from {q} x where {where})")
    return "select concat_ws(',', " + ", ".join(parts) + ")"


class Sweep:
    def __init__(self, service: str, app, http, sign_up):
        self.service, self.app, self.http, self.sign_up = service, app, http, sign_up
        self.api = GraphQLClient(http)
        self.failures: list[str] = []
        self.sent = 0
        self.last: str | None = None  # the rows' fingerprint after the last mutation

    async def owner(self) -> dict:
        account = await self.sign_up("Hostil SA")
        refs = {"token": account.token, "email": account.email, "org": account.org_id}
        import jwt

        refs["user"] = jwt.decode(account.token, options={"verify_signature": False})["sub"]
        if self.service in SETUP:
            await SETUP[self.service](self.api, account.token, refs)
        return refs

    async def fingerprint(self, refs: dict) -> str:
        if not hasattr(self, "_sql"):
            self._sql = await _fingerprint_sql(self.app.state.runtime.engine, self.service)
        async with self.app.state.runtime.engine.connect() as conn:
            return (await conn.execute(text(self._sql), {"org": refs["org"], "user": refs["user"]})).scalar_one()

    async def send(self, case: Case, refs: dict) -> None:
        refs = {**refs, "new_email": unique_email("sweep")}
        if case.operation == "mutation" and self.last is None:
            self.last = await self.fingerprint(refs)
        before = self.last if case.operation == "mutation" else None
        resp = await self.http.post("/graphql", content=body(case.document, fill(case.variables, refs)), headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {refs['token']}",
            "X-Forwarded-For": f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"})
        self.sent += 1
        fail = lambda why: self.failures.append(f"{case.where}: {why}")  # noqa: E731
        if resp.status_code >= 500:
            return fail(f"HTTP {resp.status_code} {resp.text[:200]}")
        try:
            out = resp.json()
        except ValueError:
            return fail(f"HTTP {resp.status_code}, not JSON: {resp.text[:200]}")
        errors = out.get("errors") or []
        for e in errors:
            code = (e.get("extensions") or {}).get("code")
            if e.get("message") == INTERNAL or code in UNTYPED:
                return fail(f"untyped error {code}: {e.get('message', '')[:200]}")
        payload = (out.get("data") or {}).get(case.field)
        user_errors = payload.get("userErrors") if isinstance(payload, dict) else None
        refused = bool(errors or user_errors)
        if case.hostile.must_refuse and not refused:
            return fail(f"accepted: {str(payload)[:200]}")
        if before is not None:
            self.last = await self.fingerprint(refs)
            if refused and self.last != before:
                fail("refused, but rows changed")


@pytest.mark.parametrize("service", SERVICES)
async def test_hostile_sweep(service, service_apps, sign_up):
    app, http = service_apps[service]
    schema = importlib.import_module(f"subgraphs.{service}.schema").schema._schema
    all_cases = cases(schema, KNOWN.get(service, dict)()) + entity_cases(schema)
    sweep = Sweep(service, app, http, sign_up)
    started = time.perf_counter()
    # One fresh owner per service: no hostile value can authenticate, revoke or delete anything the
    # owner needs, and a value that is accepted (e.g. an at-the-limit name) is a legitimate edit.
    owner = await sweep.owner()
    for case in all_cases:
        await sweep.send(case, owner)
    elapsed = time.perf_counter() - started
    print(f"{service}: {sweep.sent} hostile requests in {elapsed:.1f}s, {len(sweep.failures)} failures")
    assert len(all_cases) > 20, "the sweep generated too few cases: is the schema empty?"
    assert not sweep.failures, f"{len(sweep.failures)} of {sweep.sent} failed:\n" + "\n".join(sweep.failures[:60])
