"""One violating invoice per SAT matrix code the engine enforces; each must be refused under
exactly that code (plus the companions SAT's own rows imply, listed in ALSO).

`matrix.STATUS` lists every code of both matrices; a code marked "enforced" without a case here
fails `test_every_enforced_code_has_a_violating_case`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from sat.cfdi.matrix import ENFORCED, STATUS
from sat.cfdi.models import (
    Concept,
    GlobalInformation,
    Invoice,
    Issuer,
    PaymentTax,
    Receiver,
    RelatedCfdis,
    RelatedDocument,
    Tax,
    TaxTotal,
    ThirdParty,
)
from sat.cfdi.payments import compute_payments, paid_amount_bounds
from sat.cfdi.rules import check_invoice
from sat.cfdi.totals import compute_totals

from .conftest import make_invoice, make_payment_invoice

NOW = datetime(2025, 6, 1, 12, 0, 0)
D = Decimal
SAT_DOCS = Path("/work/shared/data/sat-docs")
UUID = "5FB2822E-396D-4725-8521-CDC4BDD20CCF"


def iva(rate="0.160000", **kw) -> Tax:
    return Tax("002", "Tasa", D(rate), **kw)


def concept(**kw) -> Concept:
    return replace(Concept("84111506", D("1"), "E48", "Servicio", D("100"), "02", transferred_taxes=[iva()]), **kw)


def inv(**kw) -> Invoice:
    return make_invoice(**kw)


def computed(**kw) -> Invoice:
    return compute_totals(make_invoice(**kw))


def receiver(**kw) -> Receiver:
    return replace(Receiver("XIA190128J61", "XENON INDUSTRIAL ARTICLES", "76343", "601", "G03"), **kw)


PUBLIC = Receiver("XAXX010101000", "PUBLICO EN GENERAL", "42501", "616", "S01")


def public(periodicity="04", months="05", year=2025, **kw) -> Invoice:
    return inv(receiver=PUBLIC, global_information=GlobalInformation(periodicity, months, year), **kw)


def foreign(**kw) -> Receiver:
    return replace(Receiver("XEXX010101000", "ACME INC", "42501", "616", "S01", "USA", "123456789"), **kw)


def tampered(fn, **kw) -> Invoice:
    """A computed invoice changed after the fact, as a stored or hand-edited CFDI could be."""
    out = computed(**kw)
    fn(out)
    return out


def pay(fn=None) -> Invoice:
    """The valid payment CFDI of conftest, computed, then changed by `fn`."""
    out = make_payment_invoice()
    out = compute_totals(replace(out, payments=compute_payments(out.payments)))
    out = copy.deepcopy(out)
    if fn is not None:
        fn(out)
    return out


def doc(p: Invoice):
    return p.payments.payments[0].related_documents[0]


def pmt(p: Invoice):
    return p.payments.payments[0]


def set_(obj, **kw):
    for k, v in kw.items():
        setattr(obj, k, v)


def recompute(p: Invoice) -> None:
    """Re-derive payment amounts after changing a document, so only the intended fault remains."""
    p.payments = compute_payments(p.payments)


def with_doc_taxes(transferred=(), withheld=(), tax_object="02"):
    def fn(p):
        set_(doc(p), transferred_taxes=list(transferred), withheld_taxes=list(withheld), tax_object=tax_object)
        recompute(p)

    return fn


def mixed(monto: Decimal | None = None, fn=None) -> Invoice:
    """The conftest payment re-issued in USD at 17.50 MXN/USD, mixing currencies: 1160.00 of its
    MXN document at EquivalenciaDR 17.5000 (MXN per USD) plus 58.00 of a USD document
    (EquivalenciaDR 1, which compute_payment writes 1.0000000000, CRP20277). Monto is derived
    (124.29) unless `monto` is given; `fn` changes the result afterwards."""

    def build(p: Invoice) -> None:
        set_(pmt(p), currency="USD", exchange_rate=D("17.50"), amount=monto)
        set_(doc(p), exchange_rate=D("17.5000"))
        pmt(p).related_documents.append(RelatedDocument(
            uuid="6F0B4A9E-4A5B-4F6C-9D2E-1234567890AB", currency="USD", installment=1,
            previous_balance=D("100.00"), amount_paid=D("58.00"), remaining_balance=D("42.00"),
            tax_object="01", exchange_rate=D("1")))
        recompute(p)
        if fn is not None:
            fn(p)

    return pay(build)


TRASLADO = {"voucher_type": "T", "payment_form": None, "payment_method": None,
            "concepts": [concept(tax_object="01", transferred_taxes=[])]}

DR_IVA = PaymentTax("002", "Tasa", D("0.160000"), D("1000.00"), D("160.00"))
DR_ISR = PaymentTax("001", "Tasa", D("0.100000"), D("1000.00"), D("100.00"))

CASES: dict[str, object] = {
    # --- Comprobante ---------------------------------------------------------------------------
    "CFDI40101": lambda: inv(issued_at=datetime(2025, 6, 1, 13, 0, 0)),
    "CFDI40103": lambda: inv(voucher_type="N", payment_method=None),
    "CFDI40104": lambda: inv(payment_form="07"),  # a 3.3 code, not 4.0
    "CFDI40105": lambda: inv(payment_method="PPD", payment_form="03"),
    "CFDI40107": lambda: tampered(lambda i: set_(i, subtotal=D("2469.120"), total=D("2864.180"))),
    "CFDI40108": lambda: tampered(lambda i: set_(i, subtotal=i.subtotal + 1, total=i.total + 1)),
    "CFDI40109": lambda: tampered(lambda i: set_(i, subtotal=D("1"), total=D("1")), **TRASLADO),
    "CFDI40110": lambda: tampered(lambda i: set_(i, discount=i.subtotal + 1, total=i.total - i.subtotal - 1)),
    "CFDI40111": lambda: inv(voucher_type="T", payment_form=None, payment_method=None,
                             concepts=[concept(tax_object="01", transferred_taxes=[], discount=D("1"))]),
    "CFDI40112": lambda: tampered(lambda i: set_(i, discount=D("0.001"), total=i.total - D("0.001")),
                                  concepts=[concept(discount=D("0"))]),
    "CFDI40113": lambda: inv(currency="ZZZ", exchange_rate=D("1.5")),
    "CFDI40114": lambda: inv(exchange_rate=D("17.5")),
    "CFDI40115": lambda: inv(currency="USD"),
    "CFDI40116": lambda: inv(currency="XXX", exchange_rate=D("1")),
    "CFDI40117": lambda: inv(currency="USD", exchange_rate=D("17.1234567")),
    "CFDI40119": lambda: tampered(lambda i: set_(i, total=i.total + 1)),
    "CFDI40121": lambda: inv(voucher_type="X"),
    "CFDI40122": lambda: inv(exportation="02"),
    "CFDI40123": lambda: inv(exportation="09"),
    "CFDI40124": lambda: inv(payment_method="PIP"),
    "CFDI40125": lambda: inv(voucher_type="T", payment_form=None, payment_method="PUE",
                             concepts=[concept(tax_object="01", transferred_taxes=[])]),
    "CFDI40126": lambda: inv(place_of_issue="00001"),
    # --- InformacionGlobal / relations -----------------------------------------------------------
    "CFDI40130": lambda: inv(receiver=PUBLIC),
    "CFDI40131": lambda: public(periodicity="09"),
    "CFDI40132": lambda: public(periodicity="05", months="13"),  # issuer regime 601, not 621
    "CFDI40133": lambda: public(months="19"),
    "CFDI40134": lambda: public(months="14"),
    "CFDI40135": lambda: public(periodicity="05", months="05",
                                issuer=Issuer("CACX7605101P8", "XOCHILT CASAS CHAVEZ", "621")),
    "CFDI40136": lambda: public(year=2019),
    "CFDI40137": lambda: inv(related=[RelatedCfdis("08", [UUID])]),  # 08 is not a 4.0 relation
    # --- Emisor / Receptor ---------------------------------------------------------------------
    "CFDI40140": lambda: inv(issuer=Issuer("EKU9003173C9", "ESCUELA KEMPER URGATE", "609")),  # 3.3 only
    "CFDI40141": lambda: inv(issuer=Issuer("EKU9003173C9", "ESCUELA KEMPER URGATE", "612")),
    "CFDI40146": lambda: inv(receiver=receiver(name="PUBLICO EN GENERAL")),
    "CFDI40147": lambda: inv(receiver=receiver(tax_zip_code="00001")),
    "CFDI40149": lambda: inv(receiver=Receiver("XAXX010101000", "JUAN PEREZ", "01000", "616", "S01")),
    "CFDI40150": lambda: inv(receiver=foreign(tax_residence="XYZ", foreign_tax_id=None)),
    "CFDI40151": lambda: inv(receiver=receiver(tax_residence="USA")),
    "CFDI40152": lambda: inv(receiver=foreign(tax_residence="MEX", foreign_tax_id=None)),
    "CFDI40153": lambda: inv(receiver=foreign(tax_residence=None)),
    "CFDI40154": lambda: inv(receiver=receiver(foreign_tax_id="123456789")),
    "CFDI40156": lambda: inv(receiver=foreign(foreign_tax_id="12-345")),  # USA: [0-9]{9}
    "CFDI40157": lambda: inv(receiver=receiver(tax_regime="628")),  # 3.3 only
    "CFDI40158": lambda: inv(receiver=receiver(tax_regime="612")),
    "CFDI40159": lambda: inv(receiver=Receiver("XAXX010101000", "JUAN PEREZ", "42501", "601", "S01")),
    "CFDI40160": lambda: inv(receiver=receiver(cfdi_use="P01")),  # removed in 4.0
    "CFDI40161": lambda: inv(receiver=receiver(cfdi_use="D01")),
    # --- Conceptos -----------------------------------------------------------------------------
    "CFDI40162": lambda: inv(concepts=[concept(product_code="99999999")]),
    "CFDI40165": lambda: inv(concepts=[concept(unit_code="XYZ1")]),
    "CFDI40166": lambda: inv(concepts=[concept(unit_price=D("0"), tax_object="01", transferred_taxes=[])]),
    "CFDI40167": lambda: tampered(lambda i: (set_(i.concepts[0], amount=i.concepts[0].amount + 1),
                                             set_(i, subtotal=i.subtotal + 1, total=i.total + 1)),
                                  concepts=[concept(quantity=D("1.00"), unit_price=D("100.00"))]),
    "CFDI40168": lambda: tampered(lambda i: set_(i.concepts[0], discount=D("0.001"))),
    "CFDI40169": lambda: inv(concepts=[concept(discount=D("100.01"), tax_object="01", transferred_taxes=[])]),
    "CFDI40170": lambda: inv(concepts=[concept(tax_object="99")]),
    "CFDI40171": lambda: inv(concepts=[concept(transferred_taxes=[])]),
    "CFDI40172": lambda: inv(concepts=[concept(tax_object="04")]),
    "CFDI40174": lambda: inv(concepts=[concept(transferred_taxes=[iva(base=D("0"))])]),
    "CFDI40175": lambda: inv(concepts=[concept(transferred_taxes=[Tax("009", "Tasa", D("0.16"))])]),
    "CFDI40176": lambda: inv(concepts=[concept(transferred_taxes=[Tax("002", "Porcentaje", D("0.16"))])]),
    "CFDI40177": lambda: tampered(lambda i: set_(i.concepts[0].transferred_taxes[0], factor_type="Exento"),
                                  concepts=[concept()]),
    "CFDI40178": lambda: tampered(lambda i: set_(i.concepts[0].transferred_taxes[0], rate=None)),
    "CFDI40179": lambda: inv(concepts=[concept(transferred_taxes=[iva("0.15")])]),
    "CFDI40180": lambda: tampered(lambda i: set_(i.concepts[0].transferred_taxes[0], amount=D("1.00"))),
    "CFDI40181": lambda: inv(concepts=[concept(transferred_taxes=[], withheld_taxes=[Tax("001", "Tasa", D("0.1"),
                                                                                         base=D("0"))])]),
    "CFDI40182": lambda: inv(concepts=[concept(withheld_taxes=[Tax("009", "Tasa", D("0.1"))])]),
    "CFDI40183": lambda: inv(concepts=[concept(withheld_taxes=[Tax("001", "Porcentaje", D("0.1"))])]),
    "CFDI40184": lambda: inv(concepts=[concept(withheld_taxes=[Tax("002", "Exento")])]),
    "CFDI40185": lambda: inv(concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.40"))])]),
    "CFDI40186": lambda: tampered(lambda i: set_(i.concepts[0].withheld_taxes[0], amount=D("1.00")),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.100000"))])]),
    "CFDI40188": lambda: inv(concepts=[concept(third_party=ThirdParty("EKU9003173C9", "X", "601", "42501"))]),
    "CFDI40191": lambda: inv(concepts=[concept(third_party=ThirdParty("CACX7605101P8", "X", "999", "42501"))]),
    "CFDI40194": lambda: inv(concepts=[concept(customs_numbers=["10 47 3807 8003832"])]),
    "CFDI140223": lambda: inv(concepts=[concept(third_party=ThirdParty("EXT990101NI1", "X", "601", "42501"))]),
    "CFDI140226": lambda: inv(concepts=[concept(tax_object="06")]),
    "CFDI140227": lambda: inv(concepts=[concept(tax_object="07")]),
    # --- Impuestos (summary) -------------------------------------------------------------------
    "CFDI40201": lambda: tampered(lambda i: set_(i, withheld_totals=[TaxTotal("001", D("0.00"))]), **TRASLADO),
    "CFDI40202": lambda: tampered(lambda i: set_(i, total_withheld=D("10.000"), total=i.total - D("10.000"),
                                                 withheld_totals=[TaxTotal("001", D("10.000"))]),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40203": lambda: tampered(lambda i: set_(i, total_withheld=D("11.00"), total=i.total - 1),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40204": lambda: tampered(lambda i: set_(i, total_transferred=D("395.061"), total=D("2864.181"),
                                                 transferred_totals=[replace(i.transferred_totals[0],
                                                                             amount=D("395.061"))])),
    "CFDI40205": lambda: tampered(lambda i: set_(i, total_transferred=i.total_transferred + 1, total=i.total + 1)),
    "CFDI40206": lambda: tampered(lambda i: set_(i, total_withheld=None, total=i.total + 10),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40208": lambda: tampered(lambda i: set_(i, withheld_totals=[TaxTotal("001", D("5.00")),
                                                                     TaxTotal("001", D("5.00"))]),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40209": lambda: tampered(lambda i: set_(i, total_withheld=None, total=i.total + 10),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40210": lambda: tampered(lambda i: set_(i, withheld_totals=[TaxTotal("001", D("10.000"))]),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40211": lambda: tampered(lambda i: set_(i, withheld_totals=[TaxTotal("001", D("11.00"))],
                                                 total_withheld=D("11.00"), total=i.total - 1),
                                  concepts=[concept(withheld_taxes=[Tax("001", "Tasa", D("0.1"))])]),
    "CFDI40212": lambda: tampered(lambda i: set_(i, total_transferred=None, total=i.total - i.total_transferred)),
    "CFDI40213": lambda: tampered(lambda i: set_(i.transferred_totals[0], base=None)),
    "CFDI40214": lambda: tampered(lambda i: set_(i.transferred_totals[0], base=D("2469.120"))),
    "CFDI40215": lambda: tampered(lambda i: set_(i.transferred_totals[0], base=i.transferred_totals[0].base + 1)),
    "CFDI40216": lambda: tampered(lambda i: set_(i.transferred_totals[0], base=i.transferred_totals[0].base + 1),
                                  concepts=[concept(transferred_taxes=[Tax("002", "Exento")])]),
    "CFDI40218": lambda: tampered(lambda i: set_(i, transferred_totals=i.transferred_totals * 2,
                                                 total_transferred=i.total_transferred * 2,
                                                 total=i.total + i.total_transferred)),
    "CFDI40220": lambda: tampered(lambda i: set_(i.transferred_totals[0], amount=D("395.140"))),
    "CFDI40221": lambda: tampered(lambda i: set_(i, total_transferred=i.total_transferred + 1, total=i.total + 1,
                                                 transferred_totals=[replace(i.transferred_totals[0],
                                                                             amount=i.total_transferred + 1)])),
    # --- Pagos 2.0 (CRP) -----------------------------------------------------------------------
    "CRP20101": lambda: pay(lambda p: set_(p, voucher_type="I")),
    "CRP20102": lambda: pay(lambda p: set_(p, exportation="03")),
    "CRP20103": lambda: pay(lambda p: set_(p, subtotal=D("1"))),
    "CRP20104": lambda: pay(lambda p: set_(p, currency="MXN")),
    "CRP20105": lambda: pay(lambda p: set_(p, payment_form="03")),
    "CRP20106": lambda: pay(lambda p: set_(p, payment_method="PUE")),
    "CRP20107": lambda: pay(lambda p: set_(p, payment_conditions="Contado")),
    "CRP20108": lambda: pay(lambda p: set_(p, discount=D("0"))),
    "CRP20109": lambda: pay(lambda p: set_(p, exchange_rate=D("1"))),
    "CRP20110": lambda: pay(lambda p: set_(p, total=D("1"))),
    "CRP20111": lambda: pay(lambda p: set_(p, concepts=p.concepts * 2)),
    "CRP20112": lambda: pay(lambda p: set_(p.concepts[0], property_accounts=["123"])),
    "CRP20113": lambda: pay(lambda p: set_(p.concepts[0], product_code="01010101")),
    "CRP20114": lambda: pay(lambda p: set_(p.concepts[0], identification="X1")),
    "CRP20115": lambda: pay(lambda p: set_(p.concepts[0], quantity=D("2"))),
    "CRP20116": lambda: pay(lambda p: set_(p.concepts[0], unit_code="E48")),
    "CRP20117": lambda: pay(lambda p: set_(p.concepts[0], unit="Actividad")),
    "CRP20118": lambda: pay(lambda p: set_(p.concepts[0], description="Abono")),
    "CRP20119": lambda: pay(lambda p: set_(p.concepts[0], unit_price=D("0.000001"))),
    "CRP20120": lambda: pay(lambda p: set_(p.concepts[0], amount=D("1"))),
    "CRP20121": lambda: pay(lambda p: set_(p.concepts[0], discount=D("0"))),
    "CRP20122": lambda: pay(lambda p: set_(p.concepts[0], tax_object="02")),
    "CRP20123": lambda: pay(lambda p: set_(p.concepts[0], tax_object="01", transferred_taxes=[iva()])),
    "CRP20201": lambda: pay(lambda p: set_(p.payments.totals, withheld_iva=D("1.00"))),
    "CRP20202": lambda: pay(lambda p: set_(p.payments.totals, withheld_isr=D("1.00"))),
    "CRP20203": lambda: pay(lambda p: set_(p.payments.totals, withheld_ieps=D("1.00"))),
    "CRP20204": lambda: pay(lambda p: set_(p.payments.totals, transferred_base_iva16=D("999.00"))),
    "CRP20205": lambda: pay(lambda p: set_(p.payments.totals, transferred_iva16=D("159.00"))),
    "CRP20206": lambda: pay(lambda p: set_(p.payments.totals, transferred_base_iva8=D("1.00"))),
    "CRP20207": lambda: pay(lambda p: set_(p.payments.totals, transferred_iva8=D("1.00"))),
    "CRP20208": lambda: pay(lambda p: set_(p.payments.totals, transferred_base_iva0=D("1.00"))),
    "CRP20209": lambda: pay(lambda p: set_(p.payments.totals, transferred_iva0=D("1.00"))),
    "CRP20210": lambda: pay(lambda p: set_(p.payments.totals, exempt_base_iva=D("1.00"))),
    "CRP20211": lambda: pay(lambda p: set_(p.payments.totals, total_amount=D("1161.00"))),
    "CRP20212": lambda: pay(lambda p: set_(pmt(p), payment_form="99")),
    "CRP20213": lambda: pay(lambda p: (set_(pmt(p), currency="XXX", exchange_rate=None),
                                       set_(doc(p), exchange_rate=D("1")))),
    "CRP20214": lambda: pay(lambda p: (set_(pmt(p), currency="USD", exchange_rate=None),
                                       set_(doc(p), exchange_rate=D("1")))),
    "CRP20215": lambda: pay(lambda p: (set_(pmt(p), exchange_rate=D("17")), recompute(p))),
    "CRP20217": lambda: pay(lambda p: (set_(pmt(p), amount=D("1000.00")), recompute(p))),
    "CRP20218": lambda: pay(lambda p: (set_(pmt(p), amount=D("0")), set_(doc(p), amount_paid=D("0.00"),
                                                                          remaining_balance=D("2320.00")))),
    "CRP20219": lambda: pay(lambda p: (set_(pmt(p), amount=D("1160.001")), recompute(p))),
    "CRP20236": lambda: pay(lambda p: set_(doc(p), currency="XXX", exchange_rate=D("1"))),
    "CRP20237": lambda: pay(lambda p: set_(doc(p), currency="USD", exchange_rate=None)),
    "CRP20238": lambda: pay(lambda p: set_(doc(p), exchange_rate=D("1.5"))),
    "CRP20239": lambda: pay(lambda p: set_(doc(p), previous_balance=D("0"), remaining_balance=D("-1160.00"))),
    "CRP20240": lambda: pay(lambda p: set_(doc(p), previous_balance=D("2320.001"), remaining_balance=D("1160.001"))),
    "CRP20241": lambda: pay(lambda p: set_(doc(p), amount_paid=D("0"), remaining_balance=D("2320.00"))),
    "CRP20242": lambda: pay(lambda p: set_(doc(p), amount_paid=D("1159.999"), remaining_balance=D("1160.001"))),
    "CRP20243": lambda: pay(lambda p: set_(doc(p), previous_balance=D("2320.0001"), amount_paid=D("1160.0001"),
                                           remaining_balance=D("1160.000"))),
    "CRP20244": lambda: pay(lambda p: set_(doc(p), remaining_balance=D("1000.00"))),
    "CRP20245": lambda: pay(with_doc_taxes([DR_IVA], tax_object="99")),
    "CRP20246": lambda: pay(with_doc_taxes([], tax_object="02")),
    "CRP20247": lambda: pay(with_doc_taxes([DR_IVA], tax_object="01")),
    "CRP20249": lambda: pay(with_doc_taxes([DR_IVA], [replace(DR_ISR, base=D("0"), amount=D("0"))])),
    "CRP20250": lambda: pay(with_doc_taxes([DR_IVA], [replace(DR_ISR, tax="009")])),
    "CRP20251": lambda: pay(with_doc_taxes([DR_IVA], [replace(DR_ISR, factor_type="Porcentaje")])),
    "CRP20252": lambda: pay(with_doc_taxes([DR_IVA], [replace(DR_ISR, factor_type="Exento", rate=None)])),
    "CRP20253": lambda: pay(with_doc_taxes([DR_IVA], [replace(DR_ISR, rate=D("0.400000"), amount=D("400.00"))])),
    "CRP20254": lambda: pay(with_doc_taxes([DR_IVA], [replace(DR_ISR, amount=D("90.00"))])),
    "CRP20255": lambda: pay(with_doc_taxes([replace(DR_IVA, base=D("0"), amount=D("0"))])),
    "CRP20256": lambda: pay(with_doc_taxes([replace(DR_IVA, tax="009")])),
    "CRP20257": lambda: pay(with_doc_taxes([replace(DR_IVA, factor_type="Porcentaje")])),
    "CRP20258": lambda: pay(with_doc_taxes([replace(DR_IVA, factor_type="Exento")])),
    "CRP20259": lambda: pay(with_doc_taxes([replace(DR_IVA, amount=None)])),
    "CRP20260": lambda: pay(with_doc_taxes([replace(DR_IVA, rate=D("0.150000"), amount=D("150.00"))])),
    "CRP20261": lambda: pay(with_doc_taxes([replace(DR_IVA, amount=D("150.00"))])),
    "CRP20263": lambda: pay(lambda p: (with_doc_taxes([DR_IVA], [DR_ISR])(p),
                                       set_(pmt(p), withheld_taxes=pmt(p).withheld_taxes * 2))),
    "CRP20264": lambda: pay(lambda p: (with_doc_taxes([DR_IVA], [DR_ISR])(p),
                                       set_(p.payments.totals, withheld_isr=None))),
    "CRP20265": lambda: pay(lambda p: (with_doc_taxes([DR_IVA], [DR_ISR])(p),
                                       set_(pmt(p), withheld_taxes=[replace(pmt(p).withheld_taxes[0],
                                                                            amount=D("99.00"))]))),
    "CRP20266": lambda: pay(lambda p: set_(pmt(p), transferred_taxes=[replace(pmt(p).transferred_taxes[0],
                                                                              base=None)])),
    "CRP20267": lambda: pay(lambda p: set_(p.payments.totals, transferred_base_iva16=None, transferred_iva16=None)),
    "CRP20268": lambda: pay(lambda p: set_(pmt(p), transferred_taxes=[replace(pmt(p).transferred_taxes[0],
                                                                              base=D("999.00"))])),
    "CRP20269": lambda: pay(lambda p: (with_doc_taxes([PaymentTax("002", "Exento", None, D("1000.00"), None)])(p),
                                       set_(pmt(p), transferred_taxes=[replace(pmt(p).transferred_taxes[0],
                                                                               base=D("999.00"))]))),
    "CRP20271": lambda: pay(lambda p: set_(pmt(p), transferred_taxes=pmt(p).transferred_taxes * 2)),
    "CRP20273": lambda: pay(lambda p: set_(p.payments.totals, transferred_iva16=None)),
    "CRP20274": lambda: pay(lambda p: set_(pmt(p), transferred_taxes=[replace(pmt(p).transferred_taxes[0],
                                                                              amount=D("159.00"))])),
    # Σ lower limits 66.28 + 57.99 = 124.27 (see test_mixed_currency_monto_at_the_limits_passes).
    "CRP20276": lambda: mixed(monto=D("124.26")),
    "CRP20277": lambda: mixed(fn=lambda p: set_(pmt(p).related_documents[1], exchange_rate=D("1"))),
    "CRP20278": lambda: pay(with_doc_taxes([DR_IVA], tax_object="06")),
    "CRP20279": lambda: pay(with_doc_taxes([DR_IVA], tax_object="07")),
}

# Codes SAT's own rows make fire together with the one under test.
ALSO: dict[str, set[str]] = {
    "CFDI40178": {"CFDI40215"},  # the summary groups by TasaOCuota
    # Totales are derived from the payment's TrasladosP/RetencionesP: changing those moves them.
    "CRP20250": {"CRP20264"},
    "CRP20265": {"CRP20202"},
    "CRP20274": {"CRP20205"},
    "CFDI40133": {"CFDI40134"},  # "19" is neither a catalog month nor 01-12
    "CFDI40154": {"CFDI40153"},
    "CFDI40157": {"CFDI40161"},  # no UsoCFDI lists a regime outside the catalog
    "CFDI40169": {"CFDI40110"},
    "CFDI40180": {"CFDI40221"},
    "CFDI40186": {"CFDI40211"},
    "CFDI40208": {"CFDI40211"},
    "CRP20238": {"CRP20268", "CRP20274"},
    "CRP20240": {"CRP20243"},
    "CRP20242": {"CRP20243"},
    "CRP20243": {"CRP20240", "CRP20242"},
    "CRP20257": {"CRP20267", "CRP20273"},
    "CRP20260": {"CRP20267", "CRP20273"},
    "CFDI40109": {"CFDI40108", "CFDI40119"},
    "CFDI40206": {"CFDI40203", "CFDI40119", "CFDI40209"},
    "CFDI40209": {"CFDI40203", "CFDI40119", "CFDI40206"},
    "CFDI40201": {"CFDI40205"},
    "CFDI40202": {"CFDI40211", "CFDI40210", "CFDI40119"},
    "CFDI40204": {"CFDI40221", "CFDI40220"},
    "CFDI40210": {"CFDI40211", "CFDI40203", "CFDI40119"},
    "CFDI40212": {"CFDI40205"},
    "CFDI40214": {"CFDI40215"},
    "CFDI40218": {"CFDI40205", "CFDI40221"},
    "CFDI40220": {"CFDI40221", "CFDI40205", "CFDI40119"},
    "CFDI40221": {"CFDI40205"},
    "CFDI40177": {"CFDI40180", "CFDI40215", "CFDI40221"},
    "CFDI40168": {"CFDI40169"},
    "CFDI40121": {"CFDI40166"},
    "CRP20101": {"APP_PAGOS_REQUERIDO", "APP_USO_CP01", "APP_PAGO_REQUERIDO", "CFDI40166"},
    "CRP20105": {"CFDI40103"},
    "CRP20106": {"CFDI40125"},
    "CRP20109": {"CFDI40116"},
    "CRP20103": {"CFDI40109"},
    "CRP20110": {"CFDI40109"},
    "CRP20115": {"CFDI40167"},
    "CRP20119": {"CFDI40167"},
    "CRP20120": {"CFDI40167"},
    "CRP20122": {"CFDI40171"},
    "CRP20123": {"CFDI40172", "CFDI40180"},
    "CRP20201": {"CRP20264"},
    "CRP20202": {"CRP20264"},
    "CRP20203": {"CRP20264"},
    "CRP20213": {"CRP20238", "CRP20211", "CRP20219"},
    "CRP20214": {"CRP20238"},
    "CRP20218": {"CRP20217", "CRP20211", "CRP20241", "CRP20246"},
    "CRP20236": {"CRP20238", "APP_CATALOGO", "CRP20240", "CRP20242", "CRP20243"},
    "CRP20239": {"CRP20244"},
    "CRP20241": {"CRP20244"},
    "CRP20249": {"CRP20254"},
    "CRP20255": {"CRP20261"},
    "CRP20263": {"CRP20265", "CRP20202"},
    "CRP20264": {"CRP20202"},
    "CRP20266": {"CRP20204"},
    "CRP20267": {"CRP20204", "CRP20205", "CRP20273"},
    "CRP20268": {"CRP20274", "CRP20204"},
    "CRP20269": {"CRP20210"},
    "CRP20271": {"CRP20268", "CRP20274", "CRP20204", "CRP20205"},
    "CRP20273": {"CRP20205"},
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_violation_is_refused_under_its_own_code(code: str) -> None:
    issues = {i.code for i in check_invoice(CASES[code](), NOW)}
    assert code in issues
    assert issues - {code} <= ALSO.get(code, set()), f"{code}: unexpected {issues - {code}}"


def test_valid_invoices_pass() -> None:
    assert check_invoice(make_invoice(), NOW) == []
    assert check_invoice(pay(), NOW) == []
    assert check_invoice(public(), NOW) == []


def test_every_enforced_code_has_a_violating_case() -> None:
    enforced = {code for code, (status, _) in STATUS.items() if status == ENFORCED}
    assert enforced - set(CASES) == set()
    assert set(CASES) - enforced == set(), "a case for a code the table does not call enforced"


def test_table_lists_every_code_of_both_matrices() -> None:
    codes = {r["codigo"] for name in ("matriz_cfdi40.json", "matriz_crp20.json")
             for r in json.loads((SAT_DOCS / name).read_text("utf-8"))}
    assert set(STATUS) == codes
    assert all(status in ("enforced", "pac-only", "not-applicable", "pending") and why
               for status, why in STATUS.values())


def test_mixed_currency_limits_of_each_document() -> None:
    """The derived margins (payments.paid_amount_bounds), by hand, in USD (2 decimals):
    MXN doc: (1160.00 ∓ 0.005) / (17.5000 ± 0.00005) = 66.2852.. / 66.2895.. -> [66.28, 66.29];
    USD doc: (58.00 ∓ 0.005) / (1.0000000000 ± 0.5e-10) -> [57.99, 58.01]. Written as a bare "1"
    (± 0.5) the USD doc would span [38.66, 116.01]: why CRP20277 asks for ten decimals."""
    p = pmt(mixed())
    assert p.amount == D("124.29")  # round(1160 / 17.5 + 58) = round(124.2857..)
    assert [paid_amount_bounds(d, p) for d in p.related_documents] == [
        (D("66.28"), D("66.29")),
        (D("57.99"), D("58.01")),
    ]


@pytest.mark.parametrize("monto", ["124.27", "124.29", "124.30", "130.00"])
def test_mixed_currency_monto_at_the_limits_passes(monto: str) -> None:
    # 124.27 = Σ lower and 124.30 = Σ upper; 130.00 is above Σ ImpPagado converted (124.2857..),
    # which CRP20276 does not check ("...no sea menor o igual al atributo Monto...").
    assert check_invoice(mixed(monto=D(monto)), NOW) == []


def test_converted_imp_pagado_always_lies_within_its_own_limits() -> None:
    """Why CRP20275 is not-applicable: limits computed from ImpPagado and EquivalenciaDR contain
    ImpPagado / EquivalenciaDR (exact, and rounded half-up to MonedaP as Monto is) for any positive
    values, in any pair of currencies and with EquivalenciaDR written with 0 to 10 decimals."""
    from hypothesis import given, settings, strategies as st

    from sat.cfdi.models import Payment
    from sat.cfdi.totals import round_money

    currencies = st.sampled_from(["MXN", "USD", "JPY", "CLF"])  # 2, 2, 0 and 4 decimals

    @settings(max_examples=300, deadline=None, database=None)
    @given(doc_cur=currencies, pay_cur=currencies, paid=st.integers(1, 10**12),
           eq_units=st.integers(1, 10**12), eq_places=st.integers(0, 10), ten=st.booleans())
    def check(doc_cur, pay_cur, paid, eq_units, eq_places, ten):
        from sat.cfdi.catalogs import currency_decimals

        amount_paid = D(paid).scaleb(-currency_decimals(doc_cur))
        eq = D(eq_units).scaleb(-eq_places)
        docs = [RelatedDocument(UUID, doc_cur, 1, amount_paid, amount_paid, D(0), "01", exchange_rate=eq)]
        if ten:  # CRP20277's situation: another document in MonedaP
            other = "EUR" if doc_cur == pay_cur else pay_cur
            docs.append(RelatedDocument(UUID, other, 1, D("1"), D("1"), D(0), "01", exchange_rate=D("1")))
        payment = Payment(NOW, "03", pay_cur, None, related_documents=docs)
        lower, upper = paid_amount_bounds(docs[0], payment)
        converted = amount_paid / eq
        assert lower <= converted <= upper
        assert lower <= round_money(converted, currency_decimals(pay_cur)) <= upper

    check()
    for p in pmt(mixed()), pmt(pay()):
        for d in p.related_documents:
            lower, upper = paid_amount_bounds(d, p)
            assert lower <= d.amount_paid / d.exchange_rate <= upper


def test_builder_writes_equivalence_one_with_ten_decimals_only_when_currencies_mix(csd_eku) -> None:
    """What the builder sends for the mixed payment: checked, sealed and XSD-valid (EquivalenciaDR
    allows 10 fraction digits), with the USD document's 1 written 1.0000000000 (CRP20277)."""
    from lxml import etree

    from sat.cfdi.models import PAGO20_NS
    from sat.cfdi.stamping import prepare_for_stamping

    def equivalences(inv: Invoice) -> list[str | None]:
        root = etree.fromstring(prepare_for_stamping(inv, csd_eku, NOW))
        return [d.get("EquivalenciaDR") for d in root.iter(f"{{{PAGO20_NS}}}DoctoRelacionado")]

    assert equivalences(mixed()) == ["17.5000", "1.0000000000"]
    assert equivalences(pay()) == ["1"]  # one currency: no margins, written as before
