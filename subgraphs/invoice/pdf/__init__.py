"""Representación impresa (PDF) of stamped CFDI 4.0 invoices.

Public API:
    render_invoice_pdf(xml, *, logo_png=None, compress=True) -> bytes
    amount_in_words(amount, currency="MXN") -> str
    verification_url(uuid, rfc_emisor, rfc_receptor, total, sello) -> str   (QR payload)
    tfd_cadena_original(...) -> str
    parse_invoice(xml) -> InvoiceView   (display-only view of the XML)
"""

from .render import LEGEND, render_invoice_pdf, render_view_pdf
from .sat import format_qr_total, tfd_cadena_original, verification_url
from .view import InvoiceView, NotACfdi40Error, parse_invoice
from subgraphs.invoice.cfdi.words import amount_in_words, integer_to_words as integer_in_words

__all__ = [
    "LEGEND",
    "InvoiceView",
    "NotACfdi40Error",
    "amount_in_words",
    "format_qr_total",
    "integer_in_words",
    "parse_invoice",
    "render_invoice_pdf",
    "render_view_pdf",
    "tfd_cadena_original",
    "verification_url",
]
