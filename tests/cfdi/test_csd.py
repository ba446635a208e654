"""CSD loading: each failure has its own code; attributes come out as SAT expects."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sat.cfdi.csd import CsdError, check_rfc, is_csd_certificate, load_csd

from .conftest import CSD_2023_NOW, OLD_CSD_NOW, PASSWORD, read_csd_files


def _code(excinfo) -> str:
    return excinfo.value.code


def test_loads_valid_csd_and_extracts_sat_fields() -> None:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    csd = load_csd(cer, key, PASSWORD, now=CSD_2023_NOW)
    assert csd.rfc == "EKU9003173C9"
    assert csd.legal_name == "ESCUELA KEMPER URGATE SA DE CV"
    assert csd.certificate_number == "30001000000500003416"
    assert csd.valid_from.date().isoformat() == "2023-05-18"
    assert csd.valid_to.date().isoformat() == "2027-05-18"
    assert base64.b64decode(csd.certificate_base64) == cer


def test_persona_fisica_csd() -> None:
    cer, key = read_csd_files("cacx7605101p8_csd")
    csd = load_csd(cer, key, PASSWORD, now=OLD_CSD_NOW)
    assert (csd.rfc, csd.certificate_number) == ("CACX7605101P8", "30001000000400002451")


def test_wrong_password() -> None:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, "incorrecta", now=CSD_2023_NOW)
    assert _code(exc) == "WRONG_PASSWORD"
    assert "contraseña" in exc.value.message


def test_key_from_another_certificate() -> None:
    cer, _ = read_csd_files("eku9003173c9_csd_2023")
    _, other_key = read_csd_files("xia190128j61_csd")
    with pytest.raises(CsdError) as exc:
        load_csd(cer, other_key, PASSWORD, now=CSD_2023_NOW)
    assert _code(exc) == "KEY_CERT_MISMATCH"


def test_expired_certificate() -> None:
    cer, key = read_csd_files("xia190128j61_csd")
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, PASSWORD, now=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert _code(exc) == "CERTIFICATE_EXPIRED"


def test_not_yet_valid_certificate() -> None:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, PASSWORD, now=datetime(2023, 1, 1, tzinfo=timezone.utc))
    assert _code(exc) == "CERTIFICATE_NOT_YET_VALID"


def test_rfc_mismatch(csd_eku) -> None:
    check_rfc(csd_eku, "eku9003173c9")  # case-insensitive, no error
    with pytest.raises(CsdError) as exc:
        check_rfc(csd_eku, "XIA190128J61")
    assert _code(exc) == "RFC_MISMATCH"


def test_garbage_files() -> None:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    with pytest.raises(CsdError) as exc:
        load_csd(b"not a cert", key, PASSWORD)
    assert _code(exc) == "INVALID_CERTIFICATE"
    with pytest.raises(CsdError) as exc:
        load_csd(cer, b"not a key", PASSWORD)
    assert _code(exc) == "INVALID_KEY"


def _fiel_like_pair(with_ou: bool, fiel_usage: bool) -> tuple[bytes, bytes]:
    """A self-signed certificate shaped like SAT's FIEL (no OU; keyAgreement/dataEncipherment,
    emailProtection/clientAuth EKU) or like a CSD, with an encrypted PKCS#8 DER key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attrs = [
        x509.NameAttribute(NameOID.COMMON_NAME, "PRUEBA SA DE CV"),
        x509.NameAttribute(x509.ObjectIdentifier("2.5.4.45"), "AAA010101AAA"),
    ]
    if with_ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Sucursal 1"))
    name = x509.Name(attrs)
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(b"30001000000500000001", "big"))
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=fiel_usage,
                key_agreement=fiel_usage,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if fiel_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    cert = builder.sign(key, hashes.SHA256())
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    return cert.public_bytes(serialization.Encoding.DER), key_der


@pytest.mark.parametrize("with_ou,fiel_usage", [(False, True), (True, True), (False, False)])
def test_fiel_is_not_a_csd(with_ou: bool, fiel_usage: bool) -> None:
    cer, key = _fiel_like_pair(with_ou, fiel_usage)
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, PASSWORD)
    assert _code(exc) == "NOT_A_CSD"


def test_csd_shaped_self_signed_certificate_is_refused() -> None:
    # Shaped like a CSD in every way but not issued by SAT (see test_csd_hostile.py).
    cer, key = _fiel_like_pair(with_ou=True, fiel_usage=False)
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, PASSWORD)
    assert _code(exc) == "CSD_NOT_ISSUED_BY_SAT"


def test_sat_test_csds_are_recognised_as_csd() -> None:
    for stem in ("eku9003173c9_csd_2023", "eku9003173c9_csd", "xia190128j61_csd", "cacx7605101p8_csd"):
        cer, _ = read_csd_files(stem)
        assert is_csd_certificate(x509.load_der_x509_certificate(cer))
