"""Credential checks: argon2id passwords, TOTP, recovery codes, and login throttling in Redis."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from redis.asyncio import Redis

from shared.crypto import hash_token

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile.
_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so that response time does not reveal accounts.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))

MIN_PASSWORD = 10
MAX_PASSWORD = 256
TOTP_ISSUER = "Facturación"
RECOVERY_CODE_COUNT = 10


def normalize_email(email: str) -> str:
    return email.strip().lower()


def password_problem(password: str, email: str = "") -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"La contraseña debe tener al menos {MIN_PASSWORD} caracteres."
    if len(password) > MAX_PASSWORD:
        return f"La contraseña no puede tener más de {MAX_PASSWORD} caracteres."
    if email and password.lower() == email.lower():
        return "La contraseña no puede ser igual a tu correo."
    return None


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


# --- TOTP ---------------------------------------------------------------------------------------

def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def qr_svg(data: str) -> str:
    return segno.make(data, error="m").svg_inline(scale=4)


def totp_step(secret: str, code: str, *, after_step: int | None, now: float | None = None) -> int | None:
    """The time step `code` matches (±1 step for clock drift), or None. A step at or before
    `after_step` was already used and is refused, so an intercepted code cannot be replayed."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now = time.time() if now is None else now
    current = int(now // totp.interval)
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            if after_step is not None and step <= after_step:
                return None
            return step
    return None


def new_recovery_codes() -> list[str]:
    # 10 chars from an unambiguous alphabet, shown grouped as xxxxx-xxxxx.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(alphabet) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def hash_recovery_code(code: str) -> str:
    return hash_token(code.strip().lower().replace("-", "").replace(" ", ""))


# --- throttling ---------------------------------------------------------------------------------

class Throttle:
    """Counts failed attempts per account and per client IP in Redis (shared by all instances).

    An account is locked for `lockout_seconds` after `max_per_account` failures, whatever the
    IP; an IP is blocked after `max_per_ip` failures across accounts (password spraying).
    """

    def __init__(self, redis: Redis, *, max_per_account: int, max_per_ip: int, lockout_seconds: int, scope: str = "login"):
        self.redis, self.scope = redis, scope
        self.max_per_account, self.max_per_ip, self.window = max_per_account, max_per_ip, lockout_seconds

    def _keys(self, account: str, ip: str) -> tuple[str, str]:
        acct = hashlib.sha256(account.encode()).hexdigest()[:32]
        return f"throttle:{self.scope}:acct:{acct}", f"throttle:{self.scope}:ip:{ip}"

    async def retry_after(self, account: str, ip: str) -> int:
        """Seconds until another attempt is allowed, or 0."""
        acct_key, ip_key = self._keys(account, ip)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(acct_key).ttl(acct_key).get(ip_key).ttl(ip_key)
            acct, acct_ttl, ipc, ip_ttl = await pipe.execute()
        wait = 0
        if acct and int(acct) >= self.max_per_account:
            wait = max(wait, acct_ttl)
        if ipc and int(ipc) >= self.max_per_ip:
            wait = max(wait, ip_ttl)
        return max(int(wait), 0)

    async def failed(self, account: str, ip: str) -> None:
        acct_key, ip_key = self._keys(account, ip)
        # SET NX EX starts the window on the first failure; INCR keeps that TTL (Redis >= 6.2).
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in (acct_key, ip_key):
                pipe.set(key, 0, ex=self.window, nx=True).incr(key)
            await pipe.execute()

    async def succeeded(self, account: str) -> None:
        await self.redis.delete(self._keys(account, "-")[0])
