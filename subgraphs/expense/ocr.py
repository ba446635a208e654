"""OCR for receipt photos without a CFDI: total, date, merchant RFC and name as *suggestions* the user
confirms. The engine is RapidOCR (ONNX Runtime, models inside its wheel, offline), chosen by
measurement (bench/ocr_receipts.py); it is the optional extra `ocr`. Without it, `engine()` is
None and receipts say OCR is unavailable instead of failing.

`suggestions_from_lines` is pure and holds all the reading rules; the engine only turns pixels
into lines of text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Callable

from sat.cfdi.rfc import valid_rfc

Recognizer = Callable[[bytes], list[str]]

# The letter part is read loosely (OCR confuses O/0, I/1, S/5, B/8) and repaired before validating.
_RFC = re.compile(r"(?<![A-Z0-9])([A-ZÑ&0-9]{3,4})[\s-]?(\d{6})[\s-]?([A-Z\d]{2}[A\d])(?![A-Z0-9])")
_AS_LETTER = str.maketrans("0158", "OISB")
_AMOUNT = r"\$?\s*(\d{1,3}(?:[,\s]\d{3})*(?:\.\d{2})|\d+\.\d{2})"
_TOTAL = re.compile(r"\bTOTAL\b(?!\s*(?:DE\s+)?ART)[^0-9$]{0,20}" + _AMOUNT, re.I)
_SUBTOTAL = re.compile(r"SUB\s*-?\s*TOTAL", re.I)
_DATES = (
    (re.compile(r"\b(\d{4})[-/](\d{1,2})[-/](\d{1,2})\b"), ("y", "m", "d")),
    # No word boundary after the year: OCR often glues the time to it ("10/11/202613:17").
    (re.compile(r"\b(\d{1,2})[-/](\d{1,2})[-/](\d{4})"), ("d", "m", "y")),
)
_MONTHS = {m: i + 1 for i, m in enumerate(("ENE", "FEB", "MAR", "ABR", "MAY", "JUN", "JUL", "AGO", "SEP", "OCT", "NOV", "DIC"))}
_DATE_WORDS = re.compile(r"\b(\d{1,2})[\s/-]*(" + "|".join(_MONTHS) + r")[A-Z]*[\s/-]*(\d{4})\b", re.I)


@dataclass(frozen=True)
class Suggestions:
    total: Decimal | None = None
    date: date | None = None
    merchant_rfc: str | None = None
    merchant_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if v is not None else None) for k, v in asdict(self).items()}


def _amount(text: str) -> Decimal | None:
    try:
        return Decimal(re.sub(r"[,\s$]", "", text))
    except InvalidOperation:
        return None


def _date(line: str) -> date | None:
    for pattern, order in _DATES:
        for m in pattern.finditer(line):
            parts = dict(zip(order, map(int, m.groups())))
            try:
                return date(parts["y"], parts["m"], parts["d"])
            except ValueError:
                continue
    m = _DATE_WORDS.search(line.upper())
    if m:
        try:
            return date(int(m.group(3)), _MONTHS[m.group(2).upper()[:3]], int(m.group(1)))
        except ValueError:
            return None
    return None


def suggestions_from_lines(lines: list[str]) -> Suggestions:
    """Read a receipt's text: the TOTAL line's amount (never SUBTOTAL), the first valid date, the
    first valid RFC, and as merchant name the first line with letters before the RFC line."""
    clean = [" ".join(line.split()) for line in lines if line and line.strip()]
    total = None
    for i, line in enumerate(clean):
        if _SUBTOTAL.search(line) or not re.search(r"\bTOTAL\b", line, re.I):
            continue
        m = _TOTAL.search(line)
        if m:
            total = _amount(m.group(1)) or total
        elif i + 1 < len(clean) and re.fullmatch(_AMOUNT, clean[i + 1]):
            total = _amount(clean[i + 1]) or total  # the amount landed on its own row
    found_date = next((d for d in map(_date, clean) if d is not None), None)
    rfc, rfc_line = None, None
    for i, line in enumerate(clean):
        for m in _RFC.finditer(line.upper()):
            candidate = m.group(1).translate(_AS_LETTER) + m.group(2) + m.group(3)
            if valid_rfc(candidate):
                rfc, rfc_line = candidate, i
                break
        if rfc:
            break
    name = None
    for line in clean[: rfc_line if rfc_line is not None else 3]:
        if sum(c.isalpha() for c in line) >= 3 and not _RFC.search(line.upper()) and "RFC" not in line.upper():
            name = re.sub(r"(?<=[A-Z])0|0(?=[A-Z])", "O", line.strip())[:300]  # OXX0 -> OXXO
            break
    return Suggestions(total=total, date=found_date, merchant_rfc=rfc, merchant_name=name)


@lru_cache(maxsize=1)
def engine() -> Recognizer | None:
    """The OCR engine, loaded once per process, or None when the `ocr` extra is not installed."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        return None
    ocr = RapidOCR()

    def recognize(image: bytes) -> list[str]:
        result, _ = ocr(image)
        return _join_rows(result or [])

    return recognize


def _join_rows(boxes: list) -> list[str]:
    """Boxes on the same printed row become one line, so 'TOTAL' meets its amount. A photo is
    rarely straight: centres are first rotated by the median slope of the boxes' baselines."""
    import math

    slopes = sorted(math.atan2(b[1][1] - b[0][1], b[1][0] - b[0][0]) for b, _t, _s in boxes) or [0.0]
    angle = slopes[len(slopes) // 2]
    cos, sin = math.cos(-angle), math.sin(-angle)
    rows: list[tuple[float, list[tuple[float, str]]]] = []
    for box, text, _score in boxes:
        cx, cy = sum(p[0] for p in box) / 4, sum(p[1] for p in box) / 4
        x, y = cx * cos - cy * sin, cx * sin + cy * cos
        height = math.dist(box[0], box[3]) or 10
        for row in rows:
            if abs(row[0] - y) < height * 0.5:
                row[1].append((x, text))
                break
        else:
            rows.append((y, [(x, text)]))
    return [" ".join(t for _, t in sorted(parts)) for _, parts in sorted(rows, key=lambda r: r[0])]
