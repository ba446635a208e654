"""`make dev`'s supervisor: a crashed process is restarted (and the others are left alone), a
SIGTERM stops everything and leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.faults.helpers import wait_until
from tests.stack import ROOT

SLEEPER = "import time\nwhile True: time.sleep(1)"
PROGRAM = f"""
import sys
from shared.supervisor import Supervisor
s = Supervisor(stop_grace=5)
for name in ("alpha", "beta"):
    s.add(name, [sys.executable, "-c", {SLEEPER!r}])
raise SystemExit(s.run())
"""


def started(log: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"{name} started \(pid (\d+)\)", log)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def supervisor(tmp_path):
    """The supervisor running alpha and beta, once both have started: (process, log reader)."""
    out = open(tmp_path / "supervisor.log", "wb")
    sup = subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    log = lambda: (tmp_path / "supervisor.log").read_text()  # noqa: E731
    try:
        wait_until(lambda: started(log(), "alpha") and started(log(), "beta"), "both programs started")
        yield sup, log
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()


def test_a_killed_process_is_restarted_and_sigterm_stops_everything(supervisor):
    sup, log = supervisor
    alpha, beta = started(log(), "alpha")[0], started(log(), "beta")[0]

    os.kill(alpha, signal.SIGKILL)  # a crash
    wait_until(lambda: len(started(log(), "alpha")) == 2, "alpha restarted")
    assert re.search(r"alpha exited \(code -9\); restarting in [\d.]+ s", log())
    new_alpha = started(log(), "alpha")[1]
    assert alive(new_alpha) and new_alpha != alpha
    assert alive(beta) and started(log(), "beta") == [beta]  # untouched
    assert sup.poll() is None

    sup.send_signal(signal.SIGTERM)
    assert sup.wait(20) == 0
    assert not alive(new_alpha) and not alive(beta)


def test_the_supervisor_killed_outright_takes_its_programs_with_it(supervisor):
    sup, log = supervisor
    children = started(log(), "alpha") + started(log(), "beta")
    sup.kill()  # no handler runs: only the kernel (PR_SET_PDEATHSIG) can stop the children
    sup.wait()
    wait_until(lambda: not any(alive(p) for p in children), "children gone after the supervisor died")
