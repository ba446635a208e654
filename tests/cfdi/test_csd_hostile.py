"""Uploaded CSDs are hostile until proven otherwise: the key's decryption cost is bounded before any
decryption, and the certificate must come from one of SAT's certification authorities."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import given, settings, strategies as st

from sat.cfdi.csd import (
    MAX_KEY_ITERATIONS, CsdError, SatAuthorities, key_iterations, load_csd, sat_production_authorities,
)

from .conftest import CSD_2023_NOW, PASSWORD, SAT_CERTS_DIR, read_csd_files
from .hostile_keys import SCRYPT, _int, _seq, _tlv, claiming, reencrypt

PRODUCTION = SatAuthorities.for_environment("production")
TEST = SatAuthorities.for_environment("test")


def _eku_with_key(iterations: int, **kw) -> tuple[bytes, bytes]:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    return cer, reencrypt(key, PASSWORD.encode(), b"otra-clave", iterations, **kw)


def test_sat_keys_use_2048_iterations() -> None:
    for stem in ("eku9003173c9_csd_2023", "eku9003173c9_csd", "xia190128j61_csd", "cacx7605101p8_csd"):
        assert key_iterations(read_csd_files(stem)[1]) == 2048


def test_key_at_the_bound_still_loads() -> None:
    cer, key = _eku_with_key(MAX_KEY_ITERATIONS)
    assert load_csd(cer, key, "otra-clave", now=CSD_2023_NOW).rfc == "EKU9003173C9"


@pytest.mark.parametrize("iterations", [MAX_KEY_ITERATIONS + 1, 30_000_000, 2**31 - 1])
def test_key_with_too_many_iterations_is_refused_before_decrypting(iterations: int) -> None:
    # Wrong password on purpose: had the key been decrypted, the answer would be WRONG_PASSWORD
    # (after 2^31 iterations: minutes of CPU). Being refused first proves nothing was decrypted.
    cer, _ = read_csd_files("eku9003173c9_csd_2023")
    key = claiming(iterations)
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, "no-es-la-clave", now=CSD_2023_NOW)
    assert exc.value.code == "CSD_KEY_UNSUPPORTED"
    assert f"{iterations:,}" in exc.value.message


def test_unbounded_key_derivation_is_refused() -> None:
    cer, _ = read_csd_files("eku9003173c9_csd_2023")
    # scrypt's cost (N=2^20 here) is another CPU and memory bomb we do not try to bound: refused.
    key = claiming(1, kdf_oid=SCRYPT, kdf_params=_seq(_tlv(0x04, b"s" * 16), _int(2**20), _int(8), _int(1)))
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, PASSWORD, now=CSD_2023_NOW)
    assert exc.value.code == "CSD_KEY_UNSUPPORTED"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_key_never_escapes_as_another_error(data: bytes) -> None:
    try:
        key_iterations(data)
    except (ValueError, CsdError):
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=1300), st.binary(min_size=1, max_size=4))
def test_corrupted_sat_key_is_a_typed_error(offset: int, junk: bytes) -> None:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    corrupted = key[:offset] + junk + key[offset + len(junk):]
    try:
        load_csd(cer, corrupted, PASSWORD, now=CSD_2023_NOW)
    except CsdError as exc:
        assert exc.code in {"INVALID_KEY", "WRONG_PASSWORD", "CSD_KEY_UNSUPPORTED", "KEY_CERT_MISMATCH"}


# --- issued by SAT ------------------------------------------------------------------------------

def _forge(issuer: x509.Name | None = None) -> bytes:
    """A certificate shaped exactly like EKU's CSD (same key, subject, serial, usage) but signed by
    its own key: self-signed, or claiming `issuer`."""
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    real = x509.load_der_x509_certificate(cer)
    private = serialization.load_der_private_key(key, PASSWORD.encode())
    builder = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(issuer or real.subject)
               .public_key(private.public_key()).serial_number(real.serial_number)
               .not_valid_before(real.not_valid_before_utc).not_valid_after(real.not_valid_after_utc))
    for ext in real.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(private, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_sat_test_csds_are_accepted_outside_production() -> None:
    for stem, now in (("eku9003173c9_csd_2023", CSD_2023_NOW), ("xia190128j61_csd", datetime(2021, 6, 1, tzinfo=timezone.utc))):
        cer, key = read_csd_files(stem)
        assert load_csd(cer, key, PASSWORD, now=now, authorities=TEST).certificate_number


def test_self_signed_csd_is_refused() -> None:
    _, key = read_csd_files("eku9003173c9_csd_2023")
    for authorities in (TEST, PRODUCTION):
        with pytest.raises(CsdError) as exc:
            load_csd(_forge(), key, PASSWORD, now=CSD_2023_NOW, authorities=authorities)
        assert exc.value.code == "CSD_NOT_ISSUED_BY_SAT"


def test_forged_production_issuer_name_fails_the_signature_check() -> None:
    # Claiming to come from SAT's production authority is not enough: its signature is verified.
    _, key = read_csd_files("eku9003173c9_csd_2023")
    cer = _forge(issuer=sat_production_authorities()[-1].subject)
    for authorities in (TEST, PRODUCTION):
        with pytest.raises(CsdError) as exc:
            load_csd(cer, key, PASSWORD, now=CSD_2023_NOW, authorities=authorities)
        assert exc.value.code == "CSD_NOT_ISSUED_BY_SAT"


def test_production_refuses_sat_test_authority() -> None:
    cer, key = read_csd_files("eku9003173c9_csd_2023")
    with pytest.raises(CsdError) as exc:
        load_csd(cer, key, PASSWORD, now=CSD_2023_NOW, authorities=PRODUCTION)
    assert exc.value.code == "CSD_NOT_ISSUED_BY_SAT"


def test_production_certificates_verify_against_shipped_authorities() -> None:
    # Real production certificates (a PAC's and SAT's own CSDs) verify against what we ship.
    for path in sorted(SAT_CERTS_DIR.glob("0000100000*.cer")):
        assert PRODUCTION.issued(x509.load_der_x509_certificate(path.read_bytes())), path.name
    for path in sorted(SAT_CERTS_DIR.glob("3000100000*.cer")):  # AC UAT: test only
        cert = x509.load_der_x509_certificate(path.read_bytes())
        assert not PRODUCTION.issued(cert) and TEST.issued(cert), path.name


def _rewrap(numbers) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(PASSWORD.encode()))


def test_key_with_inconsistent_parameters_is_refused() -> None:
    # OpenSSL's full validation is skipped (it holds the GIL ~50 ms): our checks must catch this.
    from cryptography.hazmat.primitives.asymmetric import rsa

    cer, key = read_csd_files("eku9003173c9_csd_2023")
    n = serialization.load_der_private_key(key, PASSWORD.encode()).private_numbers()
    broken = rsa.RSAPrivateNumbers(p=n.p, q=n.q, d=n.d, dmp1=n.dmp1, dmq1=n.dmq1, iqmp=(n.iqmp + 1) % n.p,
                                   public_numbers=n.public_numbers)
    with pytest.raises(CsdError) as exc:
        load_csd(cer, _rewrap(broken), PASSWORD, now=CSD_2023_NOW)
    assert exc.value.code == "INVALID_KEY"
