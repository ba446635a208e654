"""Certificado de Sello Digital (CSD): load, check, and seal a CFDI with it.

How a CSD differs from a FIEL (e.firma), both issued by SAT to the same RFC: a CSD carries the
branch name in the subject's OU and its keyUsage is only digitalSignature + nonRepudiation; a
FIEL has no OU and adds dataEncipherment/keyAgreement plus extendedKeyUsage (email/clientAuth).
phpcfdi/credentials decides by the OU; we require both signals to say CSD, because a FIEL must
never seal invoices (PACs reject a FIEL-sealed CFDI: "El certificado corresponde a una FIEL").

Uploaded files are hostile until proven otherwise:
- The key's PBKDF2 iteration count comes from the file, and decrypting runs every iteration with the
  GIL held (a thread does not help: 3 million iterations stop the whole process for a second). The
  count is read from the DER before any decryption and capped (`MAX_KEY_ITERATIONS`).
- A CSD must come from SAT: issued by one of SAT's certification authorities, its signature
  verified against the authority's certificate shipped in `resources/sat-ca/` (see `SatAuthorities`).
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

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
    KEY_UNSUPPORTED = "CSD_KEY_UNSUPPORTED"
    NOT_ISSUED_BY_SAT = "CSD_NOT_ISSUED_BY_SAT"

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


# SAT's keys use 2048 PBKDF2 iterations (OpenSSL's default, which also re-exports keep); 10,000 is
# what Java's keytool and several PKCS#12 tools write. Above it nothing legitimate is gained, and
# each further 10,000 costs the process ~3 ms of CPU with the GIL held.
MAX_KEY_ITERATIONS = 10_000
MAX_KEY_BYTES = 16_384  # a 4096-bit RSA key is ~2.4 KB encrypted

# DER of the OIDs that decide how the key is encrypted (PKCS#5 v2.1 = RFC 8018, PKCS#12 = RFC 7292).
_PBES2 = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_PBES1_PREFIX = bytes.fromhex("2a864886f70d0105")  # 1.2.840.113549.1.5.{1,3,4,6,10,11}: PBEParameter
_PKCS12_PBE_PREFIX = bytes.fromhex("2a864886f70d010c01")  # 1.2.840.113549.1.12.1.x: pkcs-12PbeParams
_SEQUENCE, _INTEGER, _OID = 0x30, 0x02, 0x06


def _der_items(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, content start, content end) of each DER element in data[start:end]. Tiny on
    purpose: definite lengths only (DER), bounds checked, ValueError on anything else."""
    items = []
    pos = start
    while pos < end:
        if pos + 2 > end:
            raise ValueError("truncated DER")
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            size = length & 0x7F
            if not 1 <= size <= 4 or pos + size > end:
                raise ValueError("bad DER length")
            length = int.from_bytes(data[pos:pos + size], "big")
            pos += size
        if pos + length > end:
            raise ValueError("DER element overruns its container")
        items.append((tag, pos, pos + length))
        pos += length
    return items


def _der_sequence(data: bytes, item: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    if item[0] != _SEQUENCE:
        raise ValueError("expected a SEQUENCE")
    return _der_items(data, item[1], item[2])


def key_iterations(key_der: bytes) -> int | None:
    """How many key-derivation iterations decrypting this PKCS#8 key costs; None if it is not
    encrypted (a plain PrivateKeyInfo). Raises CsdError(KEY_UNSUPPORTED) for encryption schemes we
    cannot bound (scrypt, unknown) and ValueError when the DER is not an EncryptedPrivateKeyInfo."""
    top = _der_items(key_der, 0, len(key_der))
    if len(top) != 1:
        raise ValueError("expected one DER element")
    fields = _der_sequence(key_der, top[0])
    if not fields or fields[0][0] == _INTEGER:  # PrivateKeyInfo starts with its version
        return None
    algorithm = _der_sequence(key_der, fields[0])
    if len(algorithm) < 2 or algorithm[0][0] != _OID:
        raise ValueError("bad AlgorithmIdentifier")
    oid = key_der[algorithm[0][1]:algorithm[0][2]]
    params = _der_sequence(key_der, algorithm[1])
    if oid == _PBES2:  # PBES2-params: keyDerivationFunc, encryptionScheme
        kdf = _der_sequence(key_der, params[0]) if params else []
        if len(kdf) < 2 or key_der[kdf[0][1]:kdf[0][2]] != _PBKDF2:
            raise CsdError(CsdError.KEY_UNSUPPORTED, "La llave privada usa un cifrado no soportado (se espera PBKDF2, "
                                                     "como en las llaves del SAT).")
        params = _der_sequence(key_der, kdf[1])  # PBKDF2-params: salt, iterationCount, ...
    elif not (oid.startswith(_PBES1_PREFIX) or oid.startswith(_PKCS12_PBE_PREFIX)):
        raise CsdError(CsdError.KEY_UNSUPPORTED, "La llave privada usa un cifrado no soportado.")
    if len(params) < 2 or params[1][0] != _INTEGER or not 1 <= params[1][2] - params[1][1] <= 8:
        raise ValueError("bad iteration count")
    return int.from_bytes(key_der[params[1][1]:params[1][2]], "big", signed=True)


def _check_key_cost(key_der: bytes) -> None:
    if len(key_der) > MAX_KEY_BYTES:
        raise CsdError(CsdError.INVALID_KEY, "El archivo .key no es una llave privada válida.")
    try:
        rounds = key_iterations(key_der)
    except CsdError:
        raise
    except ValueError as exc:
        raise CsdError(CsdError.INVALID_KEY, "El archivo .key no es una llave privada válida.") from exc
    if rounds is not None and not 1 <= rounds <= MAX_KEY_ITERATIONS:
        raise CsdError(
            CsdError.KEY_UNSUPPORTED,
            f"La llave privada usa {rounds:,} iteraciones de derivación; el máximo aceptado es "
            f"{MAX_KEY_ITERATIONS:,} (las llaves del SAT usan 2,048). Usa la llave .key original del SAT.",
        )


def _load_key(key_der: bytes, password: str | bytes) -> rsa.RSAPrivateKey:
    _check_key_cost(key_der)
    pwd = password.encode("utf-8") if isinstance(password, str) else password
    try:
        # OpenSSL's own validation proves p and q prime: ~50 ms per key with the GIL held (a thread
        # does not spare the event loop). `_check_rsa_key` checks the rest cheaply and the caller
        # proves the key signs for the certificate, which is all sealing needs.
        key = serialization.load_der_private_key(key_der, password=pwd, unsafe_skip_rsa_key_validation=True)
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
    _check_rsa_key(key)
    return key


def _check_rsa_key(key: rsa.RSAPrivateKey) -> None:
    """Sizes bounded (an oversized crafted key would make every signature slow) and the CRT
    parameters consistent with each other: integer arithmetic, microseconds."""
    n = key.private_numbers()
    pub = n.public_numbers
    consistent = (
        2048 <= pub.n.bit_length() <= 4096 and 3 <= pub.e < 2**32 and n.p * n.q == pub.n and 1 < n.d < pub.n
        and 0 < n.dmp1 < n.p and 0 < n.dmq1 < n.q and 0 < n.iqmp < n.p and (n.iqmp * n.q) % n.p == 1
        and (pub.e * n.dmp1) % (n.p - 1) == 1 and (pub.e * n.dmq1) % (n.q - 1) == 1
    )
    if not consistent:
        raise CsdError(CsdError.INVALID_KEY, "La llave privada está dañada o no es RSA de 2048 a 4096 bits.")


_PROBE = b"facturacion: la llave firma para este certificado"


def _check_signs_for(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    """A signature made with the key verifies with the certificate: the key works (RSA signing
    releases the GIL, unlike key validation)."""
    signature = key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA256())
    public_key = cert.public_key()
    try:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidSignature
        public_key.verify(signature, _PROBE, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise CsdError(CsdError.KEY_CERT_MISMATCH, "La llave privada no corresponde al certificado.") from None


SAT_CA_DIR = Path(__file__).with_name("resources") / "sat-ca"
# SAT's test authority, which signs the test CSDs SAT publishes for developers. Its certificate is
# not published with them, so outside production it is recognised by name only (see README).
_TEST_AUTHORITY = {NameOID.COMMON_NAME: "AC UAT", NameOID.ORGANIZATION_NAME: "SERVICIO DE ADMINISTRACION TRIBUTARIA"}


@lru_cache(maxsize=1)
def sat_production_authorities() -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_der_x509_certificate(p.read_bytes()) for p in sorted(SAT_CA_DIR.glob("*.cer")))


@dataclass(frozen=True)
class SatAuthorities:
    """Which certification authorities a CSD may come from.

    `production`: SAT's authorities whose certificates we ship; the CSD's signature is verified
    against them. `test_by_name`: also SAT's `AC UAT` test authority, recognised by its name only.
    """

    production: tuple[x509.Certificate, ...]
    test_by_name: bool

    @classmethod
    def for_environment(cls, app_env: str) -> "SatAuthorities":
        """Production trusts only SAT's production authorities; development and test also SAT's
        test authority, so SAT's published test CSDs work there."""
        return cls(sat_production_authorities(), test_by_name=app_env != "production")

    def issued(self, cert: x509.Certificate) -> bool:
        for authority in self.production:
            try:
                cert.verify_directly_issued_by(authority)  # same issuer name and a valid signature
                return True
            except (ValueError, TypeError, InvalidSignature):
                continue
        return self.test_by_name and all(
            [a.value for a in cert.issuer.get_attributes_for_oid(oid)] == [value] for oid, value in _TEST_AUTHORITY.items()
        )


def check_issued_by_sat(cert: x509.Certificate, authorities: SatAuthorities) -> None:
    if not authorities.issued(cert):
        raise CsdError(
            CsdError.NOT_ISSUED_BY_SAT,
            "El certificado no fue emitido por el SAT (¿es autofirmado?). Usa el CSD que descargaste del SAT.",
        )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def load_csd(cer_der: bytes, key_der: bytes, password: str | bytes, now: datetime | None = None, *,
             authorities: SatAuthorities | None = None) -> Csd:
    """Load and check a CSD; raise `CsdError` with a distinct code for each problem.

    Checks, in the order a user can fix them: key encryption cost, password, key/certificate pair,
    CSD (not FIEL), issued by SAT (`authorities`; default: any SAT authority, production or test),
    validity window against `now` (default: current UTC time).

    CPU-heavy (key decryption, RSA key checks, signature verification): call it off the event loop.
    """
    cert = load_certificate(cer_der)
    key = _load_key(key_der, password)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise CsdError(CsdError.KEY_CERT_MISMATCH, "La llave privada no corresponde al certificado.")
    _check_signs_for(key, cert)
    if not is_csd_certificate(cert):
        raise CsdError(
            CsdError.NOT_A_CSD, "El certificado no es un Certificado de Sello Digital (¿es una e.firma/FIEL?)."
        )
    check_issued_by_sat(cert, authorities or SatAuthorities.for_environment("development"))
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
    number = certificate_number(cert)
    if not (len(number) == 20 and number.isascii() and number.isdigit()):  # cfdv40.xsd NoCertificado: [0-9]{20}
        raise CsdError(CsdError.INVALID_CERTIFICATE,
                       "El número de certificado no tiene los 20 dígitos de un CSD del SAT (NoCertificado).")
    return Csd(cert, key, certificate_rfc(cert), legal_name, number, valid_from, valid_to)


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
