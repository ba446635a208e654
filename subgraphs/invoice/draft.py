"""The invoice draft: one typed shape from the GraphQL input to the database row (JSONB) and to
the engine (`cfdi.Invoice`). Validated once, where it comes in (`parse`); a stored row is read
back with `Draft.model_validate` and never re-interpreted by hand.

Amounts stay `Decimal` as the client wrote them (the JSON form is their exact string), so what was
entered is what is stamped. Error paths name the client's fields (`input.concepts.0.unitPrice`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from shared.errors import UserError
from sat import cfdi

_MAX = Decimal(10) ** 18  # SAT's numeric types: at most 18 integer digits ...
_PLACES = 6  # ... and 6 decimals (t_Importe, Cantidad, TasaOCuota)


def _number(d: Decimal) -> Decimal:
    if abs(d) >= _MAX:
        raise PydanticCustomError("OUT_OF_RANGE", "El número es demasiado grande.")
    if d.as_tuple().exponent < -_PLACES:
        raise PydanticCustomError("TOO_MANY_DECIMALS", "Se admiten como máximo 6 decimales.")
    return d


def _positive(d: Decimal) -> Decimal:
    if _number(d) <= 0:
        raise PydanticCustomError("MUST_BE_POSITIVE", "Debe ser mayor que cero.")
    return d


def _non_negative(d: Decimal) -> Decimal:
    if _number(d) < 0:
        raise PydanticCustomError("MUST_NOT_BE_NEGATIVE", "No puede ser negativo.")
    return d


def _not_blank(v: str) -> str:
    if not v.strip():
        raise PydanticCustomError("REQUIRED", "La descripción es obligatoria.")
    return v


NotBlank = Annotated[str, AfterValidator(_not_blank)]
Positive = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_positive)]
NonNegative = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_non_negative)]


class _Part(BaseModel):
    # Rows written before a field existed still load; unknown keys are dropped.
    model_config = ConfigDict(extra="ignore")


class TaxDraft(_Part):
    """One tax of a concept line, as SAT lets the issuer state it (Traslado or Retencion)."""

    tax: str  # Impuesto: c_Impuesto
    factor_type: Literal["Tasa", "Cuota", "Exento"] = "Tasa"  # TipoFactor
    rate: NonNegative | None = None  # TasaOCuota (a per-unit amount when Cuota)
    base: NonNegative | None = None  # Base, when the issuer states it; else the engine derives it
    withholding: bool = False


class ConceptDraft(_Part):
    product_code: str
    quantity: Positive
    unit_code: str
    description: NotBlank
    unit_price: NonNegative
    unit: str | None = None
    discount: NonNegative | None = None
    tax_object: str | None = None  # ObjetoImp; 02 when taxes are given, else 01
    identification: str | None = None
    taxes: list[TaxDraft] = []


class RelatedDraft(_Part):
    relation_type: str
    uuids: list[str] = []


class GlobalInformationDraft(_Part):
    periodicity: str
    months: str
    year: int


class PaymentDocumentDraft(_Part):
    invoice_id: str  # canonical UUID string: balances are matched on it in stored rows
    amount_paid: Positive


class PaymentDraft(_Part):
    paid_at: datetime | None = None  # FechaPago, local time (naive, whole seconds)
    payment_form: str = "03"
    currency: str = "MXN"
    exchange_rate: Positive | None = None
    operation_number: str | None = None
    related_documents: list[PaymentDocumentDraft] = []

    @field_validator("paid_at")
    @classmethod
    def _local_seconds(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=None, microsecond=0) if v else v


class ReceiverSnapshot(_Part):
    """The receiver as it was when the draft was saved (a later customer edit does not change it)."""

    rfc: str
    name: str
    postal_code: str
    tax_regime: str
    email: str | None = None
    cfdi_use: str


class Draft(_Part):
    type: Literal["I", "E", "P"] = "I"
    customer_id: uuid.UUID | None = None
    series: str | None = None
    currency: str = "MXN"
    exchange_rate: Positive | None = None
    payment_form: str | None = None
    payment_method: str | None = None
    payment_conditions: str | None = None
    cfdi_use: str | None = None
    exportation: str = "01"
    concepts: list[ConceptDraft] = []
    related: list[RelatedDraft] = []
    global_information: GlobalInformationDraft | None = None
    payments: list[PaymentDraft] = []
    receiver: ReceiverSnapshot | None = None  # filled by the use case from the customer

    def row(self) -> dict:
        """The JSONB form (Decimals as their exact strings)."""
        return self.model_dump(mode="json")


def client_path(*loc: str | int) -> list[str]:
    """A model location as the client wrote it: ("concepts", 0, "unit_price") -> input.concepts.0.unitPrice."""
    def camel(part: str | int) -> str:
        head, *rest = str(part).split("_")
        return head + "".join(w.title() for w in rest)

    return ["input", *(camel(p) for p in loc)]


def _required(draft: Draft) -> list[UserError]:
    out: list[UserError] = []

    def need(message: str, *loc: str | int) -> None:
        out.append(UserError(field=client_path(*loc), code="REQUIRED", message=message))

    if draft.customer_id is None and draft.global_information is None:
        need("Indica el cliente (o la información global para público en general).", "customer_id")
    if draft.type in ("I", "E"):
        if not draft.concepts:
            need("Agrega al menos un concepto.", "concepts")
    if draft.type == "E" and not draft.related:
        need("Una nota de crédito debe relacionar el CFDI de origen (TipoRelacion 01).", "related")
    if draft.type == "P":
        if not draft.payments:
            need("Agrega al menos un pago.", "payments")
        for i, p in enumerate(draft.payments):
            if not p.related_documents:
                need("El pago debe relacionar al menos una factura.", "payments", i, "related_documents")
    return out


_NOT_A_NUMBER = {"decimal_parsing", "finite_number", "decimal_type"}


def _user_error(e: dict) -> UserError:
    kind = e["type"]
    if kind.isupper():  # one of ours (PydanticCustomError named after our code)
        return UserError(field=client_path(*e["loc"]), code=kind, message=e["msg"])
    if kind in _NOT_A_NUMBER:
        return UserError(field=client_path(*e["loc"]), code="INVALID_NUMBER", message="No es un número válido.")
    return UserError(field=client_path(*e["loc"]), code="INVALID_VALUE", message="No es un valor válido.")


def parse(data: dict, *, current: Draft | None = None) -> tuple[Draft | None, list[UserError]]:
    """The draft a client sent (merged over `current` for an edit) and every problem found in it
    (the draft is None when its shape is wrong). Nothing here needs the database; the use case
    checks references (customer, paid documents) after, and answers all problems at once."""
    merged = {**(current.row() if current else {}), **{k: v for k, v in data.items() if v is not None}}
    try:
        draft = Draft.model_validate(merged)
    except ValidationError as exc:
        return None, [_user_error(e) for e in exc.errors()]
    if draft.type == "P":
        draft.concepts = []
    return draft, _required(draft)


# --- to the engine ------------------------------------------------------------------------------

def engine_concepts(draft: Draft) -> list[cfdi.Concept]:
    concepts = []
    for c in draft.concepts:
        taxes = [(t.withholding, cfdi.Tax(tax=t.tax, factor_type=t.factor_type, rate=t.rate, base=t.base))
                 for t in c.taxes]
        transferred = [tax for withholding, tax in taxes if not withholding]
        withheld = [tax for withholding, tax in taxes if withholding]
        concepts.append(cfdi.Concept(
            product_code=c.product_code, quantity=c.quantity, unit_code=c.unit_code, description=c.description,
            unit_price=c.unit_price, tax_object=c.tax_object or ("02" if c.taxes else "01"),
            identification=c.identification, unit=c.unit, discount=c.discount or None,
            transferred_taxes=transferred, withheld_taxes=withheld))
    return concepts


def engine_invoice(draft: Draft, *, issuer, series: str, folio: int | None, issued_at: datetime,
                   payments: cfdi.PaymentsComplement | None = None) -> cfdi.Invoice:
    """The engine's Invoice for a draft (totals not yet computed). `issuer` is the stored profile."""
    rec, gi, p = draft.receiver, draft.global_information, draft.type == "P"
    concepts = ([cfdi.Concept("84111506", Decimal("1"), "ACT", "Pago", Decimal("0"), "01")] if p
                else engine_concepts(draft))
    return cfdi.Invoice(
        issued_at=issued_at, place_of_issue=issuer.postal_code, voucher_type=draft.type,
        exportation=draft.exportation, currency="XXX" if p else draft.currency,
        issuer=cfdi.Issuer(rfc=issuer.rfc, name=issuer.legal_name, tax_regime=issuer.tax_regime),
        receiver=cfdi.Receiver(rfc=rec.rfc, name=rec.name, tax_zip_code=rec.postal_code, tax_regime=rec.tax_regime,
                               cfdi_use=rec.cfdi_use),
        concepts=concepts, series=series, folio=None if folio is None else str(folio),
        payment_form=None if p else draft.payment_form, payment_method=None if p else draft.payment_method,
        payment_conditions=draft.payment_conditions, exchange_rate=None if p else draft.exchange_rate,
        global_information=cfdi.GlobalInformation(gi.periodicity, gi.months, gi.year) if gi else None,
        related=[cfdi.RelatedCfdis(r.relation_type, [u.upper() for u in r.uuids]) for r in draft.related],
        payments=payments,
    )
