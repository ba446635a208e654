"""Documents: the signed, expiring links to an invoice's XML and PDF (in API answers and in
events, so consumers fetch documents without reading invoice tables)."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.config import Settings
from shared.crypto import signed_path, verify_signed_path

DOWNLOAD_PURPOSE = "invoice-download"
EVENT_LINK_TTL = timedelta(days=7)


def document_base_path(invoice_id, fmt: str) -> str:
    return f"/documents/{invoice_id}.{fmt}"


def document_path(settings: Settings, invoice_id, fmt: str, expires_at: datetime) -> str:
    return signed_path(document_base_path(invoice_id, fmt), expires_at, settings=settings, purpose=DOWNLOAD_PURPOSE)


def verify_document_signature(settings: Settings, path: str, exp: str, sig: str) -> bool:
    return verify_signed_path(path, exp, sig, settings=settings, purpose=DOWNLOAD_PURPOSE)
