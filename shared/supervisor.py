"""A small process supervisor for `make dev`: one crashed process is restarted, the rest keep serving.

Every program runs in its own process group (so a restart or a stop reaches its children too) with
its output prefixed by its name. A program that exits on its own is restarted after a backoff that
doubles on each quick crash (0.5 s … 30 s) and starts over once it has stayed up for a while; each
exit and restart is logged. SIGINT/SIGTERM stop everything: SIGTERM to every group, SIGKILL to what
is still alive after the grace period, exit status 0. On Linux each child also gets SIGTERM if the
supervisor itself dies (PR_SET_PDEATHSIG), so not even `kill -9` of the supervisor leaves orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0  # up this long: the next crash starts the backoff over
STOP_GRACE = 10.0


@dataclass
class Program:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None
    restarts: int = 0
    _pump: threading.Thread | None = field(default=None, repr=False)


# Loaded once here: a forked child (pump threads are running) must not dlopen before exec.
try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when the supervisor dies (Linux only)."""
    _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, *, out=None, stop_grace: float = STOP_GRACE):
        self.programs: dict[str, Program] = {}
        self.out = out or sys.stdout
        self.stop_grace = stop_grace
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.programs[name] = Program(name, list(argv), env, cwd)

    # --- output ---------------------------------------------------------------------------------

    def say(self, name: str, line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        width = max((len(n) for n in self.programs), default=8)
        with self._lock:
            self.out.write(f"{stamp} {name.ljust(width)} | {line.rstrip()}\n")
            self.out.flush()

    def _pump(self, prog: Program, stream) -> None:
        for raw in iter(stream.readline, b""):
            self.say(prog.name, raw.decode("utf-8", "replace"))
        stream.close()

    # --- lifecycle ------------------------------------------------------------------------------

    def _start(self, prog: Program) -> None:
        prog.proc = subprocess.Popen(prog.argv, env=prog.env, cwd=prog.cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent if _LIBC is not None else None)
        prog.started_at, prog.restart_at = time.monotonic(), None
        prog._pump = threading.Thread(target=self._pump, args=(prog, prog.proc.stdout), daemon=True)
        prog._pump.start()
        self.say("supervisor", f"{prog.name} started (pid {prog.proc.pid})")

    def _reap(self, prog: Program, now: float) -> None:
        code = prog.proc.returncode
        if now - prog.started_at >= STABLE_AFTER:
            prog.backoff = BACKOFF_FIRST
        prog.restart_at = now + prog.backoff
        self.say("supervisor", f"{prog.name} exited (code {code}); restarting in {prog.backoff:.1f} s")
        prog.backoff = min(prog.backoff * 2, BACKOFF_MAX)
        prog.proc = None

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def run(self) -> int:
        """Start every program and keep them running until SIGINT/SIGTERM; returns 0."""
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for prog in self.programs.values():
                self._start(prog)
            while not self._stop.wait(0.2):
                now = time.monotonic()
                for prog in self.programs.values():
                    if prog.proc is not None and prog.proc.poll() is not None:
                        self._reap(prog, now)
                    elif prog.proc is None and prog.restart_at is not None and now >= prog.restart_at:
                        prog.restarts += 1
                        self._start(prog)
        finally:
            self.stop_all()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 0

    def stop_all(self) -> None:
        running = [p for p in self.programs.values() if p.proc is not None and p.proc.poll() is None]
        self.say("supervisor", "stopping " + ", ".join(p.name for p in running) if running else "stopping")
        for prog in running:
            _signal_group(prog.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for prog in running:
            try:
                prog.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("supervisor", f"{prog.name} did not stop in {self.stop_grace:.0f} s; killing it")
                _signal_group(prog.proc, signal.SIGKILL)
                prog.proc.wait()
            # Whatever the program left in its group (a shell's children) goes with it.
            _signal_group(prog.proc, signal.SIGKILL)
        for prog in self.programs.values():
            if prog._pump is not None:
                prog._pump.join(2)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
