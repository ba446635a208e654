"""Secrets at rest and opaque tokens.

`seal`/`unseal` implement an AES-256-GCM envelope: each secret gets its own random data key,
which is itself encrypted with the key-encryption key (KEK) from configuration. The KEK id is kept
in the sealed value so the KEK can rotate (old keys stay configured for decryption only). The
`context` is bound as associated data so a ciphertext copied to another row or purpose fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import datetime, timezone

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import Settings


class SecretDecryptionError(Exception):
    pass


def _keys(settings: Settings) -> dict[str, bytes]:
    keys = {settings.key_encryption_key_id: base64.b64decode(settings.key_encryption_key)}
    for pair in filter(None, (p.strip() for p in settings.key_encryption_old_keys.split(","))):
        kid, _, b64 = pair.partition(":")
        keys.setdefault(kid, base64.b64decode(b64))
    return keys


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def seal(plaintext: bytes, *, context: str, settings: Settings) -> str:
    kek_id = settings.key_encryption_key_id
    kek = AESGCM(_keys(settings)[kek_id])
    dek = AESGCM.generate_key(bit_length=256)
    dek_nonce, nonce = os.urandom(12), os.urandom(12)
    wrapped = kek.encrypt(dek_nonce, dek, context.encode())
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, context.encode())
    return ".".join(["v1", kek_id, _b64(dek_nonce + wrapped), _b64(nonce + ciphertext)])


def unseal(sealed: str, *, context: str, settings: Settings) -> bytes:
    try:
        version, kek_id, wrapped_b64, ct_b64 = sealed.split(".")
        if version != "v1":
            raise ValueError(version)
        kek = AESGCM(_keys(settings)[kek_id])
        wrapped, ct = _unb64(wrapped_b64), _unb64(ct_b64)
        dek = kek.decrypt(wrapped[:12], wrapped[12:], context.encode())
        return AESGCM(dek).decrypt(ct[:12], ct[12:], context.encode())
    except Exception as exc:  # noqa: BLE001 - any failure means the same: cannot be opened
        raise SecretDecryptionError("sealed secret cannot be opened with the configured keys") from exc


def sealed_key_id(sealed: str) -> str:
    return sealed.split(".")[1]


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    """An unguessable URL-safe token (refresh tokens, invitations, API keys, email links)."""
    return prefix + secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """Tokens are stored hashed: high-entropy secrets need no slow hash, only a one-way one."""
    return hashlib.sha256(token.encode()).hexdigest()


def hmac_sign(message: str, *, settings: Settings, purpose: str) -> str:
    key = hashlib.sha256(base64.b64decode(settings.key_encryption_key) + purpose.encode()).digest()
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def hmac_verify(message: str, signature: str, *, settings: Settings, purpose: str) -> bool:
    return hmac.compare_digest(hmac_sign(message, settings=settings, purpose=purpose), signature)


def signed_path(path: str, expires_at: datetime, *, settings: Settings, purpose: str) -> str:
    """`path?exp=&sig=`: a link that authorizes exactly this path until `expires_at`."""
    exp = int(expires_at.timestamp())
    return f"{path}?exp={exp}&sig={hmac_sign(f'{path}:{exp}', settings=settings, purpose=purpose)}"


def verify_signed_path(path: str, exp: str | None, sig: str | None, *, settings: Settings, purpose: str) -> bool:
    try:
        if int(exp or "") < int(datetime.now(timezone.utc).timestamp()):
            return False
    except ValueError:
        return False
    return hmac_verify(f"{path}:{exp}", sig or "", settings=settings, purpose=purpose)
