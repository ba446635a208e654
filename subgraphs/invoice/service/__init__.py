"""Invoice use cases, one module per concern; each function owns its transaction and writes its
outbox event in the same commit. Live pushes happen after the commit; jobs are queued from the
events by the relay (workers/event_jobs.py), never by the request itself.

  issuer.py        fiscal profile, series and folios, CSDs
  customers.py     receivers
  drafts.py        create / edit a draft (typed Draft in ../draft.py), totals and SAT issues
  payments.py      payment complements: payable documents, balances, the Pagos 2.0 complement
  stamp_requests.py  stampInvoice / stampInvoices: the request (one statement for N invoices)
  stamping.py      the worker's stamping
  cancellation.py  cancelInvoice and the worker's cancellation
  documents.py     signed links to XML / PDF
  queries.py       reads
  common.py        clocks, money shape, the lifecycle move, live pushes
"""

from subgraphs.invoice.service.cancellation import (
    cancel_invoice, cancel_job_id, pending_cancellations, poll_cancellation, run_cancellation,
)
from subgraphs.invoice.service.common import money, utcnow
from subgraphs.invoice.service.customers import (
    create_customer, customers_by_ids, customers_page, delete_customer, update_customer,
)
from subgraphs.invoice.service.documents import document_base_path, document_path, verify_document_signature
from subgraphs.invoice.service.drafts import build_engine_invoice, create_invoice, update_invoice
from subgraphs.invoice.service.issuer import (
    activate_csd, active_csd, create_series, get_issuer, list_csds, list_series, notify_expiring_csds, open_csd,
    save_issuer, upload_csd, valid_rfc,
)
from subgraphs.invoice.service.queries import dashboard, history, invoice_by_uuid, invoices_by_ids, invoices_page, waiting
from subgraphs.invoice.service.stamp_requests import MAX_BATCH as MAX_STAMP_BATCH, StampAnswer, request_stamp, request_stamps
from subgraphs.invoice.service.stamping import StampOutcome, stamp_invoice, stamp_job_id

__all__ = [
    "MAX_STAMP_BATCH", "StampAnswer", "StampOutcome", "activate_csd", "active_csd", "build_engine_invoice", "cancel_invoice", "cancel_job_id",
    "create_customer", "create_invoice", "create_series", "customers_by_ids", "customers_page", "dashboard",
    "delete_customer", "document_base_path", "document_path", "get_issuer", "history", "invoice_by_uuid",
    "invoices_by_ids", "invoices_page", "list_csds", "list_series", "money", "notify_expiring_csds", "open_csd",
    "pending_cancellations", "poll_cancellation", "request_stamp", "request_stamps", "run_cancellation", "save_issuer", "stamp_invoice",
    "stamp_job_id", "update_customer", "update_invoice", "upload_csd", "utcnow", "valid_rfc",
    "verify_document_signature", "waiting",
]
