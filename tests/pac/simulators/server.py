"""Run a Starlette app under uvicorn on a free loopback port, in a thread, for one test session."""

from __future__ import annotations

import threading
import time

import uvicorn

from shared.embedded import free_port


class SimServer:
    def __init__(self, app, on_stop=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._on_stop = on_stop
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "SimServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("simulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._on_stop:
            self._on_stop()  # release handlers hanging on purpose
        self.server.should_exit = True
        self.thread.join(timeout=10)
