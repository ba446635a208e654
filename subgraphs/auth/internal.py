"""The auth service's internal HTTP endpoint for the notification worker: mint the single-use link
of one e-mail at the moment it is sent (see `links.mail_link`).

Not part of the GraphQL API and never routed by the gateway. Requests are signed with an HMAC
derived from the key-encryption key every backend service holds (`shared.mail_links`), carry a
timestamp, and are refused outside a five-minute window.
"""

from __future__ import annotations

import json
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared import mail_links
from shared.runtime import Runtime
from subgraphs.auth import links


async def mint_mail_link(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    body = await request.body()
    if len(body) > 4096 or not mail_links.verify(body, request.headers.get(mail_links.SIGNATURE_HEADER, ""), rt.settings):
        return JSONResponse({"error": "forbidden"}, status_code=403)
    try:
        ask = json.loads(body)
        kind, ref, email = ask["kind"], uuid.UUID(str(ask["ref"])), str(ask["email"])
        if kind not in links.LINK_KINDS:
            raise ValueError(kind)
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "bad request"}, status_code=400)
    link = await links.mail_link(rt, kind, ref, email)
    if link is None:
        return JSONResponse({"error": "gone"}, status_code=410)
    return JSONResponse({"url": link.url, "context": link.context, "locale": link.locale, "template": link.template},
                        headers={"Cache-Control": "no-store"})


routes = [Route(mail_links.PATH, mint_mail_link, methods=["POST"])]
