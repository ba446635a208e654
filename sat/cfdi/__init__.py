"""CFDI 4.0 domain engine: pure functions, no I/O beyond reading our own resource files.

Pipeline for issuing an invoice:

    Invoice (models) --compute_totals--> amounts filled (Decimal, ROUND_HALF_UP per concept)
        --check_invoice(now)--> RuleIssue list (SAT CFDI40xxx codes), must be empty
        --build_tree--> cfdi:Comprobante lxml tree (namespaces/attribute order as SAT expects)
        --sign_cfdi(csd)--> NoCertificado, Certificado, Sello (RSA-SHA256 over the cadena original
                           produced by SAT's cadenaoriginal_4_0.xslt)
        --validate_xsd(mode="lean")--> schema issues (cfdv40 + TFD 1.1 + Pagos 2.0), must be
                           empty; "lean" leaves c_ClaveProdServ/c_CodigoPostal membership to
                           check_invoice (30x faster); mode="full" is SAT's XSD verbatim
        (prepare_for_stamping runs all of the above and refuses with every issue: the stamping path's
     one call; validate_for_stamping checks a tree the caller sealed itself)
    --to_bytes--> XML sent to the PAC, which appends the TimbreFiscalDigital (see tfd.py for
                      the sandbox simulator)

A payment CFDI (type P) carries a pago20:Pagos complement whose derived amounts come from
compute_payments. For received/stored CFDIs: parse_cfdi (hardened parser) and verify_cfdi (Sello, SelloSAT,
SelloCFD == Sello). SAT's XSD/XSLT/catalogs live in resources/ (see resources/SOURCES.md).
"""

from .build import build_tree, build_xml, to_bytes
from .cadena import cadena_original, tfd_cadena_original
from .cancellation import (
    REASONS as CANCELLATION_REASONS,
)
from .cancellation import (
    acceptance_exemption,
    cancellation_deadline,
    check_cancellation_request,
    requires_receiver_acceptance,
)
from .catalogs import currency_decimals, search_catalog
from .csd import Csd, CsdError, check_rfc, load_csd, sign_cfdi
from .models import (
    Concept,
    GlobalInformation,
    Invoice,
    Issuer,
    Payment,
    PaymentsComplement,
    PaymentTax,
    PaymentTotals,
    Receiver,
    RelatedCfdis,
    RelatedDocument,
    Tax,
    TaxTotal,
    ThirdParty,
    TimbreFiscalDigital,
)
from .parse import CfdiParseError, parse_cfdi, parse_tree
from .payments import compute_payment, compute_payments, prorate_document_taxes
from .rules import RuleIssue, check_invoice
from .stamping import StampingRefused, prepare_for_stamping, validate_for_stamping
from .tfd import stamp_cfdi
from .totals import compute_totals
from .validate import XsdIssue, validate_xsd
from .verify import VerificationResult, directory_lookup, verify_cfdi
from .words import amount_in_words
from .xmlsafe import UnsafeXmlError, parse_xml

__all__ = [
    "CANCELLATION_REASONS",
    "CfdiParseError",
    "Concept",
    "Csd",
    "CsdError",
    "GlobalInformation",
    "Invoice",
    "Issuer",
    "Payment",
    "PaymentTax",
    "PaymentTotals",
    "PaymentsComplement",
    "Receiver",
    "RelatedCfdis",
    "RelatedDocument",
    "RuleIssue",
    "StampingRefused",
    "Tax",
    "TaxTotal",
    "ThirdParty",
    "TimbreFiscalDigital",
    "UnsafeXmlError",
    "VerificationResult",
    "XsdIssue",
    "acceptance_exemption",
    "amount_in_words",
    "build_tree",
    "build_xml",
    "cadena_original",
    "cancellation_deadline",
    "check_cancellation_request",
    "check_invoice",
    "check_rfc",
    "compute_payment",
    "compute_payments",
    "compute_totals",
    "currency_decimals",
    "directory_lookup",
    "load_csd",
    "parse_cfdi",
    "parse_tree",
    "parse_xml",
    "prepare_for_stamping",
    "prorate_document_taxes",
    "requires_receiver_acceptance",
    "search_catalog",
    "sign_cfdi",
    "stamp_cfdi",
    "tfd_cadena_original",
    "to_bytes",
    "validate_for_stamping",
    "validate_xsd",
    "verify_cfdi",
]
