"""The contract between the notification worker and the auth service for single-use links.

E-mail rows and events name a link (`{"kind", "ref"}`), never contain it. At send time the worker
POSTs `{"kind", "ref", "email", "ts"}` to the auth service's `PATH`, signed with an HMAC keyed from
the key-encryption key (only backend services hold it); auth answers the freshly minted URL, which
goes into the message and nowhere else.
"""

from __future__ import annotations

import json
import time

from shared.config import Settings
from shared.crypto import hmac_sign, hmac_verify

PATH = "/internal/mail-links"
SIGNATURE_HEADER = "X-Internal-Signature"
_PURPOSE = "auth.mail-link"
MAX_SKEW_SECONDS = 300


def request_body(kind: str, ref: str, email: str) -> bytes:
    return json.dumps({"kind": kind, "ref": str(ref), "email": email, "ts": int(time.time())}).encode()


def sign(body: bytes, settings: Settings) -> str:
    return hmac_sign(body.decode(), settings=settings, purpose=_PURPOSE)


def verify(body: bytes, signature: str, settings: Settings) -> bool:
    try:
        fresh = abs(time.time() - int(json.loads(body)["ts"])) <= MAX_SKEW_SECONDS
    except (ValueError, KeyError, TypeError):
        return False
    return fresh and hmac_verify(body.decode(errors="replace"), signature, settings=settings, purpose=_PURPOSE)
