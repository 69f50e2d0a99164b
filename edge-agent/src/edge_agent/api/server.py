"""Serves the API with uvicorn on a background thread, so the agent owns the main thread."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class ApiServerError(RuntimeError):
    """The API could not start (port taken, bad address)."""


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ApiServerError(f"local API did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("local API on http://%s:%s", self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5.0)
