"""Verify a stamped CFDI offline: issuer's Sello, PAC's SelloSAT, and that the two belong together.

Three independent checks, because each catches a different forgery:
- Sello over the cadena original with the embedded Certificado: the invoice was not edited after
  the issuer sealed it (and NoCertificado names that certificate).
- SelloSAT over the TFD cadena with the certificate named by NoCertificadoSAT (looked up in a
  directory of `<NoCertificado>.cer` files): the timbre is genuine.
- TFD SelloCFD == Comprobante Sello: the genuine timbre was issued for *this* sealed invoice (a
  tampered-and-resealed CFDI can still carry a valid timbre from the original).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from .cadena import cadena_original, tfd_cadena_original
from .csd import CsdError, certificate_number, load_certificate, verify_signature
from .models import CFDI_NS, TFD_NS
from .xmlsafe import UnsafeXmlError, parse_xml

CertificateLookup = Callable[[str], "x509.Certificate | None"]

# Stable codes for the API; messages in es-MX.
MESSAGES = {
    "MALFORMED_XML": "El XML está mal formado o usa construcciones no permitidas.",
    "NOT_CFDI40": "El documento no es un CFDI versión 4.0.",
    "INVALID_CERTIFICATE": "El atributo Certificado no contiene un certificado válido.",
    "CERTIFICATE_NUMBER_MISMATCH": "NoCertificado no corresponde al certificado incluido.",
    "SELLO_INVALID": "El sello del emisor no corresponde al contenido del comprobante.",
    "NO_TIMBRE": "El CFDI no tiene Timbre Fiscal Digital.",
    "SAT_CERTIFICATE_UNAVAILABLE": "No se encontró el certificado del PAC/SAT para verificar el timbre.",
    "SELLO_SAT_INVALID": "El sello del SAT del timbre no es válido.",
    "SELLO_CFD_MISMATCH": "El timbre no corresponde a este comprobante (SelloCFD distinto del Sello).",
}


@dataclass
class VerificationResult:
    """Outcome of `verify_cfdi`. `ok` only when every check passed."""

    sello_valid: bool = False
    sello_sat_valid: bool | None = None  # None: timbre missing or certificate unavailable
    sello_cfd_matches: bool | None = None
    uuid: str | None = None
    issuer_rfc: str | None = None
    certificate_number: str | None = None
    sat_certificate_number: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.sello_valid and bool(self.sello_sat_valid) and bool(self.sello_cfd_matches)

    @property
    def messages(self) -> list[str]:
        return [MESSAGES[code] for code in self.errors]


def directory_lookup(directory: Path | str) -> CertificateLookup:
    """Lookup of SAT/PAC certificates stored as `<NoCertificado>.cer` (DER or PEM) in `directory`."""
    base = Path(directory)

    def lookup(number: str) -> x509.Certificate | None:
        if not re.fullmatch(r"[0-9]{20}", number):  # never let the XML choose a path
            return None
        path = base / f"{number}.cer"
        if not path.is_file():
            return None
        try:
            cert = load_certificate(path.read_bytes())
        except CsdError:
            # A corrupt file is as good as a missing one: the caller reports
            # SAT_CERTIFICATE_UNAVAILABLE instead of failing the whole verification.
            return None
        return cert if certificate_number(cert) == number else None

    return lookup


def verify_cfdi(data: bytes, sat_certificates: CertificateLookup | Path | str) -> VerificationResult:
    """Verify stamped CFDI bytes. `sat_certificates`: a lookup function or a directory path."""
    lookup = sat_certificates if callable(sat_certificates) else directory_lookup(sat_certificates)
    result = VerificationResult()
    try:
        root = parse_xml(data)
    except UnsafeXmlError:
        result.errors.append("MALFORMED_XML")
        return result
    if root.tag != f"{{{CFDI_NS}}}Comprobante" or root.get("Version") != "4.0":
        result.errors.append("NOT_CFDI40")
        return result
    issuer = root.find(f"{{{CFDI_NS}}}Emisor")
    result.issuer_rfc = issuer.get("Rfc") if issuer is not None else None
    result.certificate_number = root.get("NoCertificado")

    # 1. Issuer's seal.
    try:
        # Some issuers wrap the base64 with line breaks; whitespace is not part of the value.
        cert_b64 = "".join((root.get("Certificado") or "").split())
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
    except ValueError:
        result.errors.append("INVALID_CERTIFICATE")
        cert = None
    if cert is not None:
        if certificate_number(cert) != result.certificate_number:
            result.errors.append("CERTIFICATE_NUMBER_MISMATCH")
        cadena = cadena_original(root)
        result.sello_valid = verify_signature(cert, cadena.encode("utf-8"), root.get("Sello") or "")
        if not result.sello_valid:
            result.errors.append("SELLO_INVALID")

    # 2./3. The timbre.
    tfd = root.find(f"{{{CFDI_NS}}}Complemento/{{{TFD_NS}}}TimbreFiscalDigital")
    if tfd is None:
        result.errors.append("NO_TIMBRE")
        return result
    result.uuid = tfd.get("UUID")
    result.sat_certificate_number = tfd.get("NoCertificadoSAT") or ""
    result.sello_cfd_matches = tfd.get("SelloCFD") == root.get("Sello")
    if not result.sello_cfd_matches:
        result.errors.append("SELLO_CFD_MISMATCH")
    sat_cert = lookup(result.sat_certificate_number)
    if sat_cert is None:
        result.errors.append("SAT_CERTIFICATE_UNAVAILABLE")
    else:
        result.sello_sat_valid = verify_signature(
            sat_cert, tfd_cadena_original(tfd).encode("utf-8"), tfd.get("SelloSAT") or ""
        )
        if not result.sello_sat_valid:
            result.errors.append("SELLO_SAT_INVALID")
    return result
