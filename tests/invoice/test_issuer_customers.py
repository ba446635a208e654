from __future__ import annotations

import base64
import uuid

import pytest
from sqlalchemy import select

from subgraphs.invoice import models as m
from tests.cfdi.test_csd import _fiel_like_pair
from tests.invoice.conftest import (
    CREATE_CUSTOMER, CSD_PASSWORD, ISSUER, MORAL_CUSTOMER, SAVE_ISSUER, UPLOAD_CSD, csd_files,
)

ISSUER_Q = "{ issuer { rfc legalName taxRegime postalCode certificates { certificateNumber active } series { code nextFolio } } }"


async def _issuer_account(api, sign_up, issuer=ISSUER):
    account = await sign_up("Kemper")
    out = (await api.ok(SAVE_ISSUER, {"i": issuer}, token=account.token))["saveIssuer"]
    assert out["userErrors"] == []
    return account


async def test_issuer_profile_and_csd_upload_seals_the_key(api, sign_up, runtime):
    account = await _issuer_account(api, sign_up)
    cer, key = csd_files()
    out = (await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": CSD_PASSWORD}, token=account.token))["uploadCsd"]
    assert out["userErrors"] == []
    assert out["certificate"]["certificateNumber"] == "30001000000500003416"
    assert out["certificate"]["active"] is True
    data = await api.ok(ISSUER_Q, token=account.token)
    assert data["issuer"]["rfc"] == "EKU9003173C9"
    assert data["issuer"]["certificates"] == [{"certificateNumber": "30001000000500003416", "active": True}]
    assert data["issuer"]["series"] == [{"code": "A", "nextFolio": 1}]

    async with runtime.sessionmaker() as session:
        row = await session.scalar(select(m.Certificate).where(
            m.Certificate.organization_id == uuid.UUID(account.org_id)))
    raw_key = base64.b64decode(key)
    assert row.private_key_sealed.startswith("v1.")
    assert row.kek_id == runtime.settings.key_encryption_key_id
    assert raw_key not in row.private_key_sealed.encode()
    assert CSD_PASSWORD not in row.private_key_sealed
    # The sealed key opens only with its own context and is the unencrypted PKCS#8 of the CSD.
    from subgraphs.invoice.service import open_csd

    csd = open_csd(row, runtime.settings)
    assert csd.certificate_number == "30001000000500003416"

    again = (await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": CSD_PASSWORD}, token=account.token))["uploadCsd"]
    assert [e["code"] for e in again["userErrors"]] == ["CSD_ALREADY_UPLOADED"]


# uploadCsd(certificate, privateKey, password) has no `input`: each error names the argument.
@pytest.mark.parametrize("case,expected,field", [
    ("wrong_password", "WRONG_PASSWORD", ["password"]),
    ("expired", "CERTIFICATE_EXPIRED", ["certificate"]),
    ("key_mismatch", "KEY_CERT_MISMATCH", ["privateKey"]),
    ("fiel", "NOT_A_CSD", ["certificate"]),
    ("rfc_mismatch", "RFC_MISMATCH", ["certificate"]),
    ("garbage", "INVALID_CERTIFICATE", ["certificate"]),
])
async def test_csd_upload_errors_each_have_their_code(api, sign_up, runtime, case, expected, field):
    account = await _issuer_account(api, sign_up)
    cer, key = csd_files()
    password = CSD_PASSWORD
    if case == "wrong_password":
        password = "Zx9-secreto-malo"
    elif case == "expired":
        cer, key = csd_files("eku9003173c9_csd")
    elif case == "key_mismatch":
        key = csd_files("eku9003173c9_csd")[1]
    elif case == "fiel":
        c, k = _fiel_like_pair(with_ou=False, fiel_usage=True)
        cer, key = base64.b64encode(c).decode(), base64.b64encode(k).decode()
    elif case == "rfc_mismatch":  # EKU's valid CSD, uploaded by an issuer with another RFC
        other = {**ISSUER, "rfc": "XIA190128J61", "legalName": "XENON INDUSTRIAL ARTICLES"}
        assert (await api.ok(SAVE_ISSUER, {"i": other}, token=account.token))["saveIssuer"]["userErrors"] == []
    elif case == "garbage":
        cer = base64.b64encode(b"no es un certificado").decode()
    out = (await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": password}, token=account.token))["uploadCsd"]
    assert out["certificate"] is None
    assert [(e["code"], e["field"]) for e in out["userErrors"]] == [(expected, field)]
    assert all(password not in e["message"] for e in out["userErrors"])
    data = await api.ok(ISSUER_Q, token=account.token)
    assert data["issuer"]["certificates"] == []


async def test_issuer_validation_and_permissions(api, sign_up):
    account = await sign_up("Kemper")
    bad = {**ISSUER, "rfc": "NOESRFC", "postalCode": "1234", "taxRegime": "999"}
    out = (await api.ok(SAVE_ISSUER, {"i": bad}, token=account.token))["saveIssuer"]
    assert {e["code"] for e in out["userErrors"]} == {"INVALID_RFC", "INVALID_POSTAL_CODE", "INVALID_TAX_REGIME"}
    assert ["input", "rfc"] in [e["field"] for e in out["userErrors"]]
    assert (await api.ok(ISSUER_Q, token=account.token))["issuer"] is None
    anonymous = await api.execute(ISSUER_Q)
    assert anonymous.error_codes == ["UNAUTHENTICATED"]


async def test_customers_crud_with_rfc_validation(api, sign_up):
    account = await _issuer_account(api, sign_up)
    bad = {**MORAL_CUSTOMER, "rfc": "XIA19O128J61", "email": "no-es-correo"}
    out = (await api.ok(CREATE_CUSTOMER, {"i": bad}, token=account.token))["createCustomer"]
    assert out["customer"] is None
    assert {(tuple(e["field"]), e["code"]) for e in out["userErrors"]} == {
        (("input", "rfc"), "INVALID_RFC"), (("input", "email"), "INVALID_EMAIL")}
    # RFC of a persona física (13) with a persona-moral-only regime is refused too.
    fisica = {**MORAL_CUSTOMER, "rfc": "CACX7605101P8", "taxRegime": "601"}
    out = (await api.ok(CREATE_CUSTOMER, {"i": fisica}, token=account.token))["createCustomer"]
    assert [e["code"] for e in out["userErrors"]] == ["REGIME_NOT_ALLOWED"]

    products = [{"productCode": "84111506", "description": "Timbrado", "unitCode": "E48", "unitPrice": "10.50",
                 "taxes": [{"tax": "002", "factorType": "Tasa", "rate": "0.160000"}]}]
    out = (await api.ok(CREATE_CUSTOMER, {"i": {**MORAL_CUSTOMER, "products": products}}, token=account.token))["createCustomer"]
    assert out["userErrors"] == []
    cid = out["customer"]["id"]
    upd = """mutation($id: ID!, $i: CustomerUpdateInput!) { updateCustomer(id: $id, input: $i) {
      customer { id email cfdiUse products { productCode unitPrice taxes { tax rate } } } userErrors { field code } } }"""
    out = (await api.ok(upd, {"id": cid, "i": {"email": "pagos@xenon.example.mx", "cfdiUse": "G01"}},
                        token=account.token))["updateCustomer"]
    assert out["userErrors"] == []
    assert out["customer"]["email"] == "pagos@xenon.example.mx"
    assert out["customer"]["products"][0]["unitPrice"] == "10.50"
    out = (await api.ok(upd, {"id": cid, "i": {"rfc": "MAL"}}, token=account.token))["updateCustomer"]
    assert [e["code"] for e in out["userErrors"]] == ["INVALID_RFC"]

    lst = "query($s: String) { customers(first: 10, search: $s) { nodes { id rfc } pageInfo { hasNextPage } } }"
    data = await api.ok(lst, {"s": "xenon"}, token=account.token)
    assert [n["id"] for n in data["customers"]["nodes"]] == [cid]

    other = await sign_up("Otra")
    assert (await api.ok(lst, {"s": None}, token=other.token))["customers"]["nodes"] == []
    out = (await api.ok(upd, {"id": cid, "i": {"email": "x@y.mx"}}, token=other.token))["updateCustomer"]
    assert [e["code"] for e in out["userErrors"]] == ["NOT_FOUND"]

    dele = "mutation($id: ID!) { deleteCustomer(id: $id) { success userErrors { code } } }"
    assert (await api.ok(dele, {"id": cid}, token=account.token))["deleteCustomer"]["success"] is True
    assert (await api.ok(lst, {"s": None}, token=account.token))["customers"]["nodes"] == []


async def test_sat_catalog_search(api, sign_up):
    account = await sign_up("Kemper")
    q = "query($n: String!, $s: String!) { satCatalog(name: $n, search: $s, first: 5) { code description } }"
    data = await api.ok(q, {"n": "RegimenFiscal", "s": "601"}, token=account.token)
    assert data["satCatalog"][0]["code"] == "601"
    r = await api.execute(q, {"n": "NoExiste", "s": ""}, token=account.token)
    assert r.error_codes == ["NOT_FOUND"]
    # A 10 KB search is refused at once with a typed error (it used to stall the event loop ~8 s).
    r = await api.execute(q, {"n": "ClaveProdServ", "s": "computadora " * 900}, token=account.token)
    assert r.error_codes == ["SEARCH_TOO_LONG"]


def _synthetic_csd(serial: str, rfc: str = "AAA010101AAA") -> tuple[str, str]:
    """A certificate shaped like a CSD (OU, signing-only key usage) under the name of SAT's test
    authority (recognised by name outside production), and its encrypted PKCS#8 key."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PRUEBA SA DE CV"),
                      x509.NameAttribute(x509.ObjectIdentifier("2.5.4.45"), rfc),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Sucursal 1")])
    now = datetime.now(timezone.utc)
    sat_test_authority = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AC UAT"),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SERVICIO DE ADMINISTRACION TRIBUTARIA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(sat_test_authority).public_key(key.public_key())
            .serial_number(int.from_bytes(serial.encode(), "big"))
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(CSD_PASSWORD.encode()))
    return (base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
            base64.b64encode(key_der).decode())


async def test_several_csds_one_active(api, sign_up):
    account = await _issuer_account(api, sign_up, {**ISSUER, "rfc": "AAA010101AAA", "legalName": "PRUEBA"})
    ids = []
    for serial in ("30001000000500000011", "30001000000500000012"):
        cer, key = _synthetic_csd(serial)
        out = (await api.ok(UPLOAD_CSD, {"c": cer, "k": key, "p": CSD_PASSWORD}, token=account.token))["uploadCsd"]
        assert out["userErrors"] == []
        ids.append(out["certificate"]["id"])
    certs = (await api.ok(ISSUER_Q, token=account.token))["issuer"]["certificates"]
    assert [c["active"] for c in certs] == [True, False]
    act = "mutation($id: ID!) { activateCsd(id: $id) { certificate { id active } userErrors { code } } }"
    out = (await api.ok(act, {"id": ids[1]}, token=account.token))["activateCsd"]
    assert out["userErrors"] == [] and out["certificate"]["active"] is True
    certs = (await api.ok(ISSUER_Q, token=account.token))["issuer"]["certificates"]
    assert [c["active"] for c in certs] == [False, True]
    other = await sign_up("Otra")
    out = (await api.ok(act, {"id": ids[0]}, token=other.token))["activateCsd"]
    assert [e["code"] for e in out["userErrors"]] == ["NOT_FOUND"]


async def test_create_series_errors_name_its_arguments(api, sign_up):
    account = await _issuer_account(api, sign_up)
    q = """mutation($c: String!, $n: Int!) { createSeries(code: $c, nextFolio: $n) { series { code nextFolio }
      userErrors { field code } } }"""
    bad = (await api.ok(q, {"c": "no válida!", "n": 1}, token=account.token))["createSeries"]
    assert bad["userErrors"] == [{"field": ["code"], "code": "INVALID_SERIES"}]
    bad = (await api.ok(q, {"c": "B", "n": 0}, token=account.token))["createSeries"]
    assert bad["userErrors"] == [{"field": ["nextFolio"], "code": "INVALID_FOLIO"}]
    ok = (await api.ok(q, {"c": "B", "n": 7}, token=account.token))["createSeries"]
    assert ok == {"series": {"code": "B", "nextFolio": 7}, "userErrors": []}
    again = (await api.ok(q, {"c": "B", "n": 1}, token=account.token))["createSeries"]
    assert again["userErrors"] == [{"field": ["code"], "code": "SERIES_EXISTS"}]
