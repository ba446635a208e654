"""The invoice subgraph's ASGI app: GraphQL, health, and signed document downloads."""

from __future__ import annotations

import asyncio
import uuid

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shared.config import Settings
from shared.graphql import create_service_app
from shared.runtime import Runtime, build_runtime
from subgraphs.invoice import models as m
from subgraphs.invoice import service
from subgraphs.invoice.schema import schema
from subgraphs.invoice.settings import load_invoice_settings

_TYPES = {"xml": "application/xml; charset=utf-8", "pdf": "application/pdf"}


async def document(request: Request) -> Response:
    """GET /documents/{id}.xml|.pdf?exp=&sig= — the signature is the authorization (403 otherwise)."""
    invoice_id, fmt = request.path_params["invoice_id"], request.path_params["fmt"]
    if fmt not in _TYPES:
        return PlainTextResponse("No encontrado.", status_code=404)
    path = service.document_base_path(invoice_id, fmt)
    rt: Runtime = request.app.state.runtime
    if not service.verify_document_signature(rt.settings, path, request.query_params.get("exp"),
                                             request.query_params.get("sig")):
        return PlainTextResponse("Enlace inválido o vencido.", status_code=403)
    try:
        key = uuid.UUID(invoice_id)
    except ValueError:
        return PlainTextResponse("No encontrado.", status_code=404)
    async with rt.sessionmaker() as session:
        inv = await session.get(m.Invoice, key)
    if inv is None or not inv.xml:
        return PlainTextResponse("No encontrado.", status_code=404)
    name = f"{inv.series}-{inv.folio}-{inv.uuid}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "private, no-store"}
    if fmt == "xml":
        return Response(inv.xml.encode("utf-8"), media_type=_TYPES["xml"], headers=headers)
    from subgraphs.invoice.pdf import render_invoice_pdf

    pdf = await asyncio.to_thread(render_invoice_pdf, inv.xml.encode("utf-8"))
    return Response(pdf, media_type=_TYPES["pdf"], headers=headers)


async def _check_invoice_settings(rt: Runtime) -> None:
    """A bad PAC_PROVIDER stops the service at start (SettingsError), not the first stamp."""
    load_invoice_settings()


def create_app(settings: Settings | None = None, *, runtime_factory=build_runtime):
    return create_service_app(
        "invoice", schema, routes=[Route("/documents/{invoice_id}.{fmt}", document)], settings=settings,
        runtime_factory=runtime_factory, on_startup=_check_invoice_settings,
    )


app = create_app()
