"""Business rules beyond the XSD: what a PAC would reject, checked before we ever send it.

Each rule is a small function `(invoice, now) -> list[RuleIssue]` named after what it checks,
tagged with the SAT error code of the Matriz de errores CFDI 4.0 (CFDI40xxx) when one exists; the
few checks with no SAT code (guía de llenado rules PACs enforce differently) use "APP_*" codes.
Messages are for the user, in es-MX. `check_invoice` runs them all.

Codes were cross-checked against public compilations of SAT's Matriz de errores; the official
XLS was not available offline, so a code may need adjusting if SAT renumbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

from . import catalogs
from .models import GENERIC_RFC_FOREIGN, GENERIC_RFC_NATIONAL, Invoice
from .totals import (
    ZERO,
    compute_totals,
    concept_amount_bounds,
    group_transferred,
    group_withheld,
    round_money,
    tax_amount_bounds,
)

# Fecha is local time at LugarExpedicion. c_CodigoPostal names each zip code's time zone; these
# are the IANA zones with the same offsets and DST rules (central Mexico has had no DST since 2022;
# the northern border strip follows US DST).
_TIMEZONES = {
    "Tiempo del Centro": "America/Mexico_City",
    "Tiempo del Centro en Frontera": "America/Matamoros",
    "Tiempo del Pacífico": "America/Mazatlan",
    "Tiempo del Noroeste": "America/Tijuana",
    "Tiempo del Sureste": "America/Cancun",
}


def place_timezone(zip_code: str) -> tzinfo:
    """Time zone of a c_CodigoPostal code (central Mexico when unknown)."""
    row = catalogs.get("c_CodigoPostal", zip_code)
    name = _TIMEZONES.get(row["timezone"] if row else "", "America/Mexico_City")
    try:
        return ZoneInfo(name)
    except Exception:  # pragma: no cover - system without tzdata
        return timezone(timedelta(hours=-6))


PUBLICO_EN_GENERAL = "PUBLICO EN GENERAL"
STAMP_WINDOW = timedelta(hours=72)
CLOCK_SKEW = timedelta(minutes=10)  # a Fecha slightly ahead of our clock is not the user's fault


@dataclass(frozen=True)
class RuleIssue:
    code: str
    field_path: str  # model path, e.g. "concepts[0].transferred_taxes[1].rate"
    message_es: str


Rule = Callable[[Invoice, datetime], list[RuleIssue]]


def person_type(rfc: str) -> str | None:
    """ "fisica" (13 chars), "moral" (12), "generic_national"/"generic_foreign", or None if malformed."""
    rfc = rfc.strip().upper()
    if rfc == GENERIC_RFC_NATIONAL:
        return "generic_national"
    if rfc == GENERIC_RFC_FOREIGN:
        return "generic_foreign"
    return {13: "fisica", 12: "moral"}.get(len(rfc))


def _is_generic(rfc: str) -> bool:
    return rfc.strip().upper() in (GENERIC_RFC_NATIONAL, GENERIC_RFC_FOREIGN)


# --- catalogs ---------------------------------------------------------------------------------


def catalog_codes(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Every coded field must be in its SAT catalog."""
    checks: list[tuple[str, str | None, str, str]] = [
        ("c_TipoDeComprobante", inv.voucher_type, "voucher_type", "CFDI40121"),
        ("c_Exportacion", inv.exportation, "exportation", "CFDI40123"),
        ("c_Moneda", inv.currency, "currency", "CFDI40113"),
        ("c_CodigoPostal", inv.place_of_issue, "place_of_issue", "CFDI40126"),
        ("c_RegimenFiscal", inv.issuer.tax_regime, "issuer.tax_regime", "CFDI40140"),
        ("c_RegimenFiscal", inv.receiver.tax_regime, "receiver.tax_regime", "CFDI40157"),
        ("c_UsoCFDI", inv.receiver.cfdi_use, "receiver.cfdi_use", "CFDI40160"),
    ]
    if inv.payment_form is not None:
        checks.append(("c_FormaPago", inv.payment_form, "payment_form", "CFDI40104"))
    if inv.payment_method is not None:
        checks.append(("c_MetodoPago", inv.payment_method, "payment_method", "CFDI40124"))
    if inv.receiver.tax_residence is not None:
        checks.append(("c_Pais", inv.receiver.tax_residence, "receiver.tax_residence", "CFDI40150"))
    if inv.global_information is not None:
        checks.append(
            ("c_Periodicidad", inv.global_information.periodicity, "global_information.periodicity", "CFDI40131")
        )
        checks.append(("c_Meses", inv.global_information.months, "global_information.months", "CFDI40133"))
    for i, rel in enumerate(inv.related):
        checks.append(("c_TipoRelacion", rel.relation_type, f"related[{i}].relation_type", "CFDI40137"))
    for i, c in enumerate(inv.concepts):
        checks.append(("c_ClaveProdServ", c.product_code, f"concepts[{i}].product_code", "CFDI40162"))
        checks.append(("c_ClaveUnidad", c.unit_code, f"concepts[{i}].unit_code", "CFDI40165"))
        checks.append(("c_ObjetoImp", c.tax_object, f"concepts[{i}].tax_object", "CFDI40170"))
        if c.third_party is not None:
            checks.append(
                ("c_RegimenFiscal", c.third_party.tax_regime, f"concepts[{i}].third_party.tax_regime", "CFDI40191")
            )
        for kind, taxes, code in (
            ("transferred_taxes", c.transferred_taxes, "CFDI40175"),
            ("withheld_taxes", c.withheld_taxes, "CFDI40182"),
        ):
            for j, t in enumerate(taxes):
                checks.append(("c_Impuesto", t.tax, f"concepts[{i}].{kind}[{j}].tax", code))
                checks.append(
                    (
                        "c_TipoFactor",
                        t.factor_type,
                        f"concepts[{i}].{kind}[{j}].factor_type",
                        "CFDI40176" if kind == "transferred_taxes" else "CFDI40183",
                    )
                )
    if inv.payments is not None:
        # Pagos 2.0 has its own matrix (CRP2xxxx); we report these under the CFDI40 code of the
        # same catalog so the UI can map them to the same field kinds.
        for i, p in enumerate(inv.payments.payments):
            checks.append(("c_FormaPago", p.payment_form, f"payments.payments[{i}].payment_form", "CFDI40104"))
            checks.append(("c_Moneda", p.currency, f"payments.payments[{i}].currency", "CFDI40113"))
            for j, d in enumerate(p.related_documents):
                checks.append(
                    ("c_Moneda", d.currency, f"payments.payments[{i}].related_documents[{j}].currency", "CFDI40113")
                )
                checks.append(
                    (
                        "c_ObjetoImp",
                        d.tax_object,
                        f"payments.payments[{i}].related_documents[{j}].tax_object",
                        "CFDI40170",
                    )
                )
    return [
        RuleIssue(code, path, f"La clave '{value}' no existe en el catálogo {name} del SAT.")
        for name, value, path, code in checks
        if not catalogs.contains(name, value)
    ]


def positive_tax_bases(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """A tax Base must be > 0 (e.g. a concept fully discounted cannot carry taxes)."""
    issues = []
    for i, c in enumerate(inv.concepts):
        for kind, taxes, code in (
            ("transferred_taxes", c.transferred_taxes, "CFDI40174"),
            ("withheld_taxes", c.withheld_taxes, "CFDI40181"),
        ):
            for j, t in enumerate(taxes):
                if t.base is not None and t.base <= 0:
                    issues.append(
                        RuleIssue(
                            code, f"concepts[{i}].{kind}[{j}].base", "La base del impuesto debe ser mayor que cero."
                        )
                    )
    return issues


def tax_rates(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """(Impuesto, TipoFactor, TasaOCuota) must be an allowed c_TasaOCuota combination."""
    issues = []
    for i, c in enumerate(inv.concepts):
        for j, t in enumerate(c.transferred_taxes):
            path = f"concepts[{i}].transferred_taxes[{j}]"
            if t.factor_type == "Exento":
                if t.rate is not None or t.amount is not None:
                    issues.append(RuleIssue("CFDI40177", path, "Un traslado exento no lleva TasaOCuota ni Importe."))
            elif t.rate is None or not catalogs.tasa_o_cuota_allowed(t.tax, t.factor_type, t.rate, transfer=True):
                issues.append(
                    RuleIssue(
                        "CFDI40179",
                        f"{path}.rate",
                        f"La tasa o cuota {t.rate} no es válida para el impuesto {t.tax} trasladado.",
                    )
                )
        for j, t in enumerate(c.withheld_taxes):
            path = f"concepts[{i}].withheld_taxes[{j}]"
            if t.factor_type == "Exento":
                issues.append(RuleIssue("CFDI40184", f"{path}.factor_type", "Una retención no puede ser exenta."))
            elif t.rate is None or not catalogs.tasa_o_cuota_allowed(t.tax, t.factor_type, t.rate, transfer=False):
                issues.append(
                    RuleIssue(
                        "CFDI40185",
                        f"{path}.rate",
                        f"La tasa o cuota {t.rate} no es válida para el impuesto {t.tax} retenido.",
                    )
                )
    return issues


# --- receiver ---------------------------------------------------------------------------------


def receiver_regime_matches_rfc_type(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """A persona física (13-char RFC) needs a física regime; a moral (12) a moral regime."""
    kind = person_type(inv.receiver.rfc)
    row = catalogs.get("c_RegimenFiscal", inv.receiver.tax_regime)
    if kind is None:
        return [
            RuleIssue(
                "CFDI40143",
                "receiver.rfc",
                "El RFC del receptor debe tener 12 (persona moral) o 13 (persona física) caracteres.",
            )
        ]
    if row is None or kind not in ("fisica", "moral"):
        return []
    if not row[kind]:
        tipo = "física" if kind == "fisica" else "moral"
        return [
            RuleIssue(
                "CFDI40158",
                "receiver.tax_regime",
                f"El régimen fiscal {inv.receiver.tax_regime} no aplica a una persona {tipo}.",
            )
        ]
    return []


def issuer_regime_matches_rfc_type(inv: Invoice, now: datetime) -> list[RuleIssue]:
    kind = person_type(inv.issuer.rfc)
    row = catalogs.get("c_RegimenFiscal", inv.issuer.tax_regime)
    if row is None or kind not in ("fisica", "moral") or row[kind]:
        return []
    tipo = "física" if kind == "fisica" else "moral"
    return [
        RuleIssue(
            "CFDI40141",
            "issuer.tax_regime",
            f"El régimen fiscal {inv.issuer.tax_regime} del emisor no aplica a una persona {tipo}.",
        )
    ]


def cfdi_use_allowed_for_receiver(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """UsoCFDI must apply to the receiver's person type and to its RegimenFiscalReceptor."""
    use = catalogs.get("c_UsoCFDI", inv.receiver.cfdi_use)
    if use is None:
        return []
    kind = person_type(inv.receiver.rfc)
    if kind in ("fisica", "moral") and not use[kind]:
        tipo = "física" if kind == "fisica" else "moral"
        return [
            RuleIssue(
                "CFDI40161",
                "receiver.cfdi_use",
                f"El uso de CFDI {inv.receiver.cfdi_use} no aplica a una persona {tipo}.",
            )
        ]
    if inv.receiver.tax_regime not in use["regimes"]:
        return [
            RuleIssue(
                "CFDI40161",
                "receiver.cfdi_use",
                f"El uso de CFDI {inv.receiver.cfdi_use} no corresponde al régimen fiscal "
                f"{inv.receiver.tax_regime} del receptor.",
            )
        ]
    return []


def generic_rfc_receiver(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Generic RFCs (XAXX010101000 público en general, XEXX010101000 extranjero): régimen 616,
    UsoCFDI S01 (CP01 in payment CFDIs), DomicilioFiscalReceptor = LugarExpedicion."""
    rec = inv.receiver
    if not _is_generic(rec.rfc):
        return []
    issues = []
    if rec.tax_regime != "616":
        issues.append(
            RuleIssue(
                "CFDI40158",
                "receiver.tax_regime",
                "Con RFC genérico el régimen fiscal del receptor debe ser 616 (Sin obligaciones fiscales).",
            )
        )
    expected_use = "CP01" if inv.voucher_type == "P" else "S01"
    if rec.cfdi_use != expected_use:
        issues.append(
            RuleIssue("CFDI40161", "receiver.cfdi_use", f"Con RFC genérico el uso de CFDI debe ser {expected_use}.")
        )
    if rec.tax_zip_code != inv.place_of_issue:
        issues.append(
            RuleIssue(
                "CFDI40149",
                "receiver.tax_zip_code",
                "Con RFC genérico el domicilio fiscal del receptor debe ser igual al lugar de expedición.",
            )
        )
    return issues


def foreign_residence(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """ResidenciaFiscal/NumRegIdTrib only for foreign receivers, never MEX."""
    rec = inv.receiver
    issues = []
    foreign = rec.rfc.strip().upper() == GENERIC_RFC_FOREIGN
    if rec.tax_residence is not None and not foreign:
        issues.append(
            RuleIssue(
                "CFDI40151",
                "receiver.tax_residence",
                "La residencia fiscal solo se registra para receptores extranjeros (XEXX010101000).",
            )
        )
    if rec.tax_residence == "MEX":
        issues.append(RuleIssue("CFDI40152", "receiver.tax_residence", "La residencia fiscal no puede ser MEX."))
    if rec.foreign_tax_id is not None and not foreign:
        issues.append(
            RuleIssue(
                "CFDI40154", "receiver.foreign_tax_id", "El NumRegIdTrib solo se registra para receptores extranjeros."
            )
        )
    if rec.foreign_tax_id is not None and rec.tax_residence is None:
        issues.append(
            RuleIssue(
                "CFDI40153",
                "receiver.tax_residence",
                "Si se registra NumRegIdTrib también debe registrarse la residencia fiscal.",
            )
        )
    return issues


def global_information_required(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """XAXX010101000 + 'PUBLICO EN GENERAL' is a global invoice: InformacionGlobal required; and
    InformacionGlobal only makes sense with that receiver."""
    rec = inv.receiver
    is_public = rec.rfc.strip().upper() == GENERIC_RFC_NATIONAL and rec.name.strip().upper() == PUBLICO_EN_GENERAL
    if is_public and inv.global_information is None and inv.voucher_type == "I":
        return [
            RuleIssue(
                "CFDI40130",
                "global_information",
                "Una factura a PUBLICO EN GENERAL requiere la Información Global (periodicidad, meses, año).",
            )
        ]
    if inv.global_information is not None and not is_public:
        return [
            RuleIssue(
                "CFDI40146",
                "receiver",
                "La Información Global solo aplica con RFC XAXX010101000 y nombre PUBLICO EN GENERAL.",
            )
        ]
    if inv.global_information is not None:
        g = inv.global_information
        issues = []
        if g.periodicity == "05" and g.months not in {f"{m}" for m in range(13, 19)}:
            issues.append(
                RuleIssue(
                    "CFDI40135", "global_information.months", "Con periodicidad bimestral los meses deben ser 13 a 18."
                )
            )
        if g.periodicity != "05" and g.months not in {f"{m:02d}" for m in range(1, 13)}:
            issues.append(
                RuleIssue(
                    "CFDI40134",
                    "global_information.months",
                    "Con periodicidad distinta de bimestral el mes debe ser 01 a 12.",
                )
            )
        local_year = now.astimezone(place_timezone(inv.place_of_issue)).year if now.tzinfo else now.year
        if g.year not in (local_year, local_year - 1):
            issues.append(
                RuleIssue(
                    "CFDI40136",
                    "global_information.year",
                    "El año de la factura global debe ser el actual o el anterior.",
                )
            )
        return issues
    return []


# --- comprobante ------------------------------------------------------------------------------


def exchange_rate(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """TipoCambio: required unless MXN/XXX; MXN only "1"; XXX never."""
    rate = inv.exchange_rate
    if inv.currency == "MXN":
        if rate is not None and rate != Decimal(1):
            return [RuleIssue("CFDI40114", "exchange_rate", "Con moneda MXN el tipo de cambio debe ser 1 u omitirse.")]
    elif inv.currency == "XXX":
        if rate is not None:
            return [RuleIssue("CFDI40116", "exchange_rate", "Con moneda XXX no se registra tipo de cambio.")]
    elif rate is None or rate <= 0:
        return [
            RuleIssue(
                "CFDI40115",
                "exchange_rate",
                f"Con moneda {inv.currency} se requiere el tipo de cambio a pesos mexicanos.",
            )
        ]
    return []


def payment_method_and_form(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """PPD must use FormaPago 99 (por definir); PUE must state the real form (never 99);
    T and P carry neither."""
    if inv.voucher_type in ("T", "P"):
        issues = []
        if inv.payment_form is not None:
            issues.append(
                RuleIssue(
                    "CFDI40103", "payment_form", "Los comprobantes de traslado y de pago no llevan forma de pago."
                )
            )
        if inv.payment_method is not None:
            issues.append(
                RuleIssue(
                    "CFDI40125", "payment_method", "Los comprobantes de traslado y de pago no llevan método de pago."
                )
            )
        return issues
    if inv.payment_method == "PPD" and inv.payment_form != "99":
        return [
            RuleIssue("CFDI40105", "payment_form", "Con método de pago PPD la forma de pago debe ser 99 (Por definir).")
        ]
    if inv.payment_method == "PUE" and inv.payment_form == "99":
        return [
            RuleIssue(
                "APP_PUE_FORMA_PAGO_99",
                "payment_form",
                "Con método de pago PUE indica la forma de pago real; 99 (Por definir) solo aplica a PPD.",
            )
        ]
    if inv.voucher_type in ("I", "E") and (inv.payment_method is None or inv.payment_form is None):
        return [
            RuleIssue("APP_PAGO_REQUERIDO", "payment_method", "Indica el método y la forma de pago del comprobante.")
        ]
    return []


def tax_object_matches_taxes(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """ObjetoImp 02 requires the taxes broken down; 01 and 03 forbid them."""
    issues = []
    for i, c in enumerate(inv.concepts):
        has_taxes = bool(c.transferred_taxes or c.withheld_taxes)
        if c.tax_object == "02" and not has_taxes:
            issues.append(
                RuleIssue(
                    "CFDI40171",
                    f"concepts[{i}].tax_object",
                    "Con ObjetoImp 02 (sí objeto de impuesto) el concepto debe desglosar sus impuestos.",
                )
            )
        if c.tax_object in ("01", "03") and has_taxes:
            issues.append(
                RuleIssue(
                    "CFDI40172",
                    f"concepts[{i}].tax_object",
                    f"Con ObjetoImp {c.tax_object} el concepto no debe llevar impuestos.",
                )
            )
    return issues


def discounts(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """A concept's discount cannot exceed its Importe, nor the invoice's its SubTotal."""
    issues = []
    for i, c in enumerate(inv.concepts):
        if c.discount is not None and c.amount is not None and c.discount > c.amount:
            issues.append(
                RuleIssue(
                    "CFDI40169",
                    f"concepts[{i}].discount",
                    "El descuento del concepto no puede ser mayor que su importe.",
                )
            )
        if c.discount is not None and c.discount < 0:
            issues.append(RuleIssue("CFDI40169", f"concepts[{i}].discount", "El descuento no puede ser negativo."))
    if inv.discount is not None and inv.subtotal is not None and inv.discount > inv.subtotal:
        issues.append(RuleIssue("CFDI40110", "discount", "El descuento no puede ser mayor que el subtotal."))
    if inv.voucher_type in ("T", "P") and any(c.discount for c in inv.concepts):
        issues.append(RuleIssue("CFDI40111", "discount", "Los comprobantes de traslado y de pago no llevan descuento."))
    return issues


def positive_unit_price(inv: Invoice, now: datetime) -> list[RuleIssue]:
    if inv.voucher_type not in ("I", "E", "N"):
        return []
    return [
        RuleIssue("CFDI40166", f"concepts[{i}].unit_price", "El valor unitario debe ser mayor que cero.")
        for i, c in enumerate(inv.concepts)
        if c.unit_price <= 0
    ]


def issue_date_window(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """The PAC stamps only CFDIs whose Fecha is within the last 72 hours (and not in the future).

    Fecha is local time at LugarExpedicion; `now` may be aware (converted to that zip code's time
    zone) or naive (taken as already local).
    """
    local_now = now.astimezone(place_timezone(inv.place_of_issue)).replace(tzinfo=None) if now.tzinfo else now
    issued = inv.issued_at.replace(tzinfo=None)
    if issued < local_now - STAMP_WINDOW:
        return [RuleIssue("401", "issued_at", "La fecha de emisión tiene más de 72 horas; el PAC no la timbrará.")]
    if issued > local_now + CLOCK_SKEW:
        return [RuleIssue("CFDI40101", "issued_at", "La fecha de emisión no puede estar en el futuro.")]
    return []


def voucher_type_constraints(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """T and P carry zero amounts and no invoice-level taxes; payment CFDIs (P) are in XXX with
    UsoCFDI CP01 and the Pagos 2.0 complement."""
    if inv.voucher_type not in ("T", "P"):
        return []
    issues = []
    if inv.subtotal not in (None, ZERO) or inv.total not in (None, ZERO):
        issues.append(
            RuleIssue("CFDI40109", "subtotal", "Los comprobantes de traslado y de pago llevan subtotal y total en 0.")
        )
    if inv.transferred_totals or inv.withheld_totals:
        issues.append(
            RuleIssue(
                "CFDI40201", "transferred_totals", "Los comprobantes de traslado y de pago no llevan el nodo Impuestos."
            )
        )
    if inv.voucher_type == "T":
        return issues
    if inv.currency != "XXX":
        issues.append(RuleIssue("CFDI40113", "currency", "El comprobante de pago debe usar la moneda XXX."))
    if inv.receiver.cfdi_use != "CP01":
        issues.append(RuleIssue("CFDI40161", "receiver.cfdi_use", "El comprobante de pago debe usar el uso CP01."))
    if inv.payments is None:
        issues.append(
            RuleIssue("APP_PAGOS_REQUERIDO", "payments", "El comprobante de pago requiere el complemento de pagos 2.0.")
        )
    return issues


def totals_consistent(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Stored amounts must be what SAT recomputes, within its tolerances (Anexo 20)."""
    decimals = catalogs.currency_decimals(inv.currency)
    issues: list[RuleIssue] = []
    for i, c in enumerate(inv.concepts):
        if c.amount is None:
            continue
        low, high = concept_amount_bounds(c.quantity, c.unit_price, decimals)
        if not low <= c.amount <= high:
            issues.append(
                RuleIssue(
                    "CFDI40167",
                    f"concepts[{i}].amount",
                    f"El importe {c.amount} no corresponde a cantidad × valor unitario.",
                )
            )
        for kind, taxes, code in (
            ("transferred_taxes", c.transferred_taxes, "CFDI40180"),
            ("withheld_taxes", c.withheld_taxes, "CFDI40186"),
        ):
            for j, t in enumerate(taxes):
                if t.amount is None or t.rate is None or t.base is None:
                    continue
                low, high = tax_amount_bounds(t.base, t.rate, decimals)
                if not low <= t.amount <= high:
                    issues.append(
                        RuleIssue(
                            code,
                            f"concepts[{i}].{kind}[{j}].amount",
                            f"El importe del impuesto {t.amount} no corresponde a base × tasa.",
                        )
                    )
    if any(c.amount is None for c in inv.concepts) or inv.subtotal is None or inv.voucher_type in ("T", "P"):
        return issues  # T/P: zero amounts are checked by voucher_type_constraints
    # SAT compares summaries with the *rounded* sum: concept amounts may carry up to 6 decimals.
    rnd = lambda v: None if v is None else round_money(v, decimals)  # noqa: E731
    if inv.subtotal != rnd(sum((c.amount for c in inv.concepts), ZERO)):
        issues.append(RuleIssue("CFDI40108", "subtotal", "El subtotal no es la suma de los importes de los conceptos."))
    expected_transferred = {(t.tax, t.factor_type, t.rate): t for t in group_transferred(inv.concepts)}
    for k, line in enumerate(inv.transferred_totals):
        exp = expected_transferred.get((line.tax, line.factor_type, line.rate))
        if exp is None or rnd(exp.amount) != line.amount or rnd(exp.base) != line.base:
            issues.append(
                RuleIssue(
                    "CFDI40221",
                    f"transferred_totals[{k}]",
                    "El resumen de impuestos trasladados no cuadra con los conceptos.",
                )
            )
    expected_withheld = {t.tax: t for t in group_withheld(inv.concepts)}
    for k, line in enumerate(inv.withheld_totals):
        exp = expected_withheld.get(line.tax)
        if exp is None or rnd(exp.amount) != line.amount:
            issues.append(
                RuleIssue(
                    "CFDI40211",
                    f"withheld_totals[{k}]",
                    "El resumen de impuestos retenidos no cuadra con los conceptos.",
                )
            )
    transferred_sum = sum((t.amount for t in inv.transferred_totals if t.amount is not None), ZERO)
    withheld_sum = sum((t.amount or ZERO for t in inv.withheld_totals), ZERO)
    if (inv.total_transferred or ZERO) != transferred_sum:
        issues.append(
            RuleIssue(
                "CFDI40205", "total_transferred", "El total de impuestos trasladados no es la suma de los traslados."
            )
        )
    if (inv.total_withheld or ZERO) != withheld_sum:
        issues.append(
            RuleIssue(
                "CFDI40203", "total_withheld", "El total de impuestos retenidos no es la suma de las retenciones."
            )
        )
    if inv.total is not None:
        expected_total = (
            inv.subtotal - (inv.discount or ZERO) + (inv.total_transferred or ZERO) - (inv.total_withheld or ZERO)
        )
        if inv.total != expected_total:
            issues.append(
                RuleIssue(
                    "CFDI40119", "total", "El total no es subtotal - descuento + impuestos trasladados - retenidos."
                )
            )
    return issues


RULES: tuple[Rule, ...] = (
    catalog_codes,
    tax_rates,
    positive_tax_bases,
    issuer_regime_matches_rfc_type,
    receiver_regime_matches_rfc_type,
    cfdi_use_allowed_for_receiver,
    generic_rfc_receiver,
    foreign_residence,
    global_information_required,
    exchange_rate,
    payment_method_and_form,
    tax_object_matches_taxes,
    discounts,
    positive_unit_price,
    issue_date_window,
    voucher_type_constraints,
    totals_consistent,
)


def check_invoice(invoice: Invoice, now: datetime) -> list[RuleIssue]:
    """All rule issues of `invoice` at time `now` (empty list: nothing a PAC should reject).

    Amounts not yet computed are computed first (our rounding policy), so the totals rule checks
    stored CFDIs as written and drafts as we would emit them.
    """
    if invoice.subtotal is None or any(c.amount is None for c in invoice.concepts):
        try:
            invoice = compute_totals(invoice)
        except ValueError as exc:
            return [RuleIssue("APP_TOTALES", "concepts", f"No se pudieron calcular los importes: {exc}")]
    issues: list[RuleIssue] = []
    for rule in RULES:
        issues.extend(rule(invoice, now))
    return issues
