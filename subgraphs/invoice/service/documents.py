"""Documents: the signed, expiring links to an invoice's XML and PDF (in API answers and in
events, so consumers fetch documents without reading invoice tables)."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.config import Settings
from shared.crypto import hmac_sign, hmac_verify
from subgraphs.invoice.service.common import utcnow

DOWNLOAD_PURPOSE = "invoice-download"
EVENT_LINK_TTL = timedelta(days=7)


def document_base_path(invoice_id, fmt: str) -> str:
    return f"/documents/{invoice_id}.{fmt}"


def document_path(settings: Settings, invoice_id, fmt: str, expires_at: datetime) -> str:
    exp = int(expires_at.timestamp())
    path = document_base_path(invoice_id, fmt)
    sig = hmac_sign(f"{path}:{exp}", settings=settings, purpose=DOWNLOAD_PURPOSE)
    return f"{path}?exp={exp}&sig={sig}"


def verify_document_signature(settings: Settings, path: str, exp: str, sig: str) -> bool:
    try:
        if int(exp) < int(utcnow().timestamp()):
            return False
    except (TypeError, ValueError):
        return False
    return hmac_verify(f"{path}:{exp}", sig or "", settings=settings, purpose=DOWNLOAD_PURPOSE)
