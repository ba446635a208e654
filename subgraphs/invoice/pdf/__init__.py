"""Representación impresa (PDF) of stamped CFDI 4.0 invoices.

Public API:
    render_invoice_pdf(xml, *, logo_png=None, compress=True) -> bytes
    amount_in_words(amount, currency="MXN") -> str
    verification_url(uuid, rfc_emisor, rfc_receptor, total, sello) -> str   (QR payload)
    parse_invoice(xml) -> InvoiceView   (display-only view of the XML; the TFD cadena original,
                                         from the engine's SAT XSLT, is `view.timbre.cadena`)
"""

from .render import LEGEND, render_invoice_pdf, render_view_pdf
from .sat import format_qr_total, verification_url
from .view import InvoiceView, NotACfdi40Error, parse_invoice
from sat.cfdi.words import amount_in_words

__all__ = [
    "LEGEND",
    "InvoiceView",
    "NotACfdi40Error",
    "amount_in_words",
    "format_qr_total",
    "parse_invoice",
    "render_invoice_pdf",
    "render_view_pdf",
    "verification_url",
]
