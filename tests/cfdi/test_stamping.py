"""The stamping path's one pre-stamp check: rules of both matrices and SAT's schema, together."""

from __future__ import annotations

from datetime import datetime

import pytest

from sat.cfdi import (
    StampingRefused,
    build_tree,
    check_invoice,
    compute_totals,
    prepare_for_stamping,
    sign_cfdi,
    validate_for_stamping,
)
from sat.cfdi.validate import validate_xsd

from .conftest import make_invoice, make_payment_invoice

NOW = datetime(2025, 6, 1, 12, 0, 0)


def test_valid_invoice_is_sealed_and_schema_valid(csd_eku) -> None:
    xml = prepare_for_stamping(make_invoice(), csd_eku, NOW)
    assert b'Sello="' in xml and validate_xsd(xml, mode="full") == []
    assert prepare_for_stamping(make_payment_invoice(), csd_eku, NOW)


def test_schema_fault_the_rules_cannot_see_is_refused_before_the_pac(csd_eku) -> None:
    too_long = make_invoice(series="S" * 30)  # cfdv40.xsd: Serie maxLength 25
    assert check_invoice(compute_totals(too_long), NOW) == []  # the rules alone let it through
    with pytest.raises(StampingRefused) as refused:
        prepare_for_stamping(too_long, csd_eku, NOW)
    assert {i.code for i in refused.value.issues} == {"XSD"}
    tree = build_tree(compute_totals(too_long))
    sign_cfdi(tree, csd_eku)
    assert {i.code for i in validate_for_stamping(compute_totals(too_long), tree, NOW)} == {"XSD"}


def test_rule_faults_refuse_before_sealing(csd_eku) -> None:
    with pytest.raises(StampingRefused) as refused:
        prepare_for_stamping(make_invoice(exportation="02"), csd_eku, NOW)
    assert [i.code for i in refused.value.issues] == ["CFDI40122"]
