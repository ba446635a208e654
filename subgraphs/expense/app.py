"""The expense subgraph's ASGI app (port 4003): GraphQL, health, and signed receipt upload/download.

The signature in the URL is the authorization for both routes: it is handed out only through
GraphQL, to the submitter (upload) and to members who may read the expense (download)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.config import Settings
from shared.crypto import verify_signed_path
from shared.graphql import create_service_app
from shared.object_store import ObjectStoreError
from shared.runtime import Runtime, build_runtime
from subgraphs.expense import service
from subgraphs.expense.schema import schema

log = logging.getLogger(__name__)


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _signed_receipt_id(request: Request, path_of, purpose: str) -> uuid.UUID | None:
    """The receipt the URL is for, if its signature is good and unexpired."""
    rt: Runtime = request.app.state.runtime
    try:
        receipt_id = uuid.UUID(request.path_params["receipt_id"])
    except ValueError:
        return None
    q = request.query_params
    ok = verify_signed_path(path_of(receipt_id), q.get("exp"), q.get("sig"), settings=rt.settings, purpose=purpose)
    return receipt_id if ok else None


async def upload(request: Request) -> Response:
    """PUT /receipts/{id}?exp=&sig= with the file as the body."""
    rt: Runtime = request.app.state.runtime
    receipt_id = _signed_receipt_id(request, service.upload_path, service.UPLOAD_PURPOSE)
    if receipt_id is None:
        return _refusal(403, "INVALID_SIGNATURE", "Enlace inválido o vencido.")
    limit = rt.settings.receipt_max_bytes
    body = bytearray()
    async for chunk in request.stream():  # never buffer more than the limit
        body += chunk
        if len(body) > limit:
            return _refusal(413, "RECEIPT_TOO_LARGE", "El archivo supera el límite permitido.")
    try:
        r = await service.store_receipt(rt, receipt_id, bytes(body))
    except service.UploadRefused as exc:
        return _refusal(exc.status, exc.code, str(exc))
    if r.ocr_status == "PENDING":
        try:
            await service.enqueue_ocr(rt, r.id)
        except Exception:  # noqa: BLE001 - the worker's sweep enqueues PENDING receipts
            log.warning("could not enqueue OCR for receipt %s; the sweep will", r.id)
    return JSONResponse({"id": str(r.id), "contentType": r.content_type, "size": r.size}, status_code=201)


async def download(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    receipt_id = _signed_receipt_id(request, service.download_path, service.DOWNLOAD_PURPOSE)
    if receipt_id is None:
        return _refusal(403, "INVALID_SIGNATURE", "Enlace inválido o vencido.")
    try:
        found = await service.receipt_file(rt, receipt_id)
    except ObjectStoreError as exc:
        log.warning("receipt %s not readable (%s)", receipt_id, exc)
        return _refusal(503, "STORE_UNAVAILABLE", "El comprobante no está disponible por ahora; intenta de nuevo.")
    if found is None:
        return _refusal(404, "NOT_FOUND", "Comprobante no encontrado.")
    r, data = found
    ext = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "application/pdf": "pdf",
           "application/xml": "xml"}[r.content_type]
    return Response(data, media_type=r.content_type, headers={
        "Content-Disposition": f'attachment; filename="comprobante-{r.id}.{ext}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"})


def create_app(settings: Settings | None = None, *, runtime_factory: Callable[[str, Settings], Runtime] = build_runtime):
    return create_service_app("expense", schema, settings=settings, runtime_factory=runtime_factory, routes=[
        Route("/receipts/{receipt_id}", upload, methods=["PUT"]),
        Route("/receipts/{receipt_id}/file", download, methods=["GET"]),
    ])


app = create_app()
