"""The invoice subgraph's GraphQL schema. Thin: each resolver checks who is asking and calls one
service function. Field names are English; the SAT name of each field is in its description."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncGenerator
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.federation.schema_directives import Key
from strawberry.types import Info
from strawberry.types.nodes import SelectedField

from shared.bus import org_channel
from shared.compiled import prefetched
from shared.context import RequestContext
from shared.errors import AppError, NotFoundError, Payload, log_user_errors, payload_or_errors
from shared.graphql import build_schema
from shared.pagination import Connection, build_connection, decode_cursor, page_size
from shared.permissions import Permission as P
from shared.validation import DEFAULT_MAX_YEAR, DEFAULT_MIN_YEAR, column_limits, limits
from subgraphs.invoice import loaders, service
from subgraphs.invoice import models as m
from sat.cfdi import search_catalog
from sat.cfdi.catalogs import CatalogSearchError, UnknownCatalogError
from subgraphs.invoice.draft import Draft
from subgraphs.invoice.lifecycle import Status
from subgraphs.invoice.pac_schema import PacMutations, PacQueries

Ctx = Info[RequestContext, None]
# Far below the Integer column's 2^31: a series started this high still has a billion folios left.
# (That it is positive is the service's rule, INVALID_FOLIO.)
MAX_FIRST_FOLIO = 1_000_000_000
# Base64 of a SAT .cer or .key is about 2 KB; generous for wrapped lines, bounded for everything else.
CSD_FILE_LIMITS = limits(max_length=20_000, multiline=True)
DOWNLOAD_TTL = timedelta(hours=1)


def _uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError() from None


def _plain(value: Any) -> Any:
    """Strawberry input objects -> plain dicts (snake_case keys, Decimal as str, enums as values)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not strawberry.UNSET}
    return value


# --- federation stubs (resolved by the auth subgraph) -------------------------------------------

# `keys=[Key(fields="id", resolvable=False)]`: this strawberry version has no `resolvable=` argument
# on the decorator itself, the Key directive carries it.
@strawberry.federation.type(keys=[Key(fields="id", resolvable=False)])
class User:
    id: strawberry.ID


@strawberry.federation.type(keys=[Key(fields="id", resolvable=False)])
class Organization:
    id: strawberry.ID


# --- enums ---------------------------------------------------------------------------------------

InvoiceStatus = strawberry.enum(Status, name="InvoiceStatus", description=(
    "Lifecycle of an invoice (subgraphs/invoice/lifecycle.py). DRAFT -> STAMPING -> STAMPED | STAMP_FAILED; "
    "STAMPED -> CANCELLING -> CANCELLED | CANCELLATION_PENDING (receiver decides) | CANCELLATION_REJECTED | "
    "CANCELLATION_FAILED (the PAC refused; still valid)."))


@strawberry.enum(description="TipoDeComprobante: I ingreso, E egreso (nota de crédito), P pago.")
class InvoiceType(Enum):
    INCOME = "I"
    EGRESS = "E"
    PAYMENT = "P"


# --- issuer --------------------------------------------------------------------------------------

@strawberry.type(description="A series (Serie) and its next folio.")
class Series:
    code: str = strawberry.field(description="Serie")
    next_folio: int = strawberry.field(description="Next Folio to be assigned.")


@strawberry.type(description="A Certificado de Sello Digital (CSD). The private key is never exposed.")
class Certificate:
    id: strawberry.ID
    certificate_number: str = strawberry.field(description="NoCertificado")
    rfc: str
    legal_name: str
    valid_from: datetime
    valid_to: datetime
    active: bool

    @classmethod
    def from_row(cls, r: m.Certificate) -> "Certificate":
        return cls(id=strawberry.ID(str(r.id)), certificate_number=r.certificate_number, rfc=r.rfc,
                   legal_name=r.legal_name, valid_from=r.valid_from, valid_to=r.valid_to, active=r.active)


@strawberry.type(description="The organization as issuer (Emisor).")
class Issuer:
    rfc: str = strawberry.field(description="Emisor/@Rfc")
    legal_name: str = strawberry.field(description="Emisor/@Nombre")
    tax_regime: str = strawberry.field(description="Emisor/@RegimenFiscal (c_RegimenFiscal)")
    postal_code: str = strawberry.field(description="LugarExpedicion (c_CodigoPostal)")
    default_series: str = strawberry.field(description="Serie used when an invoice names none.")
    organization_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_row(cls, r: m.IssuerProfile) -> "Issuer":
        return cls(rfc=r.rfc, legal_name=r.legal_name, tax_regime=r.tax_regime, postal_code=r.postal_code,
                   default_series=r.default_series, organization_id=r.organization_id)

    @strawberry.field
    async def certificates(self, info: Ctx) -> list[Certificate]:
        async with info.context.read_session() as session:
            return [Certificate.from_row(r) for r in await service.list_csds(session, self.organization_id)]

    @strawberry.field
    async def series(self, info: Ctx) -> list[Series]:
        async with info.context.read_session() as session:
            return [Series(code=r.code, next_folio=r.next_folio)
                    for r in await service.list_series(session, self.organization_id)]


@strawberry.input
class IssuerInput:
    rfc: str = strawberry.field(description="Emisor/@Rfc")
    legal_name: str = strawberry.field(description="Emisor/@Nombre (as in the Constancia de Situación Fiscal)",
                                       metadata=column_limits(m.IssuerProfile.legal_name))
    tax_regime: str = strawberry.field(description="RegimenFiscal (c_RegimenFiscal), e.g. 601")
    postal_code: str = strawberry.field(description="LugarExpedicion (c_CodigoPostal)")
    default_series: str | None = strawberry.field(default=None, description="Serie, default A")


# --- customers -----------------------------------------------------------------------------------

@strawberry.type(description="A tax on a product or concept line.")
class TaxLine:
    tax: str = strawberry.field(description="Impuesto (c_Impuesto): 001 ISR, 002 IVA, 003 IEPS")
    factor_type: str = strawberry.field(description="TipoFactor: Tasa, Cuota, Exento")
    rate: Decimal | None = strawberry.field(description="TasaOCuota")
    base: Decimal | None = strawberry.field(description="Base as stated by the issuer (null: derived by SAT's rules)")
    withholding: bool = strawberry.field(description="True for a Retencion, false for a Traslado.")


@strawberry.input
class TaxInput:
    tax: str = strawberry.field(description="Impuesto (c_Impuesto): 001 ISR, 002 IVA, 003 IEPS")
    factor_type: str = strawberry.field(default="Tasa", description="TipoFactor: Tasa (rate on the base), Cuota "
                                        "(amount per unit: the base is the quantity), Exento (base, no amount)")
    rate: Decimal | None = strawberry.field(default=None, description="TasaOCuota, e.g. 0.160000 (none when Exento)")
    base: Decimal | None = strawberry.field(default=None, description=(
        "Base, when the issuer states it. Omitted, it is derived as SAT's Guía says: Importe - Descuento, plus "
        "the line's IEPS for IVA; the quantity for a Cuota."))
    withholding: bool = strawberry.field(default=False, description="Retencion instead of Traslado.")


def _tax_lines(items: list[dict] | None) -> list[TaxLine]:
    return [TaxLine(tax=t["tax"], factor_type=t.get("factor_type") or "Tasa",
                    rate=Decimal(t["rate"]) if t.get("rate") is not None else None,
                    base=Decimal(t["base"]) if t.get("base") is not None else None,
                    withholding=bool(t.get("withholding"))) for t in items or []]


@strawberry.type(description="A product or service frequently billed to a customer.")
class Product:
    product_code: str = strawberry.field(description="ClaveProdServ")
    description: str = strawberry.field(description="Descripcion")
    unit_code: str = strawberry.field(description="ClaveUnidad")
    unit: str | None = strawberry.field(description="Unidad")
    unit_price: Decimal = strawberry.field(description="ValorUnitario")
    tax_object: str = strawberry.field(description="ObjetoImp (c_ObjetoImp)")
    taxes: list[TaxLine]


@strawberry.input
class ProductInput:
    product_code: str = strawberry.field(description="SAT product/service key, 8 digits (ClaveProdServ, c_ClaveProdServ), e.g. 84111506.")
    description: str = strawberry.field(description="What is sold, as it will print on the invoice (Descripcion).")
    unit_code: str = strawberry.field(description="SAT unit key (ClaveUnidad, c_ClaveUnidad), e.g. E48 service unit, H87 piece.")
    unit_price: Decimal = strawberry.field(description="Price per unit before taxes, decimal string (ValorUnitario).")
    unit: str | None = strawberry.field(default=None, description="Free-text unit name (Unidad), optional.")
    tax_object: str = strawberry.field(default="02", description="Whether it is subject to tax (ObjetoImp, c_ObjetoImp): 01 no, 02 yes.")
    taxes: list[TaxInput] = strawberry.field(default_factory=list, description="Taxes usually applied to it.")


@strawberry.type(description="A customer (Receptor).")
class Customer:
    id: strawberry.ID
    rfc: str = strawberry.field(description="Receptor/@Rfc")
    legal_name: str = strawberry.field(description="Receptor/@Nombre")
    tax_regime: str = strawberry.field(description="RegimenFiscalReceptor")
    postal_code: str = strawberry.field(description="DomicilioFiscalReceptor")
    cfdi_use: str = strawberry.field(description="Default UsoCFDI")
    email: str | None
    # Built from the JSON column only when asked (a list of invoices shows customers' names).
    products: list[Product] = strawberry.field(resolver=lambda root: _products(root.row))
    # The ORM object or a `PlainRow` (loaders): attributes are only read.
    row: strawberry.Private[Any]

    @classmethod
    def from_row(cls, r: m.Customer) -> "Customer":
        return cls(id=strawberry.ID(str(r.id)), rfc=r.rfc, legal_name=r.legal_name, tax_regime=r.tax_regime,
                   postal_code=r.postal_code, cfdi_use=r.cfdi_use, email=r.email, row=r)


def _products(r) -> list[Product]:
    return [Product(product_code=p["product_code"], description=p["description"], unit_code=p["unit_code"],
                    unit=p.get("unit"), unit_price=Decimal(p["unit_price"]), tax_object=p.get("tax_object") or "02",
                    taxes=_tax_lines(p.get("taxes"))) for p in r.products or []]


@strawberry.input
class CustomerInput:
    rfc: str = strawberry.field(description="Receiver's RFC, 12 characters for companies, 13 for people (Receptor/@Rfc).")
    legal_name: str = strawberry.field(description="Name exactly as on the receiver's tax certificate (constancia de situación fiscal), without the company type such as SA de CV (Receptor/@Nombre).", metadata=column_limits(m.Customer.legal_name))
    tax_regime: str = strawberry.field(description="Receiver's tax regime, 3 digits (RegimenFiscalReceptor, c_RegimenFiscal), e.g. 601 general de ley personas morales.")
    postal_code: str = strawberry.field(description="Postal code of the receiver's fiscal address, 5 digits (DomicilioFiscalReceptor, c_CodigoPostal).")
    cfdi_use: str | None = strawberry.field(default=None, description="Default CFDI use for this customer (UsoCFDI, c_UsoCFDI), G03 gastos en general if empty.")
    email: str | None = strawberry.field(default=None, description="Where stamped invoices are e-mailed (when the organization sends CFDIs to customers).")
    products: list[ProductInput] | None = strawberry.field(default=None, description="Products or services usually billed to this customer.")


@strawberry.input(description="Changes to a customer: only the fields given change.")
class CustomerUpdateInput:
    rfc: str | None = strawberry.field(default=None, description="Receiver's RFC (Receptor/@Rfc).")
    legal_name: str | None = strawberry.field(default=None, description="Name exactly as on the tax certificate, without the company type (Receptor/@Nombre).", metadata=column_limits(m.Customer.legal_name))
    tax_regime: str | None = strawberry.field(default=None, description="Receiver's tax regime (RegimenFiscalReceptor, c_RegimenFiscal).")
    postal_code: str | None = strawberry.field(default=None, description="Postal code of the fiscal address (DomicilioFiscalReceptor).")
    cfdi_use: str | None = strawberry.field(default=None, description="Default CFDI use (UsoCFDI, c_UsoCFDI).")
    email: str | None = strawberry.field(default=None, description="Where stamped invoices are e-mailed.")
    products: list[ProductInput] | None = strawberry.field(default=None, description="Replaces the list of usual products.")


# --- invoices ------------------------------------------------------------------------------------

@strawberry.type(description="A rule the invoice breaks (SAT code CFDI40xxx when one exists); stamping waits until none.")
class ValidationIssue:
    code: str
    field: str = strawberry.field(description="Path in the invoice, e.g. concepts[0].unit_price")
    message: str


@strawberry.type(description="Signed, expiring links to the invoice's documents.")
class DownloadUrls:
    xml: str
    pdf: str
    expires_at: datetime


@strawberry.type(description="One status transition of an invoice.")
class InvoiceHistoryEntry:
    from_status: InvoiceStatus | None
    to_status: InvoiceStatus
    reason: str | None
    actor: User | None
    at: datetime


@strawberry.type(description="A concept line (Concepto) as entered.")
class ConceptLine:
    product_code: str = strawberry.field(description="ClaveProdServ")
    quantity: Decimal = strawberry.field(description="Cantidad")
    unit_code: str = strawberry.field(description="ClaveUnidad")
    description: str = strawberry.field(description="Descripcion")
    unit_price: Decimal = strawberry.field(description="ValorUnitario")
    discount: Decimal | None = strawberry.field(description="Descuento")
    tax_object: str | None = strawberry.field(description="ObjetoImp")
    taxes: list[TaxLine]


@strawberry.federation.type(keys=["id"], description="A CFDI 4.0 invoice (Comprobante).")
class Invoice:
    id: strawberry.ID
    type: InvoiceType = strawberry.field(description="TipoDeComprobante")
    status: InvoiceStatus
    series: str = strawberry.field(description="Serie")
    folio: int = strawberry.field(description="Folio")
    customer_rfc: str = strawberry.field(description="Receptor/@Rfc")
    customer_name: str = strawberry.field(description="Receptor/@Nombre")
    currency: str = strawberry.field(description="Moneda")
    exchange_rate: Decimal | None = strawberry.field(description="TipoCambio", resolver=lambda root: _draft(root).exchange_rate)
    subtotal: Decimal = strawberry.field(description="SubTotal")
    discount: Decimal | None = strawberry.field(description="Descuento")
    total_taxes_transferred: Decimal | None = strawberry.field(description="TotalImpuestosTrasladados")
    total_taxes_withheld: Decimal | None = strawberry.field(description="TotalImpuestosRetenidos")
    total: Decimal = strawberry.field(description="Total (for P: MontoTotalPagos)")
    payment_form: str | None = strawberry.field(description="FormaPago", resolver=lambda root: _draft(root).payment_form)
    payment_method: str | None = strawberry.field(description="MetodoPago",
                                                  resolver=lambda root: _draft(root).payment_method)
    cfdi_use: str | None = strawberry.field(description="UsoCFDI", resolver=lambda root: (
        _draft(root).receiver.cfdi_use if _draft(root).receiver else None))
    issues: list[ValidationIssue] = strawberry.field(resolver=lambda root: _issues(root))
    issued_at: datetime | None = strawberry.field(description="Fecha (local time of LugarExpedicion)")
    uuid: str | None = strawberry.field(description="TimbreFiscalDigital/@UUID (folio fiscal)")
    stamped_at: datetime | None = strawberry.field(description="TimbreFiscalDigital/@FechaTimbrado")
    sat_certificate_number: str | None = strawberry.field(description="NoCertificadoSAT")
    pac_code: str | None = strawberry.field(description="Last PAC error code (when STAMP_FAILED).")
    pac_message: str | None
    cancellation_reason: str | None = strawberry.field(description="Motivo de cancelación (01-04)")
    replacement_uuid: str | None = strawberry.field(description="FolioSustitucion")
    created_at: datetime
    # The ORM object, or a plain row of the invoices table (list pages): resolvers read attributes only.
    row: strawberry.Private[m.Invoice]

    @classmethod
    def from_row(cls, r: m.Invoice) -> "Invoice":
        # The draft (JSONB, validated by pydantic) is parsed only when a field asks for it
        # (`_draft`): a list page of 50 invoices that shows no draft field never pays for it.
        def money(value: Decimal | None) -> Decimal | None:
            return service.money(value, r.currency)

        return cls(
            id=strawberry.ID(str(r.id)), type=InvoiceType(r.voucher_type), status=InvoiceStatus(r.status),
            series=r.series, folio=r.folio, customer_rfc=r.customer_rfc, customer_name=r.customer_name,
            currency=r.currency, subtotal=money(r.subtotal),
            discount=money(r.discount), total_taxes_transferred=money(r.total_transferred),
            total_taxes_withheld=money(r.total_withheld), total=money(r.total),
            issued_at=r.issued_at, uuid=r.uuid, stamped_at=r.stamped_at, sat_certificate_number=r.pac_certificate_number,
            pac_code=r.pac_code, pac_message=r.pac_message, cancellation_reason=r.cancellation_reason,
            replacement_uuid=r.replacement_uuid, created_at=r.created_at, row=r,
        )

    @classmethod
    async def resolve_reference(cls, info: Ctx, id: strawberry.ID) -> "Invoice | None":
        p = await info.context.require(P.INVOICE_READ)
        row = await loaders.invoices(info.context, p.organization_id).load(_uuid(id))
        return cls.from_row(row) if row else None

    @strawberry.field(description="Concepts as entered (Conceptos).")
    def concepts(self) -> list[ConceptLine]:
        return [ConceptLine(product_code=c.product_code, quantity=c.quantity, unit_code=c.unit_code,
                            description=c.description, unit_price=c.unit_price, discount=c.discount,
                            tax_object=c.tax_object,
                            taxes=[TaxLine(tax=t.tax, factor_type=t.factor_type, rate=t.rate, base=t.base,
                                           withholding=t.withholding) for t in c.taxes])
                for c in _draft(self).concepts]

    @strawberry.field(metadata=prefetched("_customer"))
    def customer(self, info: Ctx) -> Customer | None:
        # Not `async def`: a list page prefetches its customers (`_prefetch_customers`), and then
        # answering is a plain return, without a coroutine, a loader future and their awaiting
        # per row. Otherwise the awaitable goes back to the executor, which awaits it.
        if not self.row.customer_id:
            return None
        prefetched = self.__dict__.get("_customer", _NOT_FETCHED)
        if prefetched is not _NOT_FETCHED:
            return prefetched
        return self._load_customer(info)

    async def _load_customer(self, info: Ctx) -> Customer | None:
        row = await loaders.customers(info.context, self.row.organization_id).load(self.row.customer_id)
        return Customer.from_row(row) if row else None

    @strawberry.field(description="Who created it (resolved by the auth subgraph).")
    def created_by(self) -> User | None:
        return User(id=strawberry.ID(str(self.row.created_by))) if self.row.created_by else None

    @strawberry.field
    def organization(self) -> Organization | None:  # resolved by auth: nullable, see README
        return Organization(id=strawberry.ID(str(self.row.organization_id)))

    @strawberry.field(description="The stamped CFDI XML (null until STAMPED).")
    def xml(self) -> str | None:
        return self.row.xml

    @strawberry.field(description="Signed links to the XML and PDF, valid one hour (null until stamped).")
    def download_urls(self, info: Ctx) -> DownloadUrls | None:
        if not self.row.xml:
            return None
        settings = info.context.settings
        exp = service.utcnow() + DOWNLOAD_TTL
        base = (settings.documents_public_url or settings.invoice_service_url).rstrip("/")
        return DownloadUrls(xml=base + service.document_path(settings, self.row.id, "xml", exp),
                            pdf=base + service.document_path(settings, self.row.id, "pdf", exp),
                            expires_at=exp.replace(microsecond=0))

    @strawberry.field(description="Every status change: who, when, from, to, why.")
    async def history(self, info: Ctx) -> list[InvoiceHistoryEntry]:
        rows = await loaders.history(info.context).load(self.row.id)
        return [InvoiceHistoryEntry(from_status=InvoiceStatus(r.from_status) if r.from_status else None,
                                    to_status=InvoiceStatus(r.to_status), reason=r.reason,
                                    actor=User(id=strawberry.ID(str(r.actor_id))) if r.actor_id else None,
                                    at=r.created_at) for r in rows]


_NOT_FETCHED = object()


def _selects(info: Ctx, name: str) -> bool:
    """Whether the field being resolved selects a field called `name` anywhere below it
    (through fragments too)."""
    def walk(selections) -> bool:
        return any((isinstance(sel, SelectedField) and sel.name == name) or walk(sel.selections)
                   for sel in selections)

    return any(walk(field.selections) for field in info.selected_fields)


async def _prefetch_customers(info: Ctx, org: uuid.UUID, invoices: list[Invoice]) -> None:
    """The page's customers in one loader batch, attached to each invoice (see `Invoice.customer`)."""
    ids = list({inv.row.customer_id for inv in invoices if inv.row.customer_id})
    rows = await loaders.customers(info.context, org).load_many(ids) if ids else []
    customers = {i: Customer.from_row(r) if r else None for i, r in zip(ids, rows)}
    for inv in invoices:
        if inv.row.customer_id:
            inv.__dict__["_customer"] = customers[inv.row.customer_id]


def _issues(inv: Invoice) -> list[ValidationIssue]:
    return [ValidationIssue(code=i["code"], field=i["field"], message=i["message"]) for i in inv.row.issues or []]


def _draft(inv: Invoice) -> Draft:
    """The invoice's draft, parsed once per object (several fields may ask)."""
    draft = inv.__dict__.get("_draft")
    if draft is None:
        draft = inv.__dict__["_draft"] = Draft.model_validate(inv.row.document or {})
    return draft


@strawberry.input
class ConceptInput:
    product_code: str = strawberry.field(description="SAT product/service key, 8 digits (ClaveProdServ, c_ClaveProdServ), e.g. 84111506 servicios de facturación; search it with satCatalog(name: \"ClaveProdServ\").")
    quantity: Decimal = strawberry.field(description="How many units, decimal string greater than zero (Cantidad).")
    unit_code: str = strawberry.field(description="SAT unit key (ClaveUnidad, c_ClaveUnidad), e.g. E48 service unit, H87 piece, KGM kilogram.")
    description: str = strawberry.field(description="What is sold, as it will print on the invoice (Descripcion).")
    unit_price: Decimal = strawberry.field(description="Price per unit before taxes, decimal string, e.g. \"1500.00\" (ValorUnitario).")
    unit: str | None = strawberry.field(default=None, description="Free-text unit name (Unidad), optional.")
    discount: Decimal | None = strawberry.field(default=None, description="Discount on this line's amount, decimal string (Descuento), optional.")
    tax_object: str | None = strawberry.field(default=None, description="Whether the line is subject to tax (ObjetoImp, c_ObjetoImp): 02 when taxes are given, otherwise 01.")
    identification: str | None = strawberry.field(default=None, description="Your own product code or SKU (NoIdentificacion), optional.")
    taxes: list[TaxInput] = strawberry.field(default_factory=list, description="Taxes of this line; e.g. IVA 16%: {tax: \"002\", factorType: \"Tasa\", rate: \"0.160000\"}.")


@strawberry.input
class RelatedCfdiInput:
    relation_type: str = strawberry.field(description="How they relate (TipoRelacion, c_TipoRelacion), e.g. 01 credit note of the documents, 04 substitution of cancelled CFDIs.")
    uuids: list[str] = strawberry.field(description="Folios fiscales (UUIDs) of the related CFDIs (CfdiRelacionado/@UUID).")


@strawberry.input
class GlobalInformationInput:
    periodicity: str = strawberry.field(description="Period the global invoice covers (Periodicidad, c_Periodicidad): 01 daily, 02 weekly, 03 fortnightly, 04 monthly, 05 bimonthly.")
    months: str = strawberry.field(description="Month or bimester covered (Meses, c_Meses), 01-12 or 13-18 for bimesters.")
    year: int = strawberry.field(description="Year covered (Año).", metadata=limits(min=DEFAULT_MIN_YEAR, max=DEFAULT_MAX_YEAR))


@strawberry.input
class PaymentDocumentInput:
    invoice_id: strawberry.ID = strawberry.field(description="Id of a stamped PPD invoice of this organization that this payment pays (IdDocumento).")
    amount_paid: Decimal = strawberry.field(description="Amount paid of that invoice, in its currency (ImpPagado); the previous balance and installment number are computed.")


@strawberry.input
class PaymentInput:
    paid_at: datetime = strawberry.field(description="When the money was received (FechaPago).")
    payment_form: str = strawberry.field(description="How it was paid (FormaDePagoP, c_FormaPago), e.g. 03 transfer; never 99.")
    currency: str = strawberry.field(default="MXN", description="Currency of the payment (MonedaP, c_Moneda).", metadata=column_limits(m.Invoice.currency))
    exchange_rate: Decimal | None = strawberry.field(default=None, description="MXN per unit of that currency when not MXN (TipoCambioP).")
    operation_number: str | None = strawberry.field(default=None, description="Bank reference of the payment (NumOperacion), optional.")
    related_documents: list[PaymentDocumentInput] = strawberry.field(default_factory=list,
                                                                     description="DoctoRelacionado")


@strawberry.input
class InvoiceInput:
    type: InvoiceType = strawberry.field(default=InvoiceType.INCOME, description="Kind of CFDI (TipoDeComprobante): INCOME for a sale, EGRESS for a credit note, PAYMENT for a payment receipt.")
    customer_id: strawberry.ID | None = strawberry.field(default=None, description="Id of the customer who receives it (Receptor); omit only for a global invoice to the general public.")
    series: str | None = strawberry.field(default=None, description="Series (Serie); the issuer's default when omitted. The folio is assigned automatically.")
    currency: str | None = strawberry.field(default=None, description="Currency (Moneda, c_Moneda), MXN when omitted.",
                                            metadata=column_limits(m.Invoice.currency))
    exchange_rate: Decimal | None = strawberry.field(default=None, description="MXN per unit of the currency when it is not MXN (TipoCambio).")
    payment_form: str | None = strawberry.field(default=None, description="How it is or will be paid (FormaPago, c_FormaPago), e.g. 03 transfer, 01 cash; 99 'por definir' with PPD.")
    payment_method: str | None = strawberry.field(default=None, description="PUE paid in one payment now, or PPD paid later or in installments (MetodoPago).")
    payment_conditions: str | None = strawberry.field(default=None, description="Free-text payment terms, e.g. 'Contado' or '30 días' (CondicionesDePago), optional.")
    cfdi_use: str | None = strawberry.field(default=None, description="What the receiver uses it for (UsoCFDI, c_UsoCFDI); the customer's default when omitted.")
    exportation: str | None = strawberry.field(default=None, description="Export key (Exportacion, c_Exportacion), 01 'no aplica' when omitted.")
    concepts: list[ConceptInput] | None = strawberry.field(default=None, description="The lines of the invoice (Conceptos): at least one.")
    related: list[RelatedCfdiInput] | None = strawberry.field(default=None, description="Related CFDIs (CfdiRelacionados), e.g. the invoices a credit note refers to.")
    global_information: GlobalInformationInput | None = strawberry.field(default=None, description="Only for a global invoice to the general public (InformacionGlobal).")
    payments: list[PaymentInput] | None = strawberry.field(default=None, description="Only for type PAYMENT: the payments received (Pagos 2.0).")


@strawberry.input
class InvoiceUpdateInput:
    customer_id: strawberry.ID | None = None
    series: str | None = None
    currency: str | None = strawberry.field(default=None, metadata=column_limits(m.Invoice.currency))
    exchange_rate: Decimal | None = None
    payment_form: str | None = None
    payment_method: str | None = None
    payment_conditions: str | None = None
    cfdi_use: str | None = None
    exportation: str | None = None
    concepts: list[ConceptInput] | None = None
    related: list[RelatedCfdiInput] | None = None
    global_information: GlobalInformationInput | None = None
    payments: list[PaymentInput] | None = None


@strawberry.input
class InvoiceFilter:
    status: InvoiceStatus | None = strawberry.field(default=None, description="Only invoices in this status.")
    customer_id: strawberry.ID | None = strawberry.field(default=None, description="Only invoices to this customer.")
    type: InvoiceType | None = strawberry.field(default=None, description="Only this kind of CFDI.")
    date_from: datetime | None = strawberry.field(default=None, description="Created at or after this moment (ISO 8601).")
    date_to: datetime | None = strawberry.field(default=None, description="Created before this moment (ISO 8601).")
    search: str | None = strawberry.field(default=None, description="Customer name or RFC, folio fiscal (UUID) or folio number.")


@strawberry.type
class DashboardRow:
    month: int
    status: InvoiceStatus
    count: int
    total: Decimal = strawberry.field(description="Sum of Total converted to MXN with TipoCambio")


@strawberry.type
class CatalogEntry:
    code: str
    description: str


@strawberry.type(description="A live status change of an invoice.")
class InvoiceStatusEvent:
    invoice_id: strawberry.ID
    status: InvoiceStatus
    uuid: str | None
    code: str | None
    message: str | None
    at: datetime


# --- payloads ------------------------------------------------------------------------------------

@strawberry.type
class IssuerPayload(Payload):
    issuer: Issuer | None = None


@strawberry.type
class CertificatePayload(Payload):
    certificate: Certificate | None = None


@strawberry.type
class SeriesPayload(Payload):
    series: Series | None = None


@strawberry.type
class CustomerPayload(Payload):
    customer: Customer | None = None


@strawberry.type
class DeletePayload(Payload):
    success: bool = False


@strawberry.type
class InvoicePayload(Payload):
    invoice: Invoice | None = None
    issues: list[ValidationIssue] = strawberry.field(default_factory=list)


def _invoice_payload(row: m.Invoice) -> InvoicePayload:
    inv = Invoice.from_row(row)
    return InvoicePayload(invoice=inv, issues=_issues(inv))


@strawberry.input(description="One invoice for stampInvoices.")
class StampInvoiceInput:
    id: strawberry.ID = strawberry.field(description="A DRAFT or STAMP_FAILED invoice of the organization.")
    idempotency_key: str = strawberry.field(description=(
        "Chosen by the client per stamping request (at most 200 characters): the same key again for the same "
        "invoice answers it as it is, nothing new."))


@strawberry.type(description="The answer of stampInvoices: one result per item, in the order of the items.")
class StampInvoicesPayload(Payload):
    results: list[InvoicePayload] = strawberry.field(default_factory=list, description=(
        "Each item as stampInvoice would answer it: the invoice (STAMPING, or as it is when asked again with the "
        "same key), or its userErrors with paths [\"items\", i, \"id\"] / [\"items\", i, \"idempotencyKey\"]. "
        "Empty when the call is refused as a whole (this payload's own userErrors)."))


# --- root types ----------------------------------------------------------------------------------

@strawberry.type
class Query(PacQueries):
    @strawberry.field(description="The organization's issuer profile (Emisor), null until configured.")
    async def issuer(self, info: Ctx) -> Issuer | None:
        p = await info.context.require(P.INVOICE_READ)
        async with info.context.read_session() as session:
            row = await service.get_issuer(session, p.organization_id)
        return Issuer.from_row(row) if row else None

    @strawberry.field
    async def customer(self, info: Ctx, id: strawberry.ID) -> Customer | None:
        p = await info.context.require(P.INVOICE_READ)
        row = await loaders.customers(info.context, p.organization_id).load(_uuid(id))
        return Customer.from_row(row) if row and row.deleted_at is None else None

    @strawberry.field
    async def customers(self, info: Ctx, first: int | None = None, after: str | None = None,
                        search: str | None = None) -> Connection[Customer] | None:
        p = await info.context.require(P.INVOICE_READ)
        size = page_size(first)
        async with info.context.read_session() as session:
            rows = await service.customers_page(session, p.organization_id, search=search, after=decode_cursor(after, str, uuid.UUID),
                                                limit=size + 1)
        return build_connection(rows, size, to_node=Customer.from_row, key_of=lambda r: [r.legal_name, str(r.id)],
                                after=after)

    @strawberry.field
    async def invoice(self, info: Ctx, id: strawberry.ID) -> Invoice | None:
        p = await info.context.require(P.INVOICE_READ)
        row = await loaders.invoices(info.context, p.organization_id).load(_uuid(id))
        return Invoice.from_row(row) if row else None

    @strawberry.field(description="Find an invoice by its folio fiscal (UUID).")
    async def invoice_by_uuid(self, info: Ctx, uuid: str) -> Invoice | None:
        p = await info.context.require(P.INVOICE_READ)
        async with info.context.read_session() as session:
            row = await service.invoice_by_uuid(session, p.organization_id, uuid)
        return Invoice.from_row(row) if row else None

    @strawberry.field
    async def invoices(self, info: Ctx, filter: InvoiceFilter | None = None, first: int | None = None,
                       after: str | None = None) -> Connection[Invoice] | None:
        p = await info.context.require(P.INVOICE_READ)
        size = page_size(first)
        filters = _plain(filter) if filter else {}
        if filters.get("customer_id"):
            filters["customer_id"] = _uuid(filters["customer_id"])
        async with info.context.read_session() as session:
            rows = await service.invoices_page(session, p.organization_id, filters=filters,
                                               after=decode_cursor(after, datetime.fromisoformat, uuid.UUID), limit=size + 1)
        page = build_connection(rows, size, to_node=Invoice.from_row,
                                key_of=lambda r: [r.created_at.isoformat(), str(r.id)], after=after)
        if _selects(info, "customer"):
            await _prefetch_customers(info, p.organization_id, [e.node for e in page.edges])
        return page

    @strawberry.field(description="Count and MXN total of invoices per month and status for a year.")
    async def invoice_dashboard(
        self, info: Ctx, year: Annotated[int, strawberry.argument(metadata=limits(min=DEFAULT_MIN_YEAR, max=DEFAULT_MAX_YEAR))],
    ) -> list[DashboardRow] | None:
        p = await info.context.require(P.INVOICE_READ)
        async with info.context.read_session() as session:
            rows = await service.dashboard(session, p.organization_id, year)
        return [DashboardRow(month=mo, status=InvoiceStatus(st), count=c, total=t) for mo, st, c, t in rows]

    @strawberry.field(description="Search a SAT catalog: ClaveProdServ, ClaveUnidad, RegimenFiscal, UsoCFDI, FormaPago, "
                                  "MetodoPago, Moneda, CodigoPostal, ObjetoImp, Exportacion.")
    async def sat_catalog(
        self, info: Ctx, name: str,
        # The catalog search answers its own limit (SEARCH_TOO_LONG past 100 characters); the
        # boundary only keeps out control characters and absurd sizes.
        search: Annotated[str, strawberry.argument(metadata=limits(max_length=20_000))] = "",
        first: int = 20,
    ) -> list[CatalogEntry] | None:
        await info.context.principal()
        try:
            # Off the event loop: the first search of a catalog builds its index (~1 s for ClaveProdServ).
            rows = await asyncio.to_thread(search_catalog, name, search, min(max(first, 0), 100))
        except UnknownCatalogError:
            raise NotFoundError("Catálogo desconocido.") from None
        except CatalogSearchError as exc:
            raise AppError(str(exc), code=exc.code) from None
        return [CatalogEntry(code=str(r["code"]), description=str(r.get("description", ""))) for r in rows]


@strawberry.type
class Mutation(PacMutations):
    @strawberry.mutation(description="Create or update the issuer profile (Emisor, LugarExpedicion).")
    async def save_issuer(self, info: Ctx, input: IssuerInput) -> IssuerPayload:
        p = await info.context.require(P.ISSUER_MANAGE)

        async def run():
            return IssuerPayload(issuer=Issuer.from_row(await service.save_issuer(info.context.runtime, p.organization_id,
                                                                                 _plain(input))))
        return await payload_or_errors(IssuerPayload, run)

    @strawberry.mutation(description="Add a series (Serie) with its first folio.")
    async def create_series(
        self, info: Ctx, code: str,
        next_folio: Annotated[int, strawberry.argument(metadata=limits(max=MAX_FIRST_FOLIO))] = 1,
    ) -> SeriesPayload:
        p = await info.context.require(P.ISSUER_MANAGE)

        async def run():
            row = await service.create_series(info.context.runtime, p.organization_id, code, next_folio)
            return SeriesPayload(series=Series(code=row.code, next_folio=row.next_folio))
        return await payload_or_errors(SeriesPayload, run)

    @strawberry.mutation(description="Upload a CSD: base64 of the .cer (DER) and the encrypted PKCS#8 .key, and its "
                                     "password (used once to open the key; never stored).")
    async def upload_csd(self, info: Ctx, certificate: Annotated[str, strawberry.argument(metadata=CSD_FILE_LIMITS)],
                         private_key: Annotated[str, strawberry.argument(metadata=CSD_FILE_LIMITS)],
                         password: str) -> CertificatePayload:
        p = await info.context.require(P.ISSUER_MANAGE)

        async def run():
            row = await service.upload_csd(info.context.runtime, p.organization_id, p.user_id, certificate,
                                           private_key, password)
            return CertificatePayload(certificate=Certificate.from_row(row))
        return await payload_or_errors(CertificatePayload, run)

    @strawberry.mutation(description="Make a CSD the one that seals new invoices.")
    async def activate_csd(self, info: Ctx, id: strawberry.ID) -> CertificatePayload:
        p = await info.context.require(P.ISSUER_MANAGE)

        async def run():
            row = await service.activate_csd(info.context.runtime, p.organization_id, _uuid(id))
            return CertificatePayload(certificate=Certificate.from_row(row))
        return await payload_or_errors(CertificatePayload, run)

    @strawberry.mutation
    async def create_customer(self, info: Ctx, input: CustomerInput) -> CustomerPayload:
        p = await info.context.require(P.CUSTOMER_MANAGE)

        async def run():
            row = await service.create_customer(info.context.runtime, p.organization_id, _plain(input))
            return CustomerPayload(customer=Customer.from_row(row))
        return await payload_or_errors(CustomerPayload, run)

    @strawberry.mutation
    async def update_customer(self, info: Ctx, id: strawberry.ID, input: CustomerUpdateInput) -> CustomerPayload:
        p = await info.context.require(P.CUSTOMER_MANAGE)

        async def run():
            row = await service.update_customer(info.context.runtime, p.organization_id, _uuid(id), _plain(input))
            return CustomerPayload(customer=Customer.from_row(row))
        return await payload_or_errors(CustomerPayload, run)

    @strawberry.mutation
    async def delete_customer(self, info: Ctx, id: strawberry.ID) -> DeletePayload:
        p = await info.context.require(P.CUSTOMER_MANAGE)

        async def run():
            await service.delete_customer(info.context.runtime, p.organization_id, _uuid(id))
            return DeletePayload(success=True)
        return await payload_or_errors(DeletePayload, run)

    @strawberry.mutation(description="Create a DRAFT; totals are computed and validation issues returned.")
    async def create_invoice(self, info: Ctx, input: InvoiceInput) -> InvoicePayload:
        p = await info.context.require(P.INVOICE_ISSUE)

        async def run():
            return _invoice_payload(await service.create_invoice(info.context.runtime, p.organization_id, p.user_id,
                                                                 _plain(input)))
        return await payload_or_errors(InvoicePayload, run)

    @strawberry.mutation(description="Edit a DRAFT or STAMP_FAILED invoice.")
    async def update_invoice(self, info: Ctx, id: strawberry.ID, input: InvoiceUpdateInput) -> InvoicePayload:
        p = await info.context.require(P.INVOICE_ISSUE)

        async def run():
            return _invoice_payload(await service.update_invoice(info.context.runtime, p.organization_id, p.user_id,
                                                                 _uuid(id), _plain(input)))
        return await payload_or_errors(InvoicePayload, run)

    @strawberry.mutation(description="Send to the PAC (status STAMPING; the worker finishes it). The same "
                                     "idempotencyKey returns the same result.")
    async def stamp_invoice(self, info: Ctx, id: strawberry.ID, idempotency_key: str) -> InvoicePayload:
        p = await info.context.require(P.INVOICE_ISSUE)

        async def run():
            return _invoice_payload(await service.request_stamp(info.context.runtime, p.organization_id, p.user_id,
                                                                _uuid(id), idempotency_key))
        return await payload_or_errors(InvoicePayload, run)

    @strawberry.mutation(description=(
        "Send several invoices to the PAC in one call (the accountant's \"stamp the selected drafts\"), at most "
        f"{service.MAX_STAMP_BATCH}. Each item is answered on its own, as stampInvoice would answer it; the accepted "
        "ones are recorded together. Refused as a whole, nothing written, when the list is longer "
        "(TOO_MANY_ITEMS) or names an invoice twice (DUPLICATE_INVOICE)."))
    async def stamp_invoices(
        self, info: Ctx,
        items: Annotated[list[StampInvoiceInput], strawberry.argument(metadata=limits(max_items=service.MAX_STAMP_BATCH))],
    ) -> StampInvoicesPayload:
        p = await info.context.require(P.INVOICE_ISSUE)

        async def run():
            answers = await service.request_stamps(info.context.runtime, p.organization_id, p.user_id,
                                                   [(item.id, item.idempotency_key) for item in items])
            if refused := [e for a in answers for e in a.errors]:
                log_user_errors(refused)
            return StampInvoicesPayload(results=[
                _invoice_payload(a.invoice) if a.invoice is not None else InvoicePayload(user_errors=a.errors)
                for a in answers])
        return await payload_or_errors(StampInvoicesPayload, run)

    @strawberry.mutation(description="Cancel a stamped invoice. reason: 01-04 (Motivo); 01 needs replacementUuid "
                                     "(FolioSustitucion).")
    async def cancel_invoice(self, info: Ctx, id: strawberry.ID, reason: str,
                             replacement_uuid: str | None = None) -> InvoicePayload:
        p = await info.context.require(P.INVOICE_CANCEL)

        async def run():
            return _invoice_payload(await service.cancel_invoice(info.context.runtime, p.organization_id, p.user_id,
                                                                 _uuid(id), reason, replacement_uuid))
        return await payload_or_errors(InvoicePayload, run)


def _status_event(msg: dict) -> InvoiceStatusEvent:
    return InvoiceStatusEvent(invoice_id=strawberry.ID(msg["invoiceId"]), status=InvoiceStatus(msg["status"]),
                              uuid=msg.get("uuid"), code=msg.get("code"), message=msg.get("message"),
                              at=datetime.fromisoformat(msg["at"]))


@strawberry.type
class Subscription:
    # Both listen through the process's one pub/sub connection (shared/pubsub.py). The event's
    # fields depend on the message only, so it is a shared event: built once per message, and each
    # distinct selection of it executed and serialized once for every subscriber (shared/live_graphql.py).
    @strawberry.subscription(description="Status changes of one invoice.")
    async def invoice_status_changed(self, info: Ctx, id: strawberry.ID) -> AsyncGenerator[InvoiceStatusEvent, None]:
        p = await info.context.require(P.INVOICE_READ)
        wanted = str(_uuid(id))
        if await loaders.invoices(info.context, p.organization_id).load(uuid.UUID(wanted)) is None:
            raise NotFoundError("Factura no encontrada.")
        async for msg in info.context.runtime.live.stream(org_channel(p.organization_id), p):
            if msg.data.get("kind") == "invoice_status" and msg.data.get("invoiceId") == wanted:
                yield msg.event(InvoiceStatusEvent, _status_event)

    @strawberry.subscription(description="Status changes of every invoice of the caller's organization.")
    async def invoice_events(self, info: Ctx) -> AsyncGenerator[InvoiceStatusEvent, None]:
        p = await info.context.require(P.INVOICE_READ)
        async for msg in info.context.runtime.live.stream(org_channel(p.organization_id), p):
            if msg.data.get("kind") == "invoice_status":
                yield msg.event(InvoiceStatusEvent, _status_event)


schema = build_schema(query=Query, mutation=Mutation, subscription=Subscription,
                      types=[Invoice, User, Organization])
