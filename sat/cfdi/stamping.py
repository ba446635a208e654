"""The one pre-stamp check the stamping path calls: nothing a PAC could refuse that we can see.

`prepare_for_stamping(invoice, csd, now)` computes, checks, builds, seals and schema-validates:

    compute_totals -> check_invoice (both SAT matrices, catalog rows in force on Fecha)
        -> build_tree -> sign_cfdi -> validate_xsd(mode="lean") -> to_bytes

and answers the XML to send, or raises `StampingRefused` with every issue found. Lean XSD is SAT's
cfdv40/Pagos20/TFD schemas with the two huge enumerations (c_ClaveProdServ, c_CodigoPostal) as
patterns; their membership is in the rules (CFDI40162/CFDI40126), so nothing is skipped.
`validate_for_stamping(invoice, signed_tree, now)` is the same check for a caller that builds and
seals the tree itself. CPU-bound (RSA, XSLT, XSD): call it off the event loop.
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from .build import build_tree, to_bytes
from .csd import Csd, sign_cfdi
from .models import Invoice
from .rules import RuleIssue, check_invoice
from .totals import compute_totals
from .validate import validate_xsd

XSD_CODE = "XSD"


class StampingRefused(Exception):
    """The CFDI would be refused: `issues` say where and why (SAT code, model path, es-MX text)."""

    def __init__(self, issues: list[RuleIssue]):
        super().__init__("; ".join(f"{i.code} {i.field_path}: {i.message_es}" for i in issues[:5]))
        self.issues = issues


def validate_for_stamping(invoice: Invoice, signed_tree: etree._Element, now: datetime) -> list[RuleIssue]:
    """Rule issues of `invoice` plus schema issues of the sealed tree built from it ([] = send it)."""
    return check_invoice(invoice, now) + _schema_issues(signed_tree)


def _schema_issues(tree: etree._Element) -> list[RuleIssue]:
    return [
        RuleIssue(XSD_CODE, x.path, f"Esquema del SAT (línea {x.line}): {x.message}")
        for x in validate_xsd(tree, mode="lean")
    ]


def prepare_for_stamping(invoice: Invoice, csd: Csd, now: datetime) -> bytes:
    """The sealed XML of `invoice`, or StampingRefused with every rule and schema issue."""
    computed = compute_totals(invoice)
    issues = check_invoice(computed, now)
    if issues:
        raise StampingRefused(issues)
    tree = build_tree(computed)
    sign_cfdi(tree, csd)
    schema_issues = _schema_issues(tree)
    if schema_issues:
        raise StampingRefused(schema_issues)
    return to_bytes(tree)
