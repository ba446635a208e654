"""Certificado de Sello Digital (CSD): load, check, and seal a CFDI with it.

How a CSD differs from a FIEL (e.firma), both issued by SAT to the same RFC: a CSD carries the
branch name in the subject's OU and its keyUsage is only digitalSignature + nonRepudiation; a
FIEL has no OU and adds dataEncipherment/keyAgreement plus extendedKeyUsage (email/clientAuth).
phpcfdi/credentials decides by the OU; we require both signals to say CSD, because a FIEL must
never seal invoices (PACs reject a FIEL-sealed CFDI: "El certificado corresponde a una FIEL").
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from .cadena import cadena_original

# x500UniqueIdentifier: SAT puts "RFC" or "RFC / RFC-of-legal-representative" here.
_OID_UNIQUE_ID = x509.ObjectIdentifier("2.5.4.45")
_OID_NAME = x509.ObjectIdentifier("2.5.4.41")


class CsdError(ValueError):
    """A CSD could not be used. `code` is stable for the API; `message` is for the user (es-MX)."""

    WRONG_PASSWORD = "WRONG_PASSWORD"
    KEY_CERT_MISMATCH = "KEY_CERT_MISMATCH"
    NOT_A_CSD = "NOT_A_CSD"
    CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
    CERTIFICATE_NOT_YET_VALID = "CERTIFICATE_NOT_YET_VALID"
    RFC_MISMATCH = "RFC_MISMATCH"
    INVALID_CERTIFICATE = "INVALID_CERTIFICATE"
    INVALID_KEY = "INVALID_KEY"

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Csd:
    """A loaded, checked CSD ready to seal."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    rfc: str
    legal_name: str
    certificate_number: str  # NoCertificado: 20 ASCII digits
    valid_from: datetime  # UTC
    valid_to: datetime  # UTC

    @property
    def certificate_base64(self) -> str:
        """The Certificado attribute: base64 of the DER certificate, no line breaks."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        """RSA-SHA256 PKCS#1 v1.5, the signature SAT specifies for Sello."""
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def certificate_number(cert: x509.Certificate) -> str:
    """NoCertificado: SAT encodes the 20 digits as the ASCII bytes of the serial number."""
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return text if text.isdigit() else format(serial, "d")


def _subject_value(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    value = attrs[0].value if attrs else ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def certificate_rfc(cert: x509.Certificate) -> str:
    """The taxpayer's RFC: first token of x500UniqueIdentifier ("EKU9003173C9 / XIQB891116QE4")."""
    return _subject_value(cert, _OID_UNIQUE_ID).split("/")[0].strip().upper()


def is_csd_certificate(cert: x509.Certificate) -> bool:
    """True for a CSD; False for a FIEL or anything else (see module docstring)."""
    has_branch = bool(_subject_value(cert, NameOID.ORGANIZATIONAL_UNIT_NAME).strip())
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    signing_only = (
        usage.digital_signature
        and usage.content_commitment
        and not usage.data_encipherment
        and not usage.key_agreement
        and not usage.key_encipherment
    )
    return has_branch and signing_only


def load_certificate(cer_der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(cer_der)
    except ValueError:
        try:
            return x509.load_pem_x509_certificate(cer_der)
        except ValueError as exc:
            raise CsdError(CsdError.INVALID_CERTIFICATE, "El archivo .cer no es un certificado válido.") from exc


def _load_key(key_der: bytes, password: str | bytes) -> rsa.RSAPrivateKey:
    pwd = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key = serialization.load_der_private_key(key_der, password=pwd)
    except ValueError as exc:
        # cryptography reports a bad password as "Bad decrypt. Incorrect password?"; any other
        # ValueError means the file is not a PKCS#8 key at all.
        if "password" in str(exc).lower() or "decrypt" in str(exc).lower():
            raise CsdError(CsdError.WRONG_PASSWORD, "La contraseña de la llave privada es incorrecta.") from exc
        raise CsdError(CsdError.INVALID_KEY, "El archivo .key no es una llave privada válida.") from exc
    except TypeError as exc:  # unencrypted key given with a password, or vice versa
        raise CsdError(CsdError.INVALID_KEY, "El archivo .key no es una llave privada cifrada válida.") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CsdError(CsdError.INVALID_KEY, "La llave privada no es RSA.")
    return key


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def load_csd(cer_der: bytes, key_der: bytes, password: str | bytes, now: datetime | None = None) -> Csd:
    """Load and check a CSD; raise `CsdError` with a distinct code for each problem.

    Checks, in the order a user can fix them: password, key/certificate pair, CSD (not FIEL),
    validity window against `now` (default: current UTC time).
    """
    cert = load_certificate(cer_der)
    key = _load_key(key_der, password)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise CsdError(CsdError.KEY_CERT_MISMATCH, "La llave privada no corresponde al certificado.")
    if not is_csd_certificate(cert):
        raise CsdError(
            CsdError.NOT_A_CSD, "El certificado no es un Certificado de Sello Digital (¿es una e.firma/FIEL?)."
        )
    moment = _utc(now or datetime.now(timezone.utc))
    valid_from, valid_to = cert.not_valid_before_utc, cert.not_valid_after_utc
    if moment < valid_from:
        raise CsdError(
            CsdError.CERTIFICATE_NOT_YET_VALID,
            f"El certificado aún no es vigente (vigente desde {valid_from:%Y-%m-%d}).",
        )
    if moment > valid_to:
        raise CsdError(CsdError.CERTIFICATE_EXPIRED, f"El certificado venció el {valid_to:%Y-%m-%d}.")
    legal_name = _subject_value(cert, _OID_NAME) or _subject_value(cert, NameOID.COMMON_NAME)
    return Csd(cert, key, certificate_rfc(cert), legal_name, certificate_number(cert), valid_from, valid_to)


def check_rfc(csd: Csd, expected_rfc: str) -> None:
    """Raise RFC_MISMATCH unless the CSD belongs to `expected_rfc` (the issuer of the invoice)."""
    if not hmac.compare_digest(csd.rfc, expected_rfc.strip().upper()):
        raise CsdError(
            CsdError.RFC_MISMATCH, f"El certificado pertenece al RFC {csd.rfc}, no a {expected_rfc.strip().upper()}."
        )


def sign_cfdi(comprobante: etree._Element, csd: Csd) -> str:
    """Seal a cfdi:Comprobante in place: NoCertificado, Certificado, then Sello over the cadena.

    Returns the cadena original that was signed (for tests and diagnostics; nothing stores it:
    it can always be recomputed from the XML with `cadena.cadena_original`).
    """
    comprobante.set("NoCertificado", csd.certificate_number)
    comprobante.set("Certificado", csd.certificate_base64)
    cadena = cadena_original(comprobante)
    comprobante.set("Sello", base64.b64encode(csd.sign(cadena.encode("utf-8"))).decode("ascii"))
    return cadena


def verify_signature(cert: x509.Certificate, data: bytes, signature_b64: str) -> bool:
    """True when `signature_b64` is a valid RSA-SHA256 PKCS#1 v1.5 signature of `data` by `cert`."""
    try:
        signature = base64.b64decode("".join(signature_b64.split()), validate=True)
    except ValueError:
        return False
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
