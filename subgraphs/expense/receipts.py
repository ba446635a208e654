"""What a receipt file really is, decided from its bytes (never from its name or Content-Type).
Pure functions; where the bytes are kept is shared/object_store.py.

Accepted: JPEG, PNG, WebP, PDF, XML (a CFDI). A PDF whose compressed streams would inflate past
`MAX_INFLATED_BYTES` (a "zip bomb") is refused without inflating it all; XML goes through the
hardened parser (no DTD, no entities, no network).
"""

from __future__ import annotations

import re
import zlib

from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml

ALLOWED_TYPES = ("image/jpeg", "image/png", "image/webp", "application/pdf", "application/xml")
MAX_INFLATED_BYTES = 50 * 1024 * 1024  # all of a PDF's Flate streams together
_CHUNK = 64 * 1024


class ReceiptRefused(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def normalize_declared_type(content_type: str) -> str | None:
    ct = (content_type or "").split(";")[0].strip().lower()
    ct = {"image/jpg": "image/jpeg", "text/xml": "application/xml"}.get(ct, ct)
    return ct if ct in ALLOWED_TYPES else None


def sniff(data: bytes) -> str | None:
    """The type the bytes are, among the accepted ones; None for anything else (executables too)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return "application/pdf"
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<?xml") or head.startswith(b"<"):
        return "application/xml"
    return None


_STREAM = re.compile(rb"/FlateDecode.{0,200}?>>\s*stream\r?\n", re.S)


def inflated_size_exceeds(pdf: bytes, limit: int = MAX_INFLATED_BYTES) -> bool:
    """Inflate each Flate stream chunk by chunk, stopping as soon as the total passes `limit`."""
    total = 0
    for m in _STREAM.finditer(pdf):
        end = pdf.find(b"endstream", m.end())
        raw = pdf[m.end(): end if end != -1 else len(pdf)]
        d = zlib.decompressobj()
        try:
            out = d.decompress(raw, _CHUNK)
            while True:
                total += len(out)
                if total > limit:
                    return True
                if not d.unconsumed_tail:
                    break
                out = d.decompress(d.unconsumed_tail, _CHUNK)
        except zlib.error:
            continue  # a broken stream is a viewer's problem, not a bomb
    return False


def check_receipt(data: bytes, declared_type: str, max_bytes: int) -> str:
    """The receipt's real content type, or `ReceiptRefused`. CPU-bound: call off the event loop."""
    if len(data) > max_bytes:
        raise ReceiptRefused("RECEIPT_TOO_LARGE", f"El archivo supera el límite de {max_bytes // (1024 * 1024)} MB.")
    if not data:
        raise ReceiptRefused("RECEIPT_EMPTY", "El archivo está vacío.")
    actual = sniff(data)
    if actual is None:
        raise ReceiptRefused("RECEIPT_TYPE_NOT_ALLOWED", "El archivo no es JPEG, PNG, WebP, PDF ni XML.")
    if actual != declared_type:
        raise ReceiptRefused("RECEIPT_TYPE_MISMATCH", f"El contenido es {actual}, no {declared_type}.")
    if actual == "application/pdf" and inflated_size_exceeds(data):
        raise ReceiptRefused("RECEIPT_PDF_BOMB", "El PDF se expande a un tamaño desproporcionado; no se acepta.")
    if actual == "application/xml":
        try:
            parse_xml(data)
        except UnsafeXmlError:
            raise ReceiptRefused("RECEIPT_XML_INVALID", "El XML está mal formado o usa construcciones no permitidas.") from None
    return actual
