"""Crafting PKCS#8 keys the way an attacker (or an odd export tool) would: our own PBES2 encoding,
so the iteration count and the scheme are whatever the test says (cryptography always writes 2048)."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _oid(hex_der: str) -> bytes:
    return _tlv(0x06, bytes.fromhex(hex_der))


PBES2, PBKDF2 = "2a864886f70d01050d", "2a864886f70d01050c"
HMAC_SHA256, AES256_CBC = "2a864886f70d0209", "60864801650304012a"
SCRYPT = "2b06010401da47040b"  # 1.3.6.1.4.1.11591.4.11


def reencrypt(key_der: bytes, password: bytes, new_password: bytes, iterations: int, *, kdf_oid: str = PBKDF2) -> bytes:
    """The same private key as PBES2(PBKDF2-HMAC-SHA256, AES-256-CBC) with `iterations` rounds."""
    plain = serialization.load_der_private_key(key_der, password).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    salt, iv = os.urandom(16), os.urandom(16)
    secret = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(new_password)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    data = enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()
    kdf = _seq(_oid(kdf_oid), _seq(_tlv(0x04, salt), _int(iterations), _seq(_oid(HMAC_SHA256), _tlv(0x05, b""))))
    scheme = _seq(_oid(AES256_CBC), _tlv(0x04, iv))
    return _seq(_seq(_oid(PBES2), _seq(kdf, scheme)), _tlv(0x04, data))


def claiming(iterations: int, *, kdf_oid: str = PBKDF2, kdf_params: bytes | None = None) -> bytes:
    """A well-formed EncryptedPrivateKeyInfo that claims `iterations` (its ciphertext is junk:
    only a decryption attempt would notice, and that is what must never happen)."""
    params = kdf_params or _seq(_tlv(0x04, b"s" * 16), _int(iterations), _seq(_oid(HMAC_SHA256), _tlv(0x05, b"")))
    kdf = _seq(_oid(kdf_oid), params)
    scheme = _seq(_oid(AES256_CBC), _tlv(0x04, b"i" * 16))
    return _seq(_seq(_oid(PBES2), _seq(kdf, scheme)), _tlv(0x04, b"\0" * 1232))
