"""A local mail catcher: an SMTP server that keeps every message as a .eml file, plus a tiny HTTP
endpoint listing them as JSON. For development only (no authentication, loopback by default).

    python -m subgraphs.notification.mailcatcher --port 1025 --dir .data/mail --http-port 8025

- `GET /`                 -> [{"file", "from", "to", "subject", "date", "size"}], newest first
- `GET /messages/<file>`  -> the raw message (message/rfc822)
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import signal
import time
import uuid
from pathlib import Path

from aiosmtpd.controller import Controller


class SaveToDir:
    """aiosmtpd handler: one file per accepted message."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        (self.directory / name).write_bytes(data)
        return "250 Message accepted for delivery"


def list_messages(directory: Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob("*.eml"), reverse=True):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.append({"file": path.name, "from": msg.get("From"), "to": msg.get("To"), "subject": msg.get("Subject"),
                    "date": msg.get("Date"), "size": path.stat().st_size})
    return out


async def _http(directory: Path, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request_line = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # headers are not needed
        path = request_line[1] if len(request_line) > 1 else "/"
        status, ctype, body = "404 Not Found", "text/plain", b"not found"
        if path in ("/", "/messages"):
            status, ctype, body = "200 OK", "application/json", json.dumps(list_messages(directory)).encode()
        elif path.startswith("/messages/"):
            name = path.rsplit("/", 1)[-1]
            target = directory / name
            # Only plain file names inside the directory: no path traversal.
            if name.endswith(".eml") and "/" not in name and ".." not in name and target.is_file():
                status, ctype, body = "200 OK", "message/rfc822", target.read_bytes()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
    finally:
        writer.close()


async def serve(host: str, port: int, directory: Path, http_port: int, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when run as a program)."""
    controller = Controller(SaveToDir(directory), hostname=host, port=port)
    controller.start()
    server = await asyncio.start_server(lambda r, w: _http(directory, r, w), host, http_port)
    print(f"mailcatcher: SMTP {host}:{port}, HTTP http://{host}:{http_port}/, saving to {directory}", flush=True)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        controller.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local SMTP catcher for development")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default=".data/mail")
    parser.add_argument("--http-port", type=int, default=8025)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, Path(args.dir), args.http_port))


if __name__ == "__main__":
    main()
