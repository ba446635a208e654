"""Rendering and sending e-mail: Jinja2 templates (text + HTML, es-MX or en) and one SMTP call.

Failures are sorted into two kinds because the job treats them differently: temporary ones (4xx
replies, refused connections, timeouts, an unreachable invoice service) are retried with backoff;
permanent ones (5xx replies) are final and never retried.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from dataclasses import dataclass
from email import encoders
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr
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


def _header(value: str) -> str | Header:
    """A header value as it goes on the wire: UTF-8 encoded words only when it is not ASCII."""
    return value if value.isascii() else Header(value, "utf-8")


def _address(value: str) -> str:
    """`Name <address>` with a non-ASCII name as an encoded word (the address itself stays as is)."""
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8") if address else value


def _canonical(text: str) -> str:
    """Text in MIME's canonical form (CRLF line breaks, ending with one), as `set_content` made it:
    the parts are base64, which keeps line breaks as they are."""
    return (text if text.endswith("\n") else text + "\n").replace("\r\n", "\n").replace("\n", "\r\n")


def build_message(settings: Settings, *, message_id: str, to_address: str, rendered: Rendered,
                  attachments: list[FetchedAttachment] = ()) -> Message:
    """Text and HTML alternatives, then the attachments: the classic `email.mime` classes
    (compat32), whose headers are plain strings. `EmailMessage` with the default policy parsed
    every header through its registry (the address parser above all) when set: most of the
    sending's CPU under load, for a message whose headers we write ourselves."""
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(_canonical(rendered.text), "plain", "utf-8"))
    body.attach(MIMEText(_canonical(rendered.html), "html", "utf-8"))
    msg = body
    if attachments:
        msg = MIMEMultipart("mixed")
        msg.attach(body)
        for a in attachments:
            maintype, subtype = a.content_type.split("/", 1)
            part = MIMEBase(maintype, subtype)
            part.set_payload(a.content)
            encoders.encode_base64(part)
            part.add_header("Content-Disposition", "attachment", filename=a.filename)
            msg.attach(part)
    msg["From"] = _address(settings.mail_from)
    msg["To"] = _address(to_address)
    msg["Subject"] = _header(rendered.subject)
    msg["Date"] = formatdate(usegmt=True)
    # Stable Message-ID per outgoing message: if a crash makes us send twice, mail systems that
    # deduplicate by Message-ID show it once.
    domain = settings.mail_from.rsplit("@", 1)[-1].strip(">") or "facturacion.local"
    msg["Message-ID"] = f"<{message_id}@{domain}>"  # stable per message: a retried send is the same mail
    return msg


class SmtpConnections:
    """Open SMTP connections, reused from one message to the next.

    A connection per message cost a TCP (and TLS) handshake, EHLO and a name lookup each time:
    aiosmtplib resolves its own host name (`socket.getfqdn`, a thread and often a DNS query) for
    every EHLO unless told, and the server's on every connect. Here the local name is resolved
    once per process, and up to `MAX_IDLE` connections per server and event loop wait for the next
    message. A reused connection the server has dropped meanwhile (idle timeout, restart) fails
    before the message is accepted; that message is retried once on a fresh connection.
    """

    MAX_IDLE = 4

    def __init__(self) -> None:
        # Per event loop (a connection belongs to the loop that opened it), then per server.
        self._idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, list[aiosmtplib.SMTP]]] = (
            weakref.WeakKeyDictionary())
        self._local_hostname: str | None = None

    async def local_hostname(self) -> str:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname

    def _pool(self, settings: Settings) -> list[aiosmtplib.SMTP]:
        servers = self._idle.setdefault(asyncio.get_running_loop(), {})
        return servers.setdefault((settings.smtp_host, settings.smtp_port, settings.smtp_username,
                                   settings.smtp_password, settings.smtp_starttls), [])

    async def _connect(self, settings: Settings, timeout: float) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname=settings.smtp_host, port=settings.smtp_port,
                                 username=settings.smtp_username or None, password=settings.smtp_password or None,
                                 start_tls=settings.smtp_starttls, timeout=timeout,
                                 local_hostname=await self.local_hostname())
        await client.connect()
        return client

    async def send(self, settings: Settings, msg: Message, timeout: float) -> None:
        idle = self._pool(settings)
        while idle:
            client = idle.pop()
            if not client.is_connected:
                continue
            try:
                return await self._send_on(idle, client, msg, timeout)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, ConnectionError):
                continue  # dropped while idle: nothing was accepted; the next one, or a fresh one below
        await self._send_on(idle, await self._connect(settings, timeout), msg, timeout)

    async def _send_on(self, idle: list[aiosmtplib.SMTP], client: aiosmtplib.SMTP, msg: Message,
                       timeout: float) -> None:
        try:
            await client.send_message(msg, timeout=timeout)
        except BaseException:
            await self._discard(client)
            raise
        self._keep(idle, client)

    def _keep(self, idle: list[aiosmtplib.SMTP], client: aiosmtplib.SMTP) -> None:
        if len(idle) < self.MAX_IDLE and client.is_connected:
            idle.append(client)
        else:
            client.close()

    @staticmethod
    async def _discard(client: aiosmtplib.SMTP) -> None:
        """After a failed command the session state is unknown: never reuse it."""
        try:
            client.close()
        except Exception:  # noqa: BLE001 - already broken
            pass

    async def close(self) -> None:
        """QUIT the running loop's idle connections (the worker's shutdown)."""
        for clients in self._idle.pop(asyncio.get_running_loop(), {}).values():
            for client in clients:
                try:
                    await asyncio.wait_for(client.quit(), 2)
                except Exception:  # noqa: BLE001 - closing anyway
                    client.close()


CONNECTIONS = SmtpConnections()


async def send(settings: Settings, msg: Message, *, timeout: float = 15.0) -> None:
    try:
        await CONNECTIONS.send(settings, msg, timeout)
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


