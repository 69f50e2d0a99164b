"""ASGI guards in front of the API: request size caps, overload shedding, request counting."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_trainer.fleet.metrics import FleetMetrics

# Probes and scrapes must answer even when the service is saturated.
UNGUARDED = frozenset({"/healthz", "/readyz", "/metrics"})


class BodyTooLarge(HTTPException):
    """Raised inside ``receive`` when a body streams past its cap.

    An HTTPException, so the framework's body parsing passes it on as a 413 rather than
    turning it into a generic 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


async def _send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Refuses oversized bodies (413) and sheds load (503 + Retry-After) before routing.

    Shedding keeps latency bounded for the requests we do accept, instead of letting a
    burst pile up in the thread pool until every caller times out.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: FleetMetrics,
        limit_for: Callable[[str], int],
        max_concurrent: int,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limit_for = limit_for
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self._in_flight = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        guarded = path not in UNGUARDED and not path.startswith("/api/events")
        if guarded:
            with self._lock:
                busy = self._in_flight >= self.max_concurrent
                if not busy:
                    self._in_flight += 1
            if busy:
                self.metrics.inc("fleet_http_overload_total")
                self.metrics.inc("fleet_http_requests_total", code="503")
                retry = [(b"retry-after", str(self.retry_after_s).encode())]
                await _send_json(send, 503, "the fleet service is busy; retry shortly", retry)
                return
        try:
            await self._limited(scope, receive, send, path)
        finally:
            if guarded:
                with self._lock:
                    self._in_flight -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        limit = self.limit_for(path)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.inc("fleet_http_requests_total", code="413")
            await _send_json(send, 413, f"request body over the limit of {limit} bytes", [])
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.inc("fleet_http_requests_total", code=str(message["status"]))
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            self.metrics.inc("fleet_http_requests_total", code="413")
            await _send_json(send, 413, f"request body over the limit of {limit} bytes", [])
