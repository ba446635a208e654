"""Rules of SAT's Pagos 2.0 error matrix (MatrizDeErrores_CRP_V20_RevB, codes CRP20xxx) that an
issuer can check before stamping. Each rule quotes the matrix rows it enforces; `matrix.STATUS`
lists every CRP code with its status. Run by `rules.check_invoice` for every invoice.
"""

from __future__ import annotations

from datetime import datetime

from . import catalogs
from .models import Invoice, PaymentTax
from .payments import margins_apply, paid_amount_bounds, payment_totals, ten_decimal_equivalence
from .rules import RuleIssue, _decimals
from .totals import ZERO, round_money, tax_amount_bounds


def comprobante_of_payment(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """The Comprobante of a CFDI with Pagos 2.0.

    CRP20101 "El valor registrado debe ser P"; CRP20102 "El valor registrado debe ser "01"";
    CRP20103 "El atributo SubTotal debe tener el valor "0"."; CRP20104 "El atributo Moneda debe
    tener el valor "XXX"."; CRP20105 "El atributo FormaPago no debe existir."; CRP20106 "El atributo
    MetodoPago no debe existir."; CRP20107 CondicionesDePago, CRP20108 Descuento, CRP20109 TipoCambio
    "no se debe registrar"; CRP20110 "El valor del campo Total debe ser cero "0"."
    """
    if inv.payments is None:
        return []
    if inv.voucher_type != "P":
        return [RuleIssue("CRP20101", "voucher_type", "El complemento de pagos solo va en un comprobante tipo P.")]
    checks = [
        ("CRP20102", "exportation", inv.exportation != "01", "La exportación de un comprobante de pago debe ser 01."),
        ("CRP20103", "subtotal", inv.subtotal not in (None, ZERO), "El subtotal del comprobante de pago debe ser 0."),
        ("CRP20104", "currency", inv.currency != "XXX", "El comprobante de pago debe usar la moneda XXX."),
        ("CRP20105", "payment_form", inv.payment_form is not None, "El comprobante de pago no lleva forma de pago."),
        ("CRP20106", "payment_method", inv.payment_method is not None, "El comprobante de pago no lleva método de pago."),
        ("CRP20107", "payment_conditions", inv.payment_conditions is not None, "El comprobante de pago no lleva condiciones de pago."),
        ("CRP20108", "discount", inv.discount is not None, "El comprobante de pago no lleva descuento."),
        ("CRP20109", "exchange_rate", inv.exchange_rate is not None, "El comprobante de pago no lleva tipo de cambio."),
        ("CRP20110", "total", inv.total not in (None, ZERO), "El total del comprobante de pago debe ser 0."),
    ]
    return [RuleIssue(code, path, msg) for code, path, bad, msg in checks if bad]


def concept_of_payment(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """The single Concepto of a payment CFDI.

    CRP20111 "Solo debe existir un Concepto en el CFDI."; CRP20112 "Si no existe el nodo
    AcuentaTerceros, no se deben registrar apartados dentro de Conceptos"; CRP20113 ClaveProdServ
    "84111506"; CRP20114 NoIdentificacion "no se debe registrar"; CRP20115 Cantidad "1"; CRP20116
    ClaveUnidad "ACT"; CRP20117 Unidad "no se debe registrar"; CRP20118 Descripcion "Pago";
    CRP20119 ValorUnitario "0"; CRP20120 Importe "0"; CRP20121 Descuento "no se debe registrar";
    CRP20122 ObjetoImp "01"; CRP20123 "No se debe registrar el apartado de Impuestos en el CFDI."
    """
    if inv.payments is None or inv.voucher_type != "P":
        return []
    if len(inv.concepts) != 1:
        return [RuleIssue("CRP20111", "concepts", "El comprobante de pago lleva exactamente un concepto.")]
    c = inv.concepts[0]
    p = "concepts[0]"
    checks = [
        ("CRP20112", p, c.third_party is None and bool(c.customs_numbers or c.property_accounts), "El concepto de pago no lleva apartados."),
        ("CRP20113", f"{p}.product_code", c.product_code != "84111506", "La clave del concepto de pago debe ser 84111506."),
        ("CRP20114", f"{p}.identification", c.identification is not None, "El concepto de pago no lleva NoIdentificacion."),
        ("CRP20115", f"{p}.quantity", c.quantity != 1, "La cantidad del concepto de pago debe ser 1."),
        ("CRP20116", f"{p}.unit_code", c.unit_code != "ACT", "La clave de unidad del concepto de pago debe ser ACT."),
        ("CRP20117", f"{p}.unit", c.unit is not None, "El concepto de pago no lleva Unidad."),
        ("CRP20118", f"{p}.description", c.description != "Pago", "La descripción del concepto de pago debe ser Pago."),
        ("CRP20119", f"{p}.unit_price", c.unit_price != 0, "El valor unitario del concepto de pago debe ser 0."),
        ("CRP20120", f"{p}.amount", c.amount not in (None, ZERO), "El importe del concepto de pago debe ser 0."),
        ("CRP20121", f"{p}.discount", c.discount is not None, "El concepto de pago no lleva descuento."),
        ("CRP20122", f"{p}.tax_object", c.tax_object != "01", "El ObjetoImp del concepto de pago debe ser 01."),
        ("CRP20123", p, bool(c.transferred_taxes or c.withheld_taxes), "El concepto de pago no lleva impuestos."),
    ]
    return [RuleIssue(code, path, msg) for code, path, bad, msg in checks if bad]


_TOTAL_CODES = {
    "withheld_iva": "CRP20201",
    "withheld_isr": "CRP20202",
    "withheld_ieps": "CRP20203",
    "transferred_base_iva16": "CRP20204",
    "transferred_iva16": "CRP20205",
    "transferred_base_iva8": "CRP20206",
    "transferred_iva8": "CRP20207",
    "transferred_base_iva0": "CRP20208",
    "transferred_iva0": "CRP20209",
    "exempt_base_iva": "CRP20210",
    "total_amount": "CRP20211",
}


def payment_totals_match(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """pago20:Totales = the rounded Σ of each payment's amounts × TipoCambioP.

    CRP20201..CRP20210, e.g. CRP20204 "El valor del campo TotalTrasladosBaseIVA16 no es igual al
    redondeo de la suma del resultado de multiplicar cada uno de los importes de los atributos BaseP
    de los impuestos trasladados registrados en el elemento TrasladoP donde los..."; CRP20211
    "El valor del campo MontoTotalPagos no es igual al redondeo de la suma del resultado de
    multiplicar cada uno de los atributos Monto por el valor registrado en el atributo TipoCambioP
    de cada nodo Pago."
    """
    if inv.payments is None or any(p.amount is None for p in inv.payments.payments):
        return []
    expected = payment_totals(inv.payments.payments)
    return [
        RuleIssue(code, f"payments.totals.{name}", "El total del complemento de pagos no cuadra con los pagos.")
        for name, code in _TOTAL_CODES.items()
        if getattr(inv.payments.totals, name) != getattr(expected, name)
    ]


def _tax_lines(prefix: str, taxes: list[PaymentTax], transfer: bool, on) -> list[RuleIssue]:
    """TrasladoDR (CRP20255..20261) / RetencionDR (CRP20249..20254) of one related document."""
    codes = (
        ("CRP20255", "CRP20256", "CRP20257", "CRP20260", "CRP20261")
        if transfer
        else ("CRP20249", "CRP20250", "CRP20251", "CRP20253", "CRP20254")
    )
    base_code, tax_code, factor_code, rate_code, amount_code = codes
    issues = []
    for j, t in enumerate(taxes):
        path = f"{prefix}[{j}]"
        if t.base is None or t.base <= 0:
            issues.append(RuleIssue(base_code, f"{path}.base", "La base del impuesto debe ser mayor que cero."))
        if not catalogs.contains("c_Impuesto", t.tax, on):
            issues.append(RuleIssue(tax_code, f"{path}.tax", f"El impuesto '{t.tax}' no está en c_Impuesto."))
        if t.factor_type not in ("Tasa", "Cuota", "Exento"):
            issues.append(RuleIssue(factor_code, f"{path}.factor_type", "El tipo de factor no está en c_TipoFactor."))
            continue
        if t.factor_type == "Exento":
            if not transfer:
                issues.append(RuleIssue("CRP20252", f"{path}.factor_type", "Una retención no puede ser exenta."))
            elif t.rate is not None or t.amount is not None:
                issues.append(RuleIssue("CRP20258", path, "Un traslado exento no lleva TasaOCuotaDR ni ImporteDR."))
            continue
        if t.rate is None or t.amount is None:
            if transfer:
                issues.append(RuleIssue("CRP20259", path, "Un traslado con Tasa o Cuota requiere TasaOCuotaDR e ImporteDR."))
            continue
        if not catalogs.contains("c_Impuesto", t.tax, on):
            continue
        if not catalogs.tasa_o_cuota_allowed(t.tax, t.factor_type, t.rate, transfer=transfer, on=on):
            issues.append(RuleIssue(rate_code, f"{path}.rate", f"La tasa o cuota {t.rate} no es válida."))
        elif t.base is not None and t.base > 0:
            low, high = tax_amount_bounds(t.base, t.rate, max(_decimals(t.amount), 0))
            if not low <= t.amount <= high:
                issues.append(RuleIssue(amount_code, f"{path}.amount", "El importe no corresponde a base × tasa."))
    return issues


def related_documents(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Each pago20:DoctoRelacionado and its taxes.

    CRP20236 "El valor del campo MonedaDR debe ser distinto de "XXX""; CRP20237 "El campo
    EquivalenciaDR se debe registrar." (MonedaDR ≠ MonedaP); CRP20238 "El campo EquivalenciaDR debe
    contener el valor "1"." (MonedaDR = MonedaP); CRP20239 "El campo ImpSaldoAnt debe mayor a cero.";
    CRP20240/20242/20243 "...debe tener hasta la cantidad de decimales que soporte la moneda
    registrada en el campo MonedaDR."; CRP20241 "El campo ImpPagado debe mayor a cero."; CRP20244
    "El campo ImpSaldoInsoluto debe ser mayor o igual a cero y calcularse con la suma de los campos
    ImpSaldoAnt menos el ImpPagado."; CRP20245 "El campo ObjetoImpDR, debe tener un valor del
    catálogo c_ObjetoImp."; CRP20246 "El nodo hijo ImpuestosDR del nodo DoctoRelacionado debe
    existir." (ObjetoImpDR 02); CRP20247 "El nodo hijo de ImpuestosDR del nodo DoctoRelacionado, no
    debe existir." (01, 03, 04, 05); CRP20278 "Cuando se registre el valor "06" o "08" en el campo
    ObjetoImpDR, el valor del campo ImpuestoDR ... debe ser distinto de los valores "002" (IVA) y/o
    "003" (IEPS)."; CRP20279 "Cuando se registre el valor “07" ... debe ser distinto del valor "002"
    (IVA); debe existir al menos un nodo..." TrasladoDR "003"; tax lines: see `_tax_lines`.
    """
    if inv.payments is None:
        return []
    on = inv.issued_at.date().isoformat()
    issues: list[RuleIssue] = []
    for i, p in enumerate(inv.payments.payments):
        for j, d in enumerate(p.related_documents):
            path = f"payments.payments[{i}].related_documents[{j}]"
            places = catalogs.currency_decimals(d.currency)
            if not catalogs.contains("c_Moneda", d.currency, on):  # no CRP row: the XSD's c_Moneda type
                issues.append(RuleIssue("APP_CATALOGO", f"{path}.currency", f"La moneda '{d.currency}' no está en c_Moneda."))
            if d.currency == "XXX":
                issues.append(RuleIssue("CRP20236", f"{path}.currency", "La moneda del documento no puede ser XXX."))
            if d.currency != p.currency and d.exchange_rate is None:
                issues.append(RuleIssue("CRP20237", f"{path}.exchange_rate", "Con moneda distinta al pago se requiere EquivalenciaDR."))
            if d.currency == p.currency and d.exchange_rate is not None and d.exchange_rate != 1:
                issues.append(RuleIssue("CRP20238", f"{path}.exchange_rate", "Con la misma moneda que el pago la equivalencia debe ser 1."))
            if d.previous_balance <= 0:
                issues.append(RuleIssue("CRP20239", f"{path}.previous_balance", "El saldo anterior debe ser mayor que cero."))
            if d.amount_paid <= 0:
                issues.append(RuleIssue("CRP20241", f"{path}.amount_paid", "El importe pagado debe ser mayor que cero."))
            for code, name, value in (
                ("CRP20240", "previous_balance", d.previous_balance),
                ("CRP20242", "amount_paid", d.amount_paid),
                ("CRP20243", "remaining_balance", d.remaining_balance),
            ):
                if value is not None and _decimals(value) > places:
                    issues.append(RuleIssue(code, f"{path}.{name}", f"El importe tiene más decimales de los que admite {d.currency}."))
            if d.remaining_balance is None or d.remaining_balance < 0 or (
                d.remaining_balance != d.previous_balance - d.amount_paid
            ):
                issues.append(
                    RuleIssue("CRP20244", f"{path}.remaining_balance", "El saldo insoluto debe ser saldo anterior - pagado y no negativo.")
                )
            taxes = d.transferred_taxes + d.withheld_taxes
            kinds = {t.tax for t in taxes}
            if not catalogs.contains("c_ObjetoImp", d.tax_object, on):
                issues.append(RuleIssue("CRP20245", f"{path}.tax_object", f"El ObjetoImpDR '{d.tax_object}' no está en c_ObjetoImp."))
            elif d.tax_object == "02" and not taxes:
                issues.append(RuleIssue("CRP20246", f"{path}.tax_object", "Con ObjetoImpDR 02 el documento debe desglosar sus impuestos."))
            elif d.tax_object in ("01", "03", "04", "05") and taxes:
                issues.append(RuleIssue("CRP20247", f"{path}.tax_object", f"Con ObjetoImpDR {d.tax_object} el documento no lleva impuestos."))
            elif d.tax_object in ("06", "08") and kinds & {"002", "003"}:
                issues.append(RuleIssue("CRP20278", f"{path}.tax_object", "Con ObjetoImpDR 06 u 08 el documento no lleva IVA ni IEPS."))
            elif d.tax_object == "07" and ("002" in kinds or not any(t.tax == "003" for t in d.transferred_taxes)):
                issues.append(RuleIssue("CRP20279", f"{path}.tax_object", "Con ObjetoImpDR 07 el documento no lleva IVA y traslada IEPS."))
            issues += _tax_lines(f"{path}.transferred_taxes", d.transferred_taxes, True, on)
            issues += _tax_lines(f"{path}.withheld_taxes", d.withheld_taxes, False, on)
    return issues


def payments_amounts(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Each pago20:Pago and its ImpuestosP.

    CRP20212 "El valor del campo FormaDePagoP debe ser distinto de "99"."; CRP20213 "El campo MonedaP
    debe ser distinto de "XXX""; CRP20214 "El campo TipoCambioP se debe registrar." (MonedaP ≠ MXN);
    CRP20215 "El campo TipoCambioP debe contener el valor "1"." (MonedaP MXN); CRP20217 "Cuando la
    moneda registrada en el Documento Relacionado sea igual a la del Pago, la suma de los valores
    registrados en el nodo DoctoRelacionado, atributo ImpPagado, debe ser menor o igual que el valor
    de este atributo."; CRP20218 "El valor del campo Monto no es mayor que cero
    "0"."; CRP20219 Monto "debe tener hasta la cantidad de decimales que soporte la moneda
    registrada en el campo MonedaP."; CRP20263 "Debe haber sólo un registro por cada tipo de impuesto
    retenido."; CRP20264 "Debe existir al menos uno de los campos TotalRetencionesIVA,
    TotalRetencionesISR, TotalRetencionesIEPS."; CRP20265 ImporteP (retención) = Σ ImporteDR;
    CRP20266 "Deben existir los campos BaseP, ImpuestoP y TipoFactorP"; CRP20267 "Debe existir al
    menos uno de los campos TotalTrasladosBaseIVA16 y/o ...IVA8 y/o ...IVA0 y/o ...IVAExento.";
    CRP20268 BaseP = Σ BaseDR (same impuesto, factor, tasa); CRP20269 the same for exempt lines;
    CRP20271 "Debe haber sólo un registro con la misma combinación de impuesto, factor y tasa por
    cada traslado."; CRP20273 "Deben existir al menos uno de los campos TotalTrasladosImpuestoIVA16,
    TotalTrasladosImpuestoIVA8, TotalTrasladosImpuestoIVA0 cuando existan conceptos con un TipoFactor
    distinto a Exento."; CRP20274 ImporteP (traslado) = Σ ImporteDR.
    """
    if inv.payments is None:
        return []
    from .payments import _group_payment_taxes

    issues: list[RuleIssue] = []
    totals = inv.payments.totals
    for i, p in enumerate(inv.payments.payments):
        path = f"payments.payments[{i}]"
        if p.payment_form == "99":
            issues.append(RuleIssue("CRP20212", f"{path}.payment_form", "La forma de pago del pago no puede ser 99."))
        if not catalogs.contains("c_FormaPago", p.payment_form, inv.issued_at.date()):
            issues.append(RuleIssue("APP_CATALOGO", f"{path}.payment_form", f"La forma de pago '{p.payment_form}' no está en c_FormaPago."))
        if p.currency == "XXX":
            issues.append(RuleIssue("CRP20213", f"{path}.currency", "La moneda del pago no puede ser XXX."))
        elif p.currency != "MXN" and p.exchange_rate is None:
            issues.append(RuleIssue("CRP20214", f"{path}.exchange_rate", "Con moneda distinta de MXN se requiere TipoCambioP."))
        if p.currency == "MXN" and p.exchange_rate is not None and p.exchange_rate != 1:
            issues.append(RuleIssue("CRP20215", f"{path}.exchange_rate", "Con moneda MXN el TipoCambioP debe ser 1."))
        if p.amount is None:
            continue
        places = catalogs.currency_decimals(p.currency)
        if p.amount <= 0:
            issues.append(RuleIssue("CRP20218", f"{path}.amount", "El monto del pago debe ser mayor que cero."))
        if _decimals(p.amount) > places:
            issues.append(RuleIssue("CRP20219", f"{path}.amount", f"El monto tiene más decimales de los que admite {p.currency}."))
        # CRP20217 is the same-currency case ("Al ser mismas monedas, no se calculan los márgenes de
        # variación"); with other currencies SAT allows margins (CRP20276: mixed_currency_margins).
        same_currency = all(d.currency == p.currency for d in p.related_documents)
        paid = sum((d.amount_paid for d in p.related_documents), ZERO)
        if same_currency and round_money(paid, places) > p.amount:
            issues.append(RuleIssue("CRP20217", f"{path}.amount", "Lo pagado a los documentos excede el monto del pago."))
        exp_t, exp_w = _group_payment_taxes(p)
        by_key = {(t.tax, t.factor_type, t.rate): t for t in exp_t}
        keys = [(t.tax, t.factor_type, t.rate) for t in p.transferred_taxes]
        if len(set(keys)) != len(keys):
            issues.append(RuleIssue("CRP20271", f"{path}.transferred_taxes", "Traslado repetido con el mismo impuesto, factor y tasa."))
        for k, t in enumerate(p.transferred_taxes):
            tp = f"{path}.transferred_taxes[{k}]"
            if t.base is None or t.factor_type is None:
                issues.append(RuleIssue("CRP20266", tp, "El traslado del pago requiere BaseP, ImpuestoP y TipoFactorP."))
                continue
            exp = by_key.get((t.tax, t.factor_type, t.rate))
            if exp is None or exp.base != t.base:
                code = "CRP20269" if t.factor_type == "Exento" else "CRP20268"
                issues.append(RuleIssue(code, f"{tp}.base", "La BaseP no es la suma de las bases de los documentos."))
            if exp is not None and t.factor_type != "Exento" and exp.amount != t.amount:
                issues.append(RuleIssue("CRP20274", f"{tp}.amount", "El ImporteP no es la suma de los importes de los documentos."))
        withheld_keys = [t.tax for t in p.withheld_taxes]
        if len(set(withheld_keys)) != len(withheld_keys):
            issues.append(RuleIssue("CRP20263", f"{path}.withheld_taxes", "Retención repetida del mismo impuesto."))
        exp_withheld = {t.tax: t for t in exp_w}
        for k, t in enumerate(p.withheld_taxes):
            exp = exp_withheld.get(t.tax)
            if exp is None or exp.amount != t.amount:
                issues.append(
                    RuleIssue("CRP20265", f"{path}.withheld_taxes[{k}].amount", "El ImporteP retenido no es la suma de los documentos.")
                )
        if p.withheld_taxes and all(
            v is None for v in (totals.withheld_iva, totals.withheld_isr, totals.withheld_ieps)
        ):
            issues.append(RuleIssue("CRP20264", "payments.totals", "Con retenciones deben registrarse sus totales."))
        iva = [t for t in p.transferred_taxes if t.tax == "002"]
        bases = (totals.transferred_base_iva16, totals.transferred_base_iva8, totals.transferred_base_iva0, totals.exempt_base_iva)
        if iva and all(v is None for v in bases):
            issues.append(RuleIssue("CRP20267", "payments.totals", "Con traslados de IVA deben registrarse sus bases totales."))
        amounts = (totals.transferred_iva16, totals.transferred_iva8, totals.transferred_iva0)
        if any(t.factor_type != "Exento" for t in iva) and all(v is None for v in amounts):
            issues.append(RuleIssue("CRP20273", "payments.totals", "Con traslados de IVA deben registrarse sus importes totales."))
    return issues


def mixed_currency_margins(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Monto of a Pago whose documents are not all in MonedaP, and how EquivalenciaDR 1 is written.

    CRP20276 "En el caso donde la suma de los atributos ImpPagado de cada documento relacionado
    convertido a la moneda del pago no sea menor o igual al atributo Monto en operaciones con
    diferentes divisas, se debe validar que el valor del atributo Monto sea mayor o igual al
    resultado de sumar los límites inferiores y menor o igual al resultado de sumar los límites
    superiores de cada ImpPagado calculados previamente." Each document's limits are
    `payments.paid_amount_bounds` (a formula derived from the matrix rows and the Anexo 20 Guía's
    margin method, because SAT's Pagos 2.0 Guía is not in sat-docs; its docstring says how). When
    Σ ImpPagado / EquivalenciaDR <= Monto nothing is checked, as the row says (a Monto above the
    documents is allowed, like CRP20217 allows it with one currency); when it is above Monto only
    the lower sum can be missed, but both are checked as the row states them.

    CRP20277 "Cuando existan operaciones con más de un Documento relacionado en donde al menos uno
    de ellos contenga la misma moneda que la del Pago, para la fórmula en el cálculo del margen de
    variación se deben considerar 10 decimales en la EquivalenciaDR cuando el valor sea 1."
    ("El valor de EquivalenciaDR para la fórmula del cálculo del margen de variación debe ser
    “1.0000000000”."). The margins above always count such a 1 with 10 decimals; this rule makes the
    XML say so too (build.py writes EquivalenciaDR as the model holds it; `compute_payment` writes
    1.0000000000), so no validator has to guess that a bare "1" means ± 0.5e-10 and not ± 0.5.

    CRP20275 (each converted ImpPagado between its own limits) is not a rule here: limits computed
    from the very ImpPagado and EquivalenciaDR they bound always contain it (matrix.STATUS says why).
    """
    if inv.payments is None:
        return []
    issues: list[RuleIssue] = []
    for i, p in enumerate(inv.payments.payments):
        path = f"payments.payments[{i}]"
        if not margins_apply(p):
            continue
        if ten_decimal_equivalence(p):
            for j, d in enumerate(p.related_documents):
                if d.exchange_rate is not None and d.exchange_rate == 1 and _decimals(d.exchange_rate) != 10:
                    issues.append(RuleIssue(
                        "CRP20277", f"{path}.related_documents[{j}].exchange_rate",
                        "En un pago con documentos en varias monedas, la equivalencia 1 se registra como 1.0000000000.",
                    ))
        bounds = [paid_amount_bounds(d, p) for d in p.related_documents]
        if p.amount is None or any(b is None for b in bounds):
            continue  # a missing EquivalenciaDR is CRP20237's
        converted = sum((d.amount_paid / (d.exchange_rate or 1) for d in p.related_documents), ZERO)
        lower = sum((b[0] for b in bounds), ZERO)
        upper = sum((b[1] for b in bounds), ZERO)
        if converted > p.amount and not lower <= p.amount <= upper:
            issues.append(RuleIssue(
                "CRP20276", f"{path}.amount",
                f"El monto del pago está fuera de los límites de lo pagado a los documentos ({lower} a {upper}).",
            ))
    return issues


PAYMENT_RULES = (
    comprobante_of_payment,
    concept_of_payment,
    payments_amounts,
    related_documents,
    payment_totals_match,
    mixed_currency_margins,
)


def check_payments(inv: Invoice, now: datetime) -> list[RuleIssue]:
    issues: list[RuleIssue] = []
    for rule in PAYMENT_RULES:
        issues.extend(rule(inv, now))
    return issues
