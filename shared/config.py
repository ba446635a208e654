"""Environment-driven settings shared by every service, validated once at start-up.

Every setting has a safe default for local runs except the ones that identify real resources
(`DATABASE_URL`, `REDIS_URL`): `make dev` and the test suite fill those in (embedded servers when
none is given). In production (`APP_ENV=production`) the secrets must be given explicitly.
"""

from __future__ import annotations

import base64
import sys
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only key-encryption key; production refuses to start with it.
_DEV_KEK = base64.b64encode(b"dev-only-key-encryption-key-32b!").decode()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    app_env: Literal["development", "test", "production"] = "development"
    database_url: str = Field(description="PostgreSQL URL, e.g. postgresql://user@host:5432/db")
    redis_url: str = Field(description="Redis URL, e.g. redis://127.0.0.1:6379/0")
    log_level: str = "INFO"

    # Identity: the auth service signs, everybody verifies against its JWKS.
    jwt_issuer: str = "facturacion-auth"
    jwt_audience: str = "facturacion-api"
    auth_jwks_url: str = "http://127.0.0.1:4001/.well-known/jwks.json"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=3600)
    # How long a subgraph may reuse what it learnt about a membership's token version (shared/authz.py):
    # the longest a role change or removal can lag outside the auth service. 0 = no cache.
    authz_cache_seconds: float = Field(default=1.0, ge=0, le=30)

    # Delivered outbox rows are kept this long (hours) for inspection and replay, then deleted by
    # the relay's leader; undelivered rows are never deleted. 0 = keep forever.
    outbox_retention_hours: int = Field(default=7 * 24, ge=0)

    # AES-256 key-encryption key (base64, 32 bytes) for secrets at rest (CSD keys, TOTP secrets).
    # `key_encryption_key_id` is stored beside every ciphertext so keys can rotate.
    key_encryption_key: str = _DEV_KEK
    key_encryption_key_id: str = "dev"
    # Older keys kept for decryption during rotation: "id1:base64,id2:base64".
    key_encryption_old_keys: str = ""

    # Where services reach the invoice service directly (document downloads for e-mail attachments).
    invoice_service_url: str = "http://127.0.0.1:4002"
    # Where the notification worker reaches the auth service directly (minting e-mail links).
    auth_service_url: str = "http://127.0.0.1:4001"
    # Base URL clients use for signed document downloads (an ingress in production); defaults to
    # the invoice service itself, which is what local runs expose.
    documents_public_url: str | None = None
    app_base_url: str = "http://127.0.0.1:3000"
    # false: this instance serves only its signed-link routes (/documents/*, /receipts/*) and
    # health, for the copy that is published beside the gateway (compose's *-links services).
    serve_graphql: bool = True
    # Proof that a request came through our gateway, which then also appended the client's address
    # to X-Forwarded-For (shared/client_address.py). Unset: X-Forwarded-For is never believed.
    gateway_shared_secret: str = ""
    # Receipts: signed upload/download links point at the expense service (an ingress in
    # production), which alone talks to the object store (shared/object_store.py): this directory
    # by default, or an S3-compatible bucket with RECEIPTS_STORE=s3.
    expense_public_url: str = "http://127.0.0.1:4003"
    receipts_store: Literal["local", "s3"] = "local"
    receipts_dir: str = ".data/receipts"
    # S3-compatible store. No endpoint = AWS; empty keys = boto3's credential chain (instance role).
    s3_endpoint_url: str | None = None
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")  # SecretStr: never shown in reprs or logs
    receipt_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)

    # Open GraphQL subscriptions per process (shared/pubsub.py): past these a new one is refused
    # with TOO_MANY_SUBSCRIPTIONS. A dashboard tab needs a handful; fan-out benches raise them.
    subscriptions_max_per_user: int = Field(default=100, ge=1)
    subscriptions_max_per_organization: int = Field(default=1000, ge=1)

    # Login throttling
    login_max_failures_per_account: int = 5
    login_max_failures_per_ip: int = 30
    login_lockout_seconds: int = 900
    # Requests that send an e-mail (sign-up, password reset), per address and per client, per window
    mail_requests_max_per_address: int = 3
    mail_requests_max_per_client: int = 20
    mail_requests_window_seconds: int = 900

    # Email
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    mail_from: str = "Facturación <no-reply@facturacion.local>"

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("debe ser una URL postgresql:// (PostgreSQL)")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_only(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("debe ser una URL redis://, rediss:// o unix://")
        return v

    @field_validator("key_encryption_key")
    @classmethod
    def _kek_is_32_bytes(cls, v: str) -> str:
        try:
            raw = base64.b64decode(v, validate=True)
        except Exception as exc:  # noqa: BLE001 - any decode failure means the same thing
            raise ValueError("debe ser base64 válido") from exc
        if len(raw) != 32:
            raise ValueError("debe decodificar a 32 bytes (AES-256)")
        return v

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> "Settings":
        if self.app_env == "production" and self.key_encryption_key == _DEV_KEK:
            raise ValueError("KEY_ENCRYPTION_KEY must be set in production (never the dev key)")
        if self.receipts_store == "s3" and not self.s3_bucket:
            raise ValueError("RECEIPTS_STORE=s3 needs S3_BUCKET")
        return self


def to_async_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


def to_plain_url(url: str) -> str:
    """The same URL for drivers that take a plain libpq DSN (asyncpg.connect, psycopg2)."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


class SettingsError(SystemExit):
    pass


def load_settings(**overrides) -> Settings:
    """Build settings from the environment, turning validation errors into one readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = ["Configuración inválida / invalid configuration:"]
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            msg = err["msg"].replace("Value error, ", "")
            if err["type"] == "missing":
                msg = "falta la variable de entorno / missing environment variable"
            lines.append(f"  - {name.upper()}: {msg}")
        raise SettingsError("\n".join(lines)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()


if __name__ == "__main__":  # `python -m shared.config` checks the environment
    try:
        s = load_settings()
    except SettingsError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2)
    print(f"ok: env={s.app_env}")
