"""`make dev` itself (shared.devstack) under a crash: the killed worker is restarted, the gateway
and the subgraphs keep serving, and SIGTERM stops it all with exit 0 and no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from shared.embedded import free_port
from tests.faults.helpers import wait_until
from tests.faults.test_supervisor import alive, started
from tests.stack import ROOT

NAMES = ("auth", "invoice", "notification", "worker", "gateway", "mail")


def test_make_dev_restarts_a_killed_worker_and_stops_cleanly(faults_database_url, redis_server, tmp_path):
    redis_server.start()
    ports = {n: free_port() for n in ("GATEWAY", "AUTH", "INVOICE", "EXPENSE", "NOTIFICATION", "SMTP", "MAILCATCHER_HTTP")}
    env = {**os.environ, "DATABASE_URL": faults_database_url, "REDIS_URL": redis_server.url, "APP_ENV": "development",
           **{f"{n}_PORT": str(p) for n, p in ports.items()}}
    out = tmp_path / "dev.log"
    dev = subprocess.Popen([sys.executable, "-m", "shared.devstack"], cwd=ROOT, env=env, stdout=open(out, "wb"),
                           stderr=subprocess.STDOUT, start_new_session=True)
    log = lambda: out.read_text(errors="replace")  # noqa: E731
    try:
        wait_until(lambda: "Ctrl-C detiene todo" in log() or dev.poll() is not None, "make dev ready", timeout=120)
        assert dev.poll() is None, log()
        pids = {n: started(log(), n)[0] for n in NAMES}

        os.kill(pids["worker"], signal.SIGKILL)
        wait_until(lambda: len(started(log(), "worker")) == 2 or dev.poll() is not None, "worker restarted")
        assert dev.poll() is None, log()
        assert "worker exited (code -9); restarting in" in log()
        assert alive(started(log(), "worker")[1])
        for name in NAMES:
            if name != "worker":
                assert alive(pids[name]) and started(log(), name) == [pids[name]], name
        gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
        assert httpx.get(f"{gateway}/readiness", timeout=5).status_code == 200
        assert httpx.post(f"{gateway}/graphql", json={"query": "{ __typename }"}, timeout=5).json() == {
            "data": {"__typename": "Query"}}

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(30) == 0, log()
        everything = [p for n in NAMES for p in started(log(), n)]
        assert not [p for p in everything if alive(p)]
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
