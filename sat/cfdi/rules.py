"""Business rules beyond the XSD: what a PAC would reject, checked before we ever send it.

Each rule is a small function `(invoice, now) -> list[RuleIssue]` named after what it checks,
tagged with the SAT error code of the Matriz de errores CFDI 4.0 (CFDI40xxx, CFDI1402xx) or of the
Pagos 2.0 matrix (CRP20xxx, in payment_rules.py) — SAT's files in shared/data/sat-docs/ are the
authority, and each rule's docstring quotes the matrix rows it enforces. The few checks with no SAT
code (guía de llenado rules PACs enforce differently) use "APP_*" codes. `matrix.STATUS` lists
every matrix code with its status. Messages are for the user, in es-MX. `check_invoice` runs them
all; catalog rows are those in force on the invoice's date (Fecha).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

from . import catalogs
import re

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
    """Every coded field must be in its SAT catalog, in the row in force on the invoice date.

    Matrix rows (one per field), e.g. CFDI40104 "El campo FormaPago no contiene un valor del
    catálogo c_FormaPago."; CFDI40113 "El campo Moneda no contiene un valor del catálogo c_Moneda.";
    CFDI40121, 40123, 40124, 40126, 40131, 40133, 40137, 40140, 40150, 40157, 40160, 40162, 40165,
    40170, 40175, 40176, 40182, 40183, 40191 likewise for their catalogs.
    """
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
    on = inv.issued_at.date().isoformat()
    return [
        RuleIssue(code, path, f"La clave '{value}' no existe en el catálogo {name} del SAT.")
        for name, value, path, code in checks
        if not catalogs.contains(name, value, on)
    ]


def positive_tax_bases(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """A tax Base must be > 0 (e.g. a concept fully discounted cannot carry taxes).

    CFDI40174 "El valor del campo Base que corresponde a Traslado debe ser mayor que cero.";
    CFDI40181 "El valor del campo Base que corresponde a Retención debe ser mayor que cero."
    """
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
    """(Impuesto, TipoFactor, TasaOCuota) must be an allowed c_TasaOCuota combination, in the row
    in force on the invoice date.

    CFDI40177 "Si el valor registrado en el campo TipoFactor que corresponde a Traslado es Exento no
    se deben registrar los campos TasaOCuota ni Importe."; CFDI40178 "Si el valor registrado en el
    campo TipoFactor que corresponde a Traslado es Tasa o Cuota, se deben registrar los campos
    TasaOCuota e Importe."; CFDI40179 "El valor del campo TasaOCuota que corresponde a Traslado no
    contiene un valor del catálogo c_TasaOcuota o se encuentra fuera de rango."; CFDI40184 "...
    TipoFactor que corresponde a Retención debe ser distinto de Exento."; CFDI40185 "El valor del
    campo TasaOCuota que corresponde a Retención, no contiene un valor del catálogo c_TasaOcuota o se
    encuentra fuera de rango."
    """
    on = inv.issued_at.date().isoformat()
    issues = []
    known = {"Tasa", "Cuota", "Exento"}
    for i, c in enumerate(inv.concepts):
        for j, t in enumerate(c.transferred_taxes):
            if t.factor_type not in known or not catalogs.contains("c_Impuesto", t.tax, on):
                continue  # reported by catalog_codes (CFDI40175/40176)
            path = f"concepts[{i}].transferred_taxes[{j}]"
            if t.factor_type == "Exento":
                if t.rate is not None or t.amount is not None:
                    issues.append(RuleIssue("CFDI40177", path, "Un traslado exento no lleva TasaOCuota ni Importe."))
            elif t.rate is None:
                issues.append(RuleIssue("CFDI40178", f"{path}.rate", "Un traslado con Tasa o Cuota requiere TasaOCuota."))
            elif not catalogs.tasa_o_cuota_allowed(t.tax, t.factor_type, t.rate, transfer=True, on=on):
                issues.append(
                    RuleIssue(
                        "CFDI40179",
                        f"{path}.rate",
                        f"La tasa o cuota {t.rate} no es válida para el impuesto {t.tax} trasladado.",
                    )
                )
        for j, t in enumerate(c.withheld_taxes):
            if t.factor_type not in known or not catalogs.contains("c_Impuesto", t.tax, on):
                continue  # reported by catalog_codes (CFDI40182/40183)
            path = f"concepts[{i}].withheld_taxes[{j}]"
            if t.factor_type == "Exento":
                issues.append(RuleIssue("CFDI40184", f"{path}.factor_type", "Una retención no puede ser exenta."))
            elif t.rate is None or not catalogs.tasa_o_cuota_allowed(t.tax, t.factor_type, t.rate, transfer=False, on=on):
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
    """CFDI40158 "La clave del campo RegimenFiscalR debe corresponder con el tipo de persona (física
    o moral)." A malformed RFC has no matrix code of its own (CFDI40143 is "no existe en la lista de
    RFC inscritos", which only SAT's list can tell; the XSD's t_RFC pattern refuses it): APP code."""
    kind = person_type(inv.receiver.rfc)
    row = catalogs.get("c_RegimenFiscal", inv.receiver.tax_regime, inv.issued_at.date())
    if kind is None:
        return [
            RuleIssue(
                "APP_RFC_FORMATO",
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
    """CFDI40141 "La clave del campo RegimenFiscal debe corresponder con el tipo de persona (fisica
    o moral)." """
    kind = person_type(inv.issuer.rfc)
    row = catalogs.get("c_RegimenFiscal", inv.issuer.tax_regime, inv.issued_at.date())
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
    """CFDI40161 "La clave del campo UsoCFDI debe corresponder con el tipo de persona (física o
    moral) y el régimen correspondiente conforme al catálogo c_UsoCFDI." """
    use = catalogs.get("c_UsoCFDI", inv.receiver.cfdi_use, inv.issued_at.date())
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
    """Generic RFCs (XAXX010101000 público en general, XEXX010101000 extranjero).

    CFDI40159 "Si el atributo Rfc del Receptor contiene el valor “XAXX010101000” o el valor
    “XEXX010101000” en este atributo se debe registrar la clave “616”"; CFDI40149 "Si el valor del
    atributo Rfc del receptor es "XAXX010101000" o "XEXX010101000", este atributo debe ser igual al
    valor del atributo LugarExpedicion."; UsoCFDI S01 (CP01 in payment CFDIs) per the Guía
    de llenado, reported under CFDI40161 (c_UsoCFDI: the use must fit the receiver's regime 616).
    """
    rec = inv.receiver
    if not _is_generic(rec.rfc):
        return []
    issues = []
    if rec.tax_regime != "616":
        issues.append(
            RuleIssue(
                "CFDI40159",
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
    """ResidenciaFiscal/NumRegIdTrib only for foreign receivers, never MEX.

    CFDI40151 "Si el RFC del receptor es de un RFC registrado en el SAT o un RFC genérico nacional,
    este atributo NO debe existir."; CFDI40152 "El valor del campo ResidenciaFiscal no puede ser
    MEX."; CFDI40153 "Se debe registrar un valor de acuerdo al catálogo c_Pais en en el campo
    ResidenciaFiscal, cuando en el en el campo NumRegIdTrib se registre información."; CFDI40154
    "...un RFC inscrito no cancelado en el SAT o un RFC genérico nacional, y se registró el campo
    NumRegIdTrib."; CFDI40156 "Este atributo debe cumplir con el patrón correspondiente incluido en
    la columna “Formato de Registro de Identidad Tributaria” que publique en el catalogo de C_Pais."
    """
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
    country = catalogs.get("c_Pais", rec.tax_residence or "", inv.issued_at.date())
    pattern = country.get("tax_id_pattern") if country else None
    if rec.foreign_tax_id is not None and pattern and not re.fullmatch(pattern, rec.foreign_tax_id):
        issues.append(
            RuleIssue(
                "CFDI40156",
                "receiver.foreign_tax_id",
                f"El NumRegIdTrib no tiene el formato de {rec.tax_residence} ({pattern}).",
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
    """A global invoice (XAXX010101000 + 'PUBLICO EN GENERAL').

    CFDI40130 "Este Nodo debe existir siempre que el atributo TipoDeComprobante sea “I”, y el
    atributo Rfc del nodo receptor contiene el valor "XAXX010101000" y el valor del atributo Nombre
    del nodo Receptor contiene el valor “PUBLICO EN GENERAL”."; CFDI40146 "Si el valor registrado en
    este atributo es “PUBLICO EN GENERAL”, el valor del atributo RFC del receptor debe ser
    “XAXX010101000”."; CFDI40132 "Cuando el valor de este atributo contenga la clave “05” el
    atributo RegimenFiscal debe contener el valor “621”."; CFDI40134/40135 months per
    periodicity; CFDI40136 "El valor registrado en el campo Año, no es igual al año en curso o no
    contiene un valor de hasta 5 ejercicios anteriores." (The Guía de llenado del CFDI global still
    says "igual al año en curso o al año inmediato anterior"; the matrix of 2024-12-13 is what PACs
    validate, so we follow it.) InformacionGlobal with any other receiver
    has no matrix code (APP_INFORMACION_GLOBAL).
    """
    rec = inv.receiver
    named_public = rec.name.strip().upper() == PUBLICO_EN_GENERAL
    if named_public and rec.rfc.strip().upper() != GENERIC_RFC_NATIONAL:
        return [
            RuleIssue(
                "CFDI40146",
                "receiver.rfc",
                "Con nombre PUBLICO EN GENERAL el RFC del receptor debe ser XAXX010101000.",
            )
        ]
    is_public = rec.rfc.strip().upper() == GENERIC_RFC_NATIONAL and named_public
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
                "APP_INFORMACION_GLOBAL",
                "receiver",
                "La Información Global solo aplica con RFC XAXX010101000 y nombre PUBLICO EN GENERAL.",
            )
        ]
    if inv.global_information is not None:
        g = inv.global_information
        issues = []
        if g.periodicity == "05" and inv.issuer.tax_regime != "621":
            issues.append(
                RuleIssue(
                    "CFDI40132",
                    "global_information.periodicity",
                    "La periodicidad bimestral solo aplica al régimen 621 (Incorporación Fiscal).",
                )
            )
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
        if not local_year - 5 <= g.year <= local_year:
            issues.append(
                RuleIssue(
                    "CFDI40136",
                    "global_information.year",
                    "El año de la factura global debe ser el actual o uno de los cinco anteriores.",
                )
            )
        return issues
    return []


# --- comprobante ------------------------------------------------------------------------------


def exchange_rate(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """TipoCambio: required unless MXN/XXX; MXN only "1"; XXX never.

    CFDI40114 "El campo TipoCambio no tiene el valor "1" y la moneda indicada es MXN."; CFDI40115
    "El campo TipoCambio se debe registrar cuando el campo Moneda tiene un valor distinto de MXN y
    XXX."; CFDI40116 "El campo TipoCambio no se debe registrar cuando el campo Moneda tiene el valor
    XXX."; CFDI40117 "El campo TipoCambio no cumple con el patrón requerido." (cfdv40.xsd: decimal,
    at most 6 fraction digits, at least 0.000001).
    """
    rate = inv.exchange_rate
    if rate is not None and (rate < Decimal("0.000001") or _decimals(rate) > 6):
        return [RuleIssue("CFDI40117", "exchange_rate", "El tipo de cambio debe ser positivo y tener hasta 6 decimales.")]
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
    """PPD must use FormaPago 99 (por definir); PUE must state the real form (never 99).

    CFDI40103 "Si existe el tipo de comprobante T, N o P el campo FormaPago no debe existir.";
    CFDI40125 "Se debe omitir el campo MetodoPago cuando el TipoDeComprobante es T o P.";
    CFDI40105 "El campo FormaPago no contiene el valor "99"." (with MetodoPago PPD).
    """
    if inv.voucher_type == "N" and inv.payment_form is not None:
        return [RuleIssue("CFDI40103", "payment_form", "Los comprobantes de nómina no llevan forma de pago.")]
    if inv.voucher_type in ("T", "P"):
        issues = []
        if inv.payment_form is not None:
            issues.append(
                RuleIssue(
                    "CFDI40103", "payment_form", "Los comprobantes de traslado, nómina y pago no llevan forma de pago."
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
    """ObjetoImp and the concept's taxes.

    CFDI40171 "El nodo concepto, no contiene el nodo hijo Impuestos." (ObjetoImp 02);
    CFDI40172 "Si este atributo contiene el valor "01", "03", "04" o "05", el nodo hijo Impuestos del
    nodo Concepto no debe existir."; CFDI140226 "Si este atributo contiene el valor “06" o “08", en el
    nodo hijo Impuestos del nodo Concepto no deben existir los nodos hijo “Retencion” y “Traslado”
    con el atributo “Impuesto” con el valor "002" y/o "003""; CFDI140227 "Si este atributo contiene
    el valor “07", ... no deben existir los nodos hijo “Retencion” y “Traslado” con el atributo
    “Impuesto” con el valor "002"; ... debe existir el nodo hijo “Traslado” con el valor "003"".
    """
    issues = []
    for i, c in enumerate(inv.concepts):
        taxes = c.transferred_taxes + c.withheld_taxes
        kinds = {t.tax for t in taxes}
        path = f"concepts[{i}].tax_object"
        if c.tax_object == "02" and not taxes:
            issues.append(
                RuleIssue("CFDI40171", path, "Con ObjetoImp 02 (sí objeto de impuesto) el concepto debe desglosar sus impuestos.")
            )
        if c.tax_object in ("01", "03", "04", "05") and taxes:
            issues.append(RuleIssue("CFDI40172", path, f"Con ObjetoImp {c.tax_object} el concepto no debe llevar impuestos."))
        if c.tax_object in ("06", "08") and kinds & {"002", "003"}:
            issues.append(
                RuleIssue("CFDI140226", path, f"Con ObjetoImp {c.tax_object} el concepto no lleva IVA ni IEPS.")
            )
        if c.tax_object == "07" and ("002" in kinds or not any(t.tax == "003" for t in c.transferred_taxes)):
            issues.append(
                RuleIssue("CFDI140227", path, "Con ObjetoImp 07 el concepto no lleva IVA y debe trasladar IEPS.")
            )
    return issues


def exportation_needs_foreign_trade(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """CFDI40122 "El campo Exportacion contiene el valor "02", el CFDI debe contener el complemento
    para Comercio Exterior." We issue no Comercio Exterior complement, so 02 is always refused."""
    if inv.exportation != "02":
        return []
    return [
        RuleIssue(
            "CFDI40122",
            "exportation",
            "La exportación definitiva (02) requiere el complemento de Comercio Exterior, que no emitimos.",
        )
    ]


_PEDIMENTO = re.compile(r"[0-9]{2}  [0-9]{2}  [0-9]{4}  [0-9]{7}")


def customs_numbers(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """CFDI40194 "El número de pedimento es inválido." — the Guía's layout (year, two spaces,
    customs office, two spaces, patent, two spaces, year digit + six-digit sequence), as
    cfdv40.xsd's pattern; whether the office and patent exist only SAT knows (PAC)."""
    return [
        RuleIssue(
            "CFDI40194",
            f"concepts[{i}].customs_numbers[{k}]",
            "El número de pedimento debe tener la forma '10  47  3807  8003832'.",
        )
        for i, c in enumerate(inv.concepts)
        for k, number in enumerate(c.customs_numbers)
        if not _PEDIMENTO.fullmatch(number)
    ]


THIRD_PARTY_FOREIGN_RFC = "EXT990101NI1"


def third_parties(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """ACuentaTerceros.

    CFDI40188 "El valor registrado en este atributo deber ser diferente al valor registrado en los
    atributos Rfc de los nodos Emisor y Receptor."; CFDI140223 "Si el atributo RfcACuentaTerceros
    contiene el valor “EXT990101NI1” en este atributo se debe registrar la clave “616”."
    """
    issues = []
    parties = {inv.issuer.rfc.strip().upper(), inv.receiver.rfc.strip().upper()}
    for i, c in enumerate(inv.concepts):
        tp = c.third_party
        if tp is None:
            continue
        rfc = tp.rfc.strip().upper()
        if rfc in parties:
            issues.append(
                RuleIssue(
                    "CFDI40188",
                    f"concepts[{i}].third_party.rfc",
                    "El RFC a cuenta de terceros debe ser distinto del RFC del emisor y del receptor.",
                )
            )
        if rfc == THIRD_PARTY_FOREIGN_RFC and tp.tax_regime != "616":
            issues.append(
                RuleIssue(
                    "CFDI140223",
                    f"concepts[{i}].third_party.tax_regime",
                    "Con RFC EXT990101NI1 el régimen fiscal del tercero debe ser 616.",
                )
            )
    return issues


def receiver_zip_code(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """CFDI40147 "El campo DomicilioFiscalReceptor del receptor, debe encontrarse en la lista de RFC
    inscritos no cancelados en el SAT." Whether it is *the* address SAT has for the RFC only SAT's
    list tells (PAC); a value outside c_CodigoPostal can be nobody's address, so we refuse it here.
    """
    if catalogs.contains("c_CodigoPostal", inv.receiver.tax_zip_code, inv.issued_at.date()):
        return []
    return [
        RuleIssue(
            "CFDI40147",
            "receiver.tax_zip_code",
            f"El domicilio fiscal del receptor '{inv.receiver.tax_zip_code}' no es un código postal del catálogo c_CodigoPostal.",
        )
    ]


def discounts(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """A concept's discount cannot exceed its Importe, nor the invoice's its SubTotal.

    CFDI40169 "El valor del campo Descuento es mayor que el campo Importe."; CFDI40110 "El valor
    registrado en el campo Descuento no es menor o igual que el campo Subtotal."; CFDI40111 "El
    TipoDeComprobante no es I,E o N, y un concepto incluye el campo descuento."
    """
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
    """CFDI40166 "El valor valor del campo ValorUnitario debe ser mayor que cero (0) cuando el tipo
    de comprobante es Ingreso, Egreso o Nomina." """
    if inv.voucher_type not in ("I", "E", "N"):
        return []
    return [
        RuleIssue("CFDI40166", f"concepts[{i}].unit_price", "El valor unitario debe ser mayor que cero.")
        for i, c in enumerate(inv.concepts)
        if c.unit_price <= 0
    ]


def issue_date_window(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """The PAC stamps only CFDIs whose Fecha is within the last 72 hours (and not in the future).

    CFDI40101 "...y debe corresponder con la hora local donde se expide el comprobante." (a Fecha
    ahead of local time); the 72-hour limit is the PAC's (code "401", not a matrix row).

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
    """T and P carry zero amounts and no invoice-level taxes.

    CFDI40109 "El TipoDeComprobante es T o P y el importe no es igual a 0, o cero con decimales.";
    CFDI40201 "Cuando el TipoDeComprobante sea T o P, el elemento Impuestos no debe existir."
    Payment CFDIs also need UsoCFDI CP01 and the Pagos 2.0 complement (Guía; APP codes).
    """
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
    # Moneda XXX is CRP20104 (payment_rules); UsoCFDI CP01 is the Guía's rule, no matrix code.
    if inv.receiver.cfdi_use != "CP01":
        issues.append(RuleIssue("APP_USO_CP01", "receiver.cfdi_use", "El comprobante de pago debe usar el uso CP01."))
    if inv.payments is None:
        issues.append(
            RuleIssue("APP_PAGOS_REQUERIDO", "payments", "El comprobante de pago requiere el complemento de pagos 2.0.")
        )
    return issues


def totals_consistent(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Stored amounts must be what SAT recomputes, within its tolerances (Anexo 20).

    CFDI40108 "...el importe registrado en el campo no es igual al redondeo de la suma de los
    importes de los conceptos registrados."; CFDI40119 "El campo Total no corresponde con la suma del
    subtotal, menos los descuentos aplicables, más las contribuciones recibidas..."; CFDI40167 "El
    valor del campo Importe no se encuentra entre el limite inferior y superior permitido.";
    CFDI40180/40186 the same for tax Importe; CFDI40203/40205 totals = Σ lines; CFDI40206/40209
    "Debe existir el campo TotalImpuestosRetenidos."; CFDI40208 "Debe haber sólo un registro por cada
    tipo de impuesto retenido."; CFDI40211 withheld Importe = Σ concepts; CFDI40212 "Debe existir el
    campo TotalImpuestosTrasladados."; CFDI40213 "Deben exitir los campos Base, Impuesto y
    TipoFactor"; CFDI40215 "Debe ser igual al redondeo de la suma de los importes de los atributos
    Base trasladados registrados en los conceptos donde el impuesto ... y la TasaOCuota ... sea
    igual"; CFDI40216 the same "En caso de que solo existan conceptos con TipoFactor Exento";
    CFDI40218 "Debe haber sólo un registro con la misma combinación de impuesto, factor y tasa por
    cada traslado."; CFDI40221 transferred Importe = Σ concepts.
    """
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
        if line.base is None:
            issues.append(
                RuleIssue("CFDI40213", f"transferred_totals[{k}].base", "El traslado del resumen requiere Base.")
            )
        elif exp is None or rnd(exp.base) != line.base:
            only_exempt = all(t.factor_type == "Exento" for t in inv.transferred_totals)
            issues.append(
                RuleIssue(
                    "CFDI40216" if only_exempt else "CFDI40215",
                    f"transferred_totals[{k}].base",
                    "La base del resumen de impuestos trasladados no es la suma de las bases de los conceptos.",
                )
            )
        if exp is not None and rnd(exp.amount) != line.amount:
            issues.append(
                RuleIssue(
                    "CFDI40221",
                    f"transferred_totals[{k}].amount",
                    "El importe del resumen de impuestos trasladados no es la suma de los conceptos.",
                )
            )
    keys = [(t.tax, t.factor_type, t.rate) for t in inv.transferred_totals]
    if len(set(keys)) != len(keys):
        issues.append(
            RuleIssue("CFDI40218", "transferred_totals", "Hay más de un traslado con el mismo impuesto, factor y tasa.")
        )
    withheld_keys = [t.tax for t in inv.withheld_totals]
    if len(set(withheld_keys)) != len(withheld_keys):
        issues.append(RuleIssue("CFDI40208", "withheld_totals", "Hay más de una retención del mismo impuesto."))
    if inv.withheld_totals and inv.total_withheld is None:
        # The matrix states it twice, on Retenciones (40206) and on Retencion/@Importe (40209).
        for code in ("CFDI40206", "CFDI40209"):
            issues.append(RuleIssue(code, "total_withheld", "Con retenciones debe registrarse TotalImpuestosRetenidos."))
    if any(t.amount is not None for t in inv.transferred_totals) and inv.total_transferred is None:
        issues.append(
            RuleIssue("CFDI40212", "total_transferred", "Con traslados debe registrarse TotalImpuestosTrasladados.")
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


def _decimals(value: Decimal | None) -> int:
    if value is None:
        return 0
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def amount_decimals(inv: Invoice, now: datetime) -> list[RuleIssue]:
    """Summary amounts carry at most the currency's decimals (c_Moneda).

    CFDI40107 "El valor de este atributo debe tener hasta la cantidad de decimales que soporte la
    moneda." (SubTotal); CFDI40112 (Descuento); CFDI40202 (TotalImpuestosRetenidos); CFDI40204
    (TotalImpuestosTrasladados); CFDI40210 (Retencion/Importe); CFDI40214 (Traslado/Base);
    CFDI40220 (Traslado/Importe); CFDI40168 "El valor de este atributo debe tener hasta la cantidad
    de decimales que se tengan registrados en el atributo Importe del concepto." (Descuento).
    """
    places = catalogs.currency_decimals(inv.currency)
    checks: list[tuple[str, str, Decimal | None]] = [
        ("CFDI40107", "subtotal", inv.subtotal),
        ("CFDI40112", "discount", inv.discount),
        ("CFDI40202", "total_withheld", inv.total_withheld),
        ("CFDI40204", "total_transferred", inv.total_transferred),
    ]
    checks += [("CFDI40210", f"withheld_totals[{k}].amount", t.amount) for k, t in enumerate(inv.withheld_totals)]
    checks += [("CFDI40214", f"transferred_totals[{k}].base", t.base) for k, t in enumerate(inv.transferred_totals)]
    checks += [("CFDI40220", f"transferred_totals[{k}].amount", t.amount) for k, t in enumerate(inv.transferred_totals)]
    issues = [
        RuleIssue(code, path, f"El importe {value} tiene más decimales de los que admite la moneda {inv.currency}.")
        for code, path, value in checks
        if _decimals(value) > places
    ]
    for i, c in enumerate(inv.concepts):
        if c.discount is not None and c.amount is not None and _decimals(c.discount) > _decimals(c.amount):
            issues.append(
                RuleIssue(
                    "CFDI40168",
                    f"concepts[{i}].discount",
                    "El descuento no puede tener más decimales que el importe del concepto.",
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
    exportation_needs_foreign_trade,
    third_parties,
    customs_numbers,
    receiver_zip_code,
    amount_decimals,
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
    from .payment_rules import check_payments

    issues: list[RuleIssue] = []
    for rule in RULES:
        issues.extend(rule(invoice, now))
    issues.extend(check_payments(invoice, now))
    return issues
