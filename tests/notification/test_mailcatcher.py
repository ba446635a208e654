"""The development mail catcher: messages land as .eml files and are listed over HTTP."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib
import httpx

from shared.embedded import free_port
from subgraphs.notification.mailcatcher import serve


async def test_mailcatcher_saves_and_lists_messages(tmp_path):
    smtp_port, http_port = free_port(), free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve("127.0.0.1", smtp_port, tmp_path, http_port, stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5) as http:
            for _ in range(200):
                try:
                    assert (await http.get("/")).json() == []
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "no-reply@facturacion.local", "ana@example.mx", "Factura A-1"
            msg.set_content("Hola")
            await aiosmtplib.send(msg, hostname="127.0.0.1", port=smtp_port)

            (listed,) = (await http.get("/")).json()
            assert listed["to"] == "ana@example.mx" and listed["subject"] == "Factura A-1"
            raw = await http.get(f"/messages/{listed['file']}")
            assert raw.status_code == 200 and b"Hola" in raw.content
            assert (await http.get("/messages/..%2F..%2Fetc%2Fpasswd")).status_code == 404
        assert len(list(tmp_path.glob("*.eml"))) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
