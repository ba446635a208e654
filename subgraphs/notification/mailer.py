"""Rendering and sending e-mail: Jinja2 templates (text + HTML, es-MX or en) and one SMTP call.

Failures are sorted into two kinds because the job treats them differently: temporary ones (4xx
replies, refused connections, timeouts, an unreachable invoice service) are retried with backoff;
permanent ones (5xx replies) are final and never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from shared import mail_links
from shared.config import Settings
from subgraphs.notification.decisions import normalize_locale

TEMPLATES = Path(__file__).parent / "templates"


class TemporaryFailure(Exception):
    """Worth retrying later."""


class PermanentFailure(Exception):
    """Retrying cannot help (the server refused the message or the recipient for good)."""


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    # Escape everything in HTML: names, customer data and links come from users.
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(template: str, locale: str, context: dict[str, Any]) -> Rendered:
    locale = normalize_locale(locale)  # a template exists for every locale this returns
    values = {"locale": locale, **context}
    text_tmpl = _env.get_template(f"{template}.{locale}.txt")
    module = text_tmpl.make_module(values)  # the text template declares `subject`
    html = _env.get_template(f"{template}.{locale}.html").render(values)
    return Rendered(subject=str(module.subject).strip(), text=str(module).strip() + "\n", html=html)


@dataclass(frozen=True)
class FetchedAttachment:
    filename: str
    content_type: str
    content: bytes


async def fetch_attachments(settings: Settings, attachments: list[dict[str, Any]]) -> list[FetchedAttachment]:
    """Download documents from the invoice service (signed, expiring paths) at send time."""
    out = []
    if not attachments:
        return out
    try:
        async with httpx.AsyncClient(base_url=settings.invoice_service_url, timeout=15.0) as client:
            for a in attachments:
                resp = await client.get(a["path"])
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    raise TemporaryFailure(f"documento {a['path']}: HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    # An expired or wrong signature will not get better by waiting.
                    raise PermanentFailure(f"documento {a['path']}: HTTP {resp.status_code}")
                out.append(FetchedAttachment(a["filename"], a["content_type"], resp.content))
    except httpx.HTTPError as exc:
        raise TemporaryFailure(f"servicio de facturas inaccesible: {exc!r}") from exc
    return out


# The template variable each kind of link fills.
LINK_VARIABLES = {"sign_up": "verification_url", "verify_email": "verification_url", "reset_password": "reset_url",
                  "invitation": "accept_url"}


@dataclass(frozen=True)
class MintedLink:
    context: dict[str, Any]  # template values, the link among them
    locale: str | None = None
    template: str | None = None  # auth may ask for another message (e.g. the address already has an account)


class LinkGone(PermanentFailure):
    """Nothing to send: the account does not exist, or the link was used, expired or revoked."""


async def fetch_link(settings: Settings, link: dict[str, str], to_address: str) -> MintedLink:
    """Template values for a single-use link, minted by auth now; never stored anywhere here."""
    body = mail_links.request_body(link["kind"], link["ref"], to_address)
    try:
        async with httpx.AsyncClient(base_url=settings.auth_service_url, timeout=15.0) as client:
            resp = await client.post(mail_links.PATH, content=body, headers={
                "Content-Type": "application/json", mail_links.SIGNATURE_HEADER: mail_links.sign(body, settings)})
    except httpx.HTTPError as exc:
        raise TemporaryFailure(f"servicio de autenticación inaccesible: {exc!r}") from exc
    if resp.status_code == 410:
        raise LinkGone("sin envío: no hay cuenta, o el enlace ya se usó, venció o fue revocado")
    if resp.status_code != 200:
        raise TemporaryFailure(f"enlace {link['kind']}: HTTP {resp.status_code}")
    minted = resp.json()
    context = dict(minted.get("context") or {})
    if minted.get("url"):
        context[LINK_VARIABLES[link["kind"]]] = minted["url"]
    return MintedLink(context, minted.get("locale"), minted.get("template"))


def build_message(settings: Settings, *, message_id: str, to_address: str, rendered: Rendered,
                  attachments: list[FetchedAttachment] = ()) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to_address
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(usegmt=True)
    # Stable Message-ID per outgoing message: if a crash makes us send twice, mail systems that
    # deduplicate by Message-ID show it once.
    domain = settings.mail_from.rsplit("@", 1)[-1].strip(">") or "facturacion.local"
    msg["Message-ID"] = f"<{message_id}@{domain}>"  # stable per message: a retried send is the same mail
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    for a in attachments:
        maintype, subtype = a.content_type.split("/", 1)
        msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return msg


async def send(settings: Settings, msg: EmailMessage, *, timeout: float = 15.0) -> None:
    try:
        await aiosmtplib.send(
            msg,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password or None,
            start_tls=settings.smtp_starttls,
            timeout=timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if codes and all(500 <= c < 600 for c in codes):
            raise PermanentFailure(detail) from exc
        raise TemporaryFailure(detail) from exc
    except aiosmtplib.SMTPResponseException as exc:
        if 500 <= exc.code < 600:
            raise PermanentFailure(f"{exc.code} {exc.message}") from exc
        raise TemporaryFailure(f"{exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        # Connection refused, timeouts, dropped connections: the server may be back later.
        raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc


