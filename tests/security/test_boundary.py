"""The shared boundary every subgraph request crosses: bodies that are not a GraphQL request are
HTTP 400s, expected errors log one line, SQL parameters never reach the logs, suggestions are for
developers, and a database that is down says SERVICE_UNAVAILABLE (503) instead of a masked 500."""

from __future__ import annotations

import logging
import uuid

import pytest
import strawberry
from sqlalchemy import text

from shared.embedded import free_port
from shared.graphql import build_schema, create_service_app
from shared.validation import Limits, decimal_problem, limits, text_problem, value_problems
from tests.conftest import running_app
from tests.security.conftest import SERVICES, make_app

# --- request bodies ------------------------------------------------------------------------------

BAD_BODIES = {
    "invalid UTF-8": b'{"query": "{ __typename }", "x": "\xff\xfe"}',
    "deeply nested": b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    "null": b"null",
    "huge number": b"9" * 100_000,
    "string": b'"{ __typename }"',
    "number": b"42",
    "batch": b'[{"query": "{ __typename }"}]',
    "variables not an object": b'{"query": "{ __typename }", "variables": [1]}',
}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("label", BAD_BODIES)
async def test_bodies_that_are_not_a_graphql_request_are_400(service, label, service_apps):
    _, http = service_apps[service]
    resp = await http.post("/graphql", content=BAD_BODIES[label], headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    body = resp.json()  # GraphQL-shaped, like every other answer
    assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST" and body["errors"][0]["message"]


# --- logs --------------------------------------------------------------------------------------------

async def test_bad_token_logs_one_info_line_and_no_traceback(service_apps, caplog):
    _, http = service_apps["invoice"]
    caplog.set_level(logging.DEBUG)
    resp = await http.post("/graphql", json={"query": "{ issuer { rfc } }"},
                           headers={"Authorization": "Bearer not.a.token", "X-Request-Id": "rid-bad-token"})
    assert resp.json()["errors"][0]["extensions"]["code"] == "INVALID_TOKEN"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if "INVALID_TOKEN" in r.getMessage()]
    assert len(lines) == 1 and "rid-bad-token" in lines[0] and "\n" not in lines[0], caplog.text


async def test_user_errors_log_one_info_line(service_apps, caplog):
    _, http = service_apps["auth"]
    caplog.set_level(logging.DEBUG)
    mutation = """mutation($i: SignUpInput!) { signUp(input: $i) { userErrors { field code } } }"""
    data = {"email": "nombre@example.mx", "password": "correcto-caballo-bateria", "fullName": "Ana\r\nBcc: x@y.mx",
            "organizationName": "Hostil"}
    body = (await http.post("/graphql", json={"query": mutation, "variables": {"i": data}},
                            headers={"X-Request-Id": "rid-user-errors"})).json()
    assert body["data"]["signUp"]["userErrors"] == [{"field": ["input", "fullName"], "code": "INVALID_CHARACTERS"}]
    lines = [r for r in caplog.records if "INVALID_CHARACTERS" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and "rid-user-errors" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


SECRET = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0LXNhbHQ$SECRET-HASH-MUST-NOT-BE-LOGGED"


@strawberry.type
class _ProbeQuery:
    @strawberry.field
    async def broken(self, info: strawberry.Info) -> int:
        # A statement that fails on its parameter: Postgres' message quotes the value.
        async with info.context.runtime.engine.connect() as conn:
            return (await conn.execute(text("select cast(:p as integer)"), {"p": SECRET})).scalar_one()

    @strawberry.field
    def echo(self, word: str, count: int = 1) -> str:
        return word * count


def _probe_app(settings):
    return create_service_app("probe", build_schema(query=_ProbeQuery), settings=settings)


async def test_a_failing_statement_never_logs_its_parameters(settings, caplog):
    caplog.set_level(logging.DEBUG)
    async with running_app(_probe_app(settings)) as http:
        body = (await http.post("/graphql", json={"query": "{ broken }"})).json()
    assert body["errors"][0]["message"] == "Error interno del servidor."
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Traceback" in errors[0].getMessage()  # unexpected: a traceback, once
    assert "SECRET-HASH" not in caplog.text
    for r in caplog.records:
        assert "SECRET-HASH" not in r.getMessage() and "SECRET-HASH" not in str(r.__dict__)


# --- suggestions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("app_env, shown", [("test", False), ("production", False), ("development", True)])
async def test_field_suggestions_only_in_development(settings, monkeypatch, app_env, shown):
    monkeypatch.setenv("APP_ENV", app_env)
    async with running_app(_probe_app(settings)) as http:
        body = (await http.post("/graphql", json={"query": "{ ecko(wrd: 1) }"})).json()
    messages = " ".join(e["message"] for e in body["errors"])
    assert ("Did you mean" in messages) is shown, messages
    assert {e["extensions"]["code"] for e in body["errors"]} == {"GRAPHQL_VALIDATION_FAILED"}


# --- database down -----------------------------------------------------------------------------------

async def test_database_down_is_service_unavailable_with_retry_after(settings, service_apps, sign_up, caplog):
    account = await sign_up()
    _, auth_http = service_apps["auth"]
    down = settings.model_copy(update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"})
    caplog.set_level(logging.INFO)
    async with running_app(make_app("notification", down, auth_http)) as http:
        resp = await http.post("/graphql", json={"query": "{ unreadCount }"},
                               headers={"Authorization": f"Bearer {account.token}"})
        partial = await http.post("/graphql", json={"query": "{ unreadCount notificationPreferences { enabled } }"},
                                  headers={"Authorization": f"Bearer {account.token}"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5", (resp.status_code, resp.text)
    error = resp.json()["errors"][0]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "Error interno" not in error["message"]
    assert {e["extensions"]["code"] for e in partial.json()["errors"]} == {"SERVICE_UNAVAILABLE"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # an outage, not a bug


# --- the limits themselves -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, lim, code", [
    ("a\x00b", Limits(), "INVALID_CHARACTERS"), ("a\ud800", Limits(), "INVALID_CHARACTERS"),
    ("Ana\r\nBcc: x@y.mx", Limits(), "INVALID_CHARACTERS"), ("línea\u2028dos", Limits(), "INVALID_CHARACTERS"),
    ("a\x00b", Limits(multiline=True), "INVALID_CHARACTERS"), ("x" * 201, Limits(max_length=200), "TOO_LONG"),
])
def test_text_problems(value, lim, code):
    assert text_problem(value, lim).code == code


@pytest.mark.parametrize("value, ok", [("línea uno\r\nlínea dos\tfin", True), ("x" * 200, True), ("Ñandú €", True)])
def test_text_that_fits(value, ok):
    assert (text_problem(value, Limits(max_length=200, multiline=True)) is None) is ok


@pytest.mark.parametrize("value, code", [
    ("1e400", "OUT_OF_RANGE"), ("NaN", "INVALID_NUMBER"), ("1e-400", "TOO_MANY_DECIMALS"),
    ("0.1234567", "TOO_MANY_DECIMALS"), ("1000000000000", "OUT_OF_RANGE"),
    ("999999999999.999999", None), ("0.160000000", None), ("-5", None),
])
def test_decimal_problems(value, code):
    from decimal import Decimal

    p = decimal_problem(Decimal(value))
    assert (p.code if p else None) == code


def test_lists_and_nested_values_are_bounded():
    assert value_problems(list(range(1001)), Limits(), ["ids"])[0][1].code == "TOO_MANY_ITEMS"
    assert value_problems([str(uuid.uuid4())] * 1000, Limits(), ["ids"]) == []
    found = value_problems({"a": ["ok", "b\x00"]}, Limits(), ["data"])
    assert [(path, p.code) for path, p in found] == [(["data", "a", "1"], "INVALID_CHARACTERS")]
    assert limits(max_length=5)["limits"].max_length == 5


# --- a CSD whose serial does not fit NoCertificado (and its String(20) column) ------------------------

def _csd_shaped_pair(serial: int) -> tuple[bytes, bytes]:
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PRUEBA SA DE CV"),
                      x509.NameAttribute(x509.ObjectIdentifier("2.5.4.45"), "AAA010101AAA"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Sucursal 1")])
    now = datetime.now(timezone.utc)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(usage, critical=True).sign(key, hashes.SHA256()))
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"12345678a"))
    return cert.public_bytes(serialization.Encoding.DER), key_der


@pytest.mark.parametrize("serial", [int.from_bytes(b"3" * 19, "big"), 10**30, 7])
def test_a_csd_serial_that_is_not_20_digits_is_refused(serial):
    from sat.cfdi.csd import CsdError, load_csd

    cer, key = _csd_shaped_pair(serial)
    with pytest.raises(CsdError):
        load_csd(cer, key, "12345678a")
