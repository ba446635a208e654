"""Verification of stamped CFDIs (corpus per manifest, tampering) and our own TFD."""

from __future__ import annotations

import csv
from datetime import datetime

import pytest

from sat.cfdi.build import build_tree, to_bytes
from sat.cfdi.cadena import tfd_cadena_original
from sat.cfdi.csd import sign_cfdi
from sat.cfdi.models import CFDI_NS, TFD_NS
from sat.cfdi.tfd import stamp_cfdi
from sat.cfdi.totals import compute_totals
from sat.cfdi.validate import validate_xsd
from sat.cfdi.verify import directory_lookup, verify_cfdi

from .conftest import CORPUS_DIR, SAT_CERTS_DIR, make_invoice

MANIFEST = list(csv.DictReader((CORPUS_DIR / "manifest.tsv").open(encoding="utf-8"), delimiter="\t"))


@pytest.mark.parametrize("row", MANIFEST, ids=[r["filename"] for r in MANIFEST])
def test_corpus_per_manifest(row: dict[str, str]) -> None:
    result = verify_cfdi((CORPUS_DIR / row["filename"]).read_bytes(), SAT_CERTS_DIR)
    if row["expected"] == "valid":
        assert result.ok, result.errors
        assert result.uuid and result.sello_valid and result.sello_sat_valid and result.sello_cfd_matches
        return
    assert not result.ok
    if row["expected"].startswith("unverifiable"):
        assert result.errors == ["SAT_CERTIFICATE_UNAVAILABLE"] and result.sello_valid
    if row["sello_verifies"] == "False":
        assert not result.sello_valid
    if row["tfd_sellocfd_eq_sello"] == "False":
        assert "SELLO_CFD_MISMATCH" in result.errors
    if row["tfd_sellosat_verifies"] == "BAD":
        assert "SELLO_SAT_INVALID" in result.errors


def test_tampered_amount_is_rejected_though_timbre_is_genuine() -> None:
    data = (CORPUS_DIR / "CfdiUtils__cfdi40-real.xml").read_bytes()
    assert b'Total="1000.00"' in data
    result = verify_cfdi(data.replace(b'Total="1000.00"', b'Total="9000.00"'), SAT_CERTS_DIR)
    assert result.errors == ["SELLO_INVALID"]
    assert result.sello_sat_valid is True  # the timbre alone would not catch it


def test_sat_cert_lookup_refuses_path_tricks() -> None:
    lookup = directory_lookup(SAT_CERTS_DIR)
    assert lookup("../csd/eku9003173c9_csd") is None
    assert lookup("00001000000708361114") is not None


def _stamped(csd_eku, csd_xia):
    root = build_tree(compute_totals(make_invoice()))
    sign_cfdi(root, csd_eku)
    # The sandbox PAC signs with its own certificate (here an old SAT test CSD).
    stamp = stamp_cfdi(
        root,
        csd_xia,
        pac_rfc="SPR190613I52",
        stamped_at=datetime(2025, 6, 1, 10, 31, 5),
        uuid="6f0b4a9e-4a5b-4f6c-9d2e-1234567890ab",
    )
    return root, stamp


def test_generated_tfd_verifies(csd_eku, csd_xia, tmp_path) -> None:
    root, stamp = _stamped(csd_eku, csd_xia)
    assert stamp.uuid == "6F0B4A9E-4A5B-4F6C-9D2E-1234567890AB"
    tfd = root.find(f"{{{CFDI_NS}}}Complemento/{{{TFD_NS}}}TimbreFiscalDigital")
    assert tfd.get("SelloCFD") == root.get("Sello")
    assert tfd.get("NoCertificadoSAT") == "30001000000400002443"
    assert tfd_cadena_original(tfd).startswith(
        "||1.1|6F0B4A9E-4A5B-4F6C-9D2E-1234567890AB|2025-06-01T10:31:05|SPR190613I52|"
    )
    assert validate_xsd(root) == []
    (tmp_path / "30001000000400002443.cer").write_bytes(
        (SAT_CERTS_DIR.parent / "csd" / "xia190128j61_csd.cer").read_bytes()
    )
    result = verify_cfdi(to_bytes(root), tmp_path)
    assert result.ok, result.errors
    # Without the PAC certificate the timbre cannot be trusted.
    assert verify_cfdi(to_bytes(root), SAT_CERTS_DIR).errors == ["SAT_CERTIFICATE_UNAVAILABLE"]


def test_corrupt_sat_certificate_file_reports_unavailable(csd_eku, csd_xia, tmp_path) -> None:
    # Regression: a corrupt <NoCertificadoSAT>.cer raised ValueError out of verify_cfdi.
    root, _stamp = _stamped(csd_eku, csd_xia)
    (tmp_path / "30001000000400002443.cer").write_bytes(b"not a certificate")
    result = verify_cfdi(to_bytes(root), tmp_path)
    assert result.errors == ["SAT_CERTIFICATE_UNAVAILABLE"]
    assert result.sello_valid and result.sello_sat_valid is None
    # PEM is still accepted (csd.load_certificate tries DER, then PEM).
    from cryptography.hazmat.primitives.serialization import Encoding

    from sat.cfdi.csd import load_certificate

    der = (SAT_CERTS_DIR.parent / "csd" / "xia190128j61_csd.cer").read_bytes()
    (tmp_path / "30001000000400002443.cer").write_bytes(load_certificate(der).public_bytes(Encoding.PEM))
    assert verify_cfdi(to_bytes(root), tmp_path).ok


def test_random_uuid_is_uppercase_v4(csd_eku, csd_xia) -> None:
    root = build_tree(compute_totals(make_invoice()))
    sign_cfdi(root, csd_eku)
    stamp = stamp_cfdi(root, csd_xia, "SPR190613I52", datetime(2025, 6, 1, 10, 31, 5))
    assert stamp.uuid == stamp.uuid.upper() and stamp.uuid[14] == "4"
    with pytest.raises(ValueError):
        stamp_cfdi(root, csd_xia, "SPR190613I52", datetime(2025, 6, 1, 10, 31, 5))  # already stamped


def test_unsealed_cfdi_cannot_be_stamped(csd_xia) -> None:
    with pytest.raises(ValueError):
        stamp_cfdi(build_tree(compute_totals(make_invoice())), csd_xia, "SPR190613I52", datetime(2025, 6, 1))


def test_certificado_with_line_breaks_still_verifies() -> None:
    data = (CORPUS_DIR / "CfdiUtils__cfdi40-valid.xml").read_bytes()
    start = data.index(b' Certificado="') + len(b' Certificado="')
    wrapped = data[: start + 76] + b"&#10;" + data[start + 76 :]
    assert verify_cfdi(wrapped, SAT_CERTS_DIR).ok
    # But a certificate that is not one is reported as such.
    end = data.index(b'"', start)
    broken = data[:start] + b"AAAA" + data[end:]
    assert "INVALID_CERTIFICATE" in verify_cfdi(broken, SAT_CERTS_DIR).errors
