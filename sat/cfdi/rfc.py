"""RFC well-formedness: the one check every service that takes an RFC from a user applies."""

from __future__ import annotations

import re

from .rules import person_type

_RFC_RE = re.compile(r"^([A-ZÑ&]{3,4})(\d{2})(\d{2})(\d{2})([A-Z\d]{2})([A\d])$")


def valid_rfc(rfc: str) -> bool:
    rfc = (rfc or "").strip().upper()
    if person_type(rfc) in ("generic_national", "generic_foreign"):
        return True
    match = _RFC_RE.match(rfc)
    if not match or len(rfc) not in (12, 13):
        return False
    month, day = int(match.group(3)), int(match.group(4))
    return 1 <= month <= 12 and 1 <= day <= 31
