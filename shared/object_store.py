"""The object store: bytes under a key, nothing more. Local filesystem by default; any
S3-compatible store (AWS S3, MinIO, Ceph, R2, ...) when `RECEIPTS_STORE=s3`.

Both backends are synchronous on purpose: callers run them with `asyncio.to_thread`, so a slow
disk or a slow S3 endpoint never blocks the event loop. S3 goes through boto3 (signing, retries,
checksums are its job, not ours)."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shared.config import Settings


class ObjectStoreError(Exception):
    """The store could not be reached or refused the operation (a missing key is not an error).
    The message names the backend's error type only: never a URL with credentials, never a key."""


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""


class LocalStore:
    """Filesystem backend: keys are relative paths under `root`, written atomically (temp file +
    rename) so a reader never sees half a file."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError("key escapes the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise ObjectStoreError(f"local store: {type(exc).__name__}") from None

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError as exc:
            raise ObjectStoreError(f"local store: {type(exc).__name__}") from None


class S3Store:
    """S3-compatible backend. A PUT is atomic on S3 (readers see the whole object or none). The
    bucket must exist: creating buckets is provisioning, not something a request should do."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
                 access_key_id: str | None = None, secret_access_key: str | None = None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        config = Config(
            # Path-style URLs: what MinIO/Ceph/moto serve without wildcard DNS; AWS still accepts it.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5, read_timeout=30,
            # boto3 >= 1.36 adds CRC checksums by default, which several S3-compatible stores refuse.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        # Empty keys: boto3's own chain (environment, instance/IRSA role) decides.
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region,
            aws_access_key_id=access_key_id or None, aws_secret_access_key=secret_access_key or None, config=config)

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"s3: {_error_name(exc)}") from None

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key)
            with obj["Body"] as body:
                return body.read()
        except self._client.exceptions.NoSuchKey:
            return None
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"s3: {_error_name(exc)}") from None


def _error_name(exc: Exception) -> str:
    """S3's error code (NoSuchBucket, AccessDenied, ...) or the exception's type; nothing else."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return str(code) if code else type(exc).__name__


_s3_clients: dict[tuple, S3Store] = {}
_s3_lock = threading.Lock()


def receipts_store(settings: Settings) -> ObjectStore:
    """The configured store for receipts. S3 clients are built once per configuration (a boto3
    client is thread-safe and costly to create); the local store is just a path."""
    if settings.receipts_store == "local":
        return LocalStore(settings.receipts_dir)
    secret = settings.s3_secret_access_key.get_secret_value()
    ident = (settings.s3_endpoint_url, settings.s3_bucket, settings.s3_region, settings.s3_access_key_id, secret)
    with _s3_lock:
        store = _s3_clients.get(ident)
        if store is None:
            store = _s3_clients[ident] = S3Store(
                settings.s3_bucket, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                access_key_id=settings.s3_access_key_id, secret_access_key=secret)
    return store
