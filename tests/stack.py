"""The stack as real processes on loopback, for tests that talk to it as clients do (tests/e2e)
or break it on purpose (tests/faults): subgraphs under uvicorn, the worker, the gateway, and a
real SMTP listener."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.embedded import free_port
from shared.serving import uvicorn_command

ROOT = Path(__file__).resolve().parents[1]


def wait_http_ok(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until `url` answers 200; fails at once if `proc` (the server behind it) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not healthy at {url}")


class Stack:
    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}

    def start(self, name: str, cmd: list[str], health: str | None, env: dict | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if health:
            self.wait(name, health)

    def wait(self, name: str, url: str, timeout: float = 60) -> None:
        try:
            wait_http_ok(url, self.procs[name], timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{name}: {exc}\n{self.log(name)}") from exc

    def log(self, name: str, tail: int = 4000) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-tail:]

    def subgraph_argv(self, name: str, port: int) -> list[str]:
        return uvicorn_command(f"subgraphs.{name}.app:app", host="127.0.0.1", port=port)

    def start_subgraph(self, name: str, port: int) -> None:
        self.start(name, self.subgraph_argv(name, port), f"http://127.0.0.1:{port}/health/ready")
        self.urls[name] = f"http://127.0.0.1:{port}"

    def start_worker(self, env: dict | None = None) -> None:
        self.start("worker", [sys.executable, "-m", "workers.main"], None, env)

    def start_all(self, ports: dict[str, int], gateway_port: int) -> None:
        """Every subgraph in `ports`, the worker and the gateway (env: see the e2e `stack` fixture)."""
        for name, port in ports.items():
            self.start_subgraph(name, port)
        self.start_worker()
        self.start("gateway", [str(ROOT / "supergraph" / "gateway.sh")], f"http://127.0.0.1:{gateway_port}/readiness")
        self.urls["gateway"] = f"http://127.0.0.1:{gateway_port}"

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown code runs."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


class Mailbox:
    """A real SMTP listener (aiosmtpd) that keeps every message it receives; it can be stopped and
    started again on the same port (a mail server outage)."""

    def __init__(self):
        self.messages: list = []
        self.port = free_port()
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                import email
                from email import policy

                msg = email.message_from_bytes(envelope.original_content, policy=policy.default)
                mailbox.messages.append((envelope.rcpt_tos, msg))
                return "250 OK"

        self.handler = Handler()
        self.controller = None
        self.start()

    def start(self):
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list:
        return [m for rcpts, m in self.messages if address in rcpts]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 30):
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.to(address)) >= count:
                return self.to(address)
            await asyncio.sleep(0.1)
        raise AssertionError(f"no mail for {address} after {timeout}s; got {[r for r, _ in self.messages]}")

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
