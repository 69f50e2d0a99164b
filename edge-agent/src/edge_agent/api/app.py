"""FastAPI routes of the local API; reads go straight to the agent, changes need the token."""

from __future__ import annotations

import hmac
import json
import re
import threading
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError

from edge_agent import __version__
from edge_agent.api.metrics import render_metrics
from edge_agent.config.extras import ExtraMissing, require_opencv
from edge_agent.features.image_header import (
    ImageHeaderError,
    ImageTooLarge,
    check_image_size,
    pixel_limit,
)
from edge_agent.inference import InputError, OutputError
from edge_agent.protocol.messages import Command, utc_now
from edge_agent.protocol.topics import IDENT_PATTERN
from edge_agent.sources import Sample

if TYPE_CHECKING:
    from edge_agent.runtime.agent import EdgeAgent

IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/webp",
    "image/gif",
    "application/octet-stream",
)
# What a camera or an operator sends; TIFF and the rarer formats OpenCV reads are refused
# before any decoder sees them.
IMAGE_FORMATS = frozenset({"jpeg", "png", "bmp", "webp", "gif"})
_FORMAT_NAMES = "JPEG, PNG, BMP, WebP, GIF"
_VISIT_ID = re.compile(IDENT_PATTERN)


class _TooLarge(Exception):
    pass


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def _decode_image(body: bytes, max_pixels: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Size read from the header first: a bomb of a few hundred bytes can claim gigabytes."""
    if not body:
        raise HTTPException(400, "empty body: send an image (JPEG, PNG) or a JSON feature row")
    try:
        check_image_size(body, max_pixels, IMAGE_FORMATS)
    except ImageTooLarge as e:
        raise HTTPException(413, f"{e}: send a smaller image") from e
    except ImageHeaderError as e:
        raise HTTPException(400, f"body is not a decodable image ({_FORMAT_NAMES}): {e}") from e
    try:
        require_opencv("decoding an image")
    except ExtraMissing as e:
        raise HTTPException(415, f"{e}; or send a JSON feature row") from e
    import cv2  # only here: a weather station's API never loads OpenCV

    try:
        frame = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:  # OpenCV's own limits (OPENCV_IO_MAX_IMAGE_PIXELS) refuse it
        raise HTTPException(400, f"body is not a decodable image ({_FORMAT_NAMES})") from e
    if frame is None or frame.ndim != 3:
        raise HTTPException(400, f"body is not a decodable image ({_FORMAT_NAMES})")
    return frame.astype(np.uint8, copy=False)


def _feature_row(body: bytes) -> dict[str, float]:
    try:
        data = json.loads(body, parse_constant=lambda c: float("nan"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from e
    row = data.get("features") if isinstance(data, dict) else None
    if not isinstance(row, dict) or not row:
        raise HTTPException(422, 'expected {"features": {"name": number, ...}}')
    bad = [k for k, v in row.items() if not isinstance(v, int | float) or isinstance(v, bool)]
    if bad:
        raise HTTPException(422, f"features must be numbers: {', '.join(map(str, bad[:5]))}")
    return {str(k): float(v) for k, v in row.items()}


def create_app(
    agent: EdgeAgent,
    *,
    token: str | None,
    max_request_bytes: int = 8 * 1024 * 1024,
    max_concurrent_predict: int = 2,
    max_image_pixels: int | None = None,
) -> FastAPI:
    """``max_image_pixels`` defaults to the agent's ``api.max_image_megapixels``."""
    image_pixels = (
        max_image_pixels
        if max_image_pixels is not None
        else pixel_limit(agent.config.api.max_image_megapixels)
    )
    app = FastAPI(title="edge-agent local API", version=__version__, docs_url=None, redoc_url=None)
    predict_gate = threading.BoundedSemaphore(max_concurrent_predict)

    def require_token(request: Request) -> None:
        if token is None:
            raise HTTPException(403, "no API token configured: state-changing calls are disabled")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        workers = {
            name: {"alive": agent.supervisor.alive(name), "restarts": state.restarts}
            for name, state in agent.supervisor.workers.items()
        }
        ok = agent.supervisor.healthy
        body = {"status": "ok" if ok else "failing", "state": agent.state, "workers": workers}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        serving = agent.source is None or agent.supervisor.alive("inference")
        endpoint = agent.link.current_endpoint
        body = {
            "ready": serving,
            "model": agent.slot.current.spec.name,
            "broker_connected": agent.link.connected.is_set(),
            "broker_endpoint": None if endpoint is None else endpoint.address,
            "outbox_depth": agent.store.depth,
        }
        return JSONResponse(body, status_code=200 if serving else 503)

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(render_metrics(agent), media_type="text/plain; version=0.0.4")

    @app.get("/model")
    def model() -> dict[str, Any]:
        engine = agent.slot.current
        spec = engine.spec
        return {
            "name": spec.name,
            "version": agent.model_version(engine),
            "sha256": engine.sha256,
            "task": spec.task,
            "labels": spec.labels,
            "inputs": [i.model_dump(mode="json") for i in spec.inputs],
            "preprocessing": spec.preprocessing.kind,
            "decision_threshold": spec.decision_threshold,
            "latency_budget_ms": spec.latency_budget_ms,
            "data_version": spec.data_version,
        }

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        # Shed before reading or decoding anything: under overload a refusal must cost far
        # less than a prediction, or the refusals themselves starve the accepted calls.
        if not predict_gate.acquire(blocking=False):
            raise HTTPException(503, "busy: too many predictions at once", {"Retry-After": "1"})
        try:
            try:
                body = await _read_capped(request, max_request_bytes)
            except _TooLarge:
                raise HTTPException(413, f"request larger than {max_request_bytes} bytes") from None
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            ts = utc_now()
            input_id = f"api-{uuid.uuid4().hex[:12]}"
            if content_type == "application/json":
                sample = Sample(ts=ts, input_id=input_id, features=_feature_row(body))
            elif content_type in IMAGE_TYPES:
                frame = await run_in_threadpool(_decode_image, body, image_pixels)
                sample = Sample(ts=ts, input_id=input_id, frame=frame)
            else:
                raise HTTPException(
                    415, f"unsupported content type {content_type!r}: send image/* or JSON"
                )
            prediction, engine = await run_in_threadpool(agent.slot.predict, sample)
        except InputError as e:
            raise HTTPException(422, str(e)) from e
        except OutputError as e:
            raise HTTPException(500, f"model output refused: {e}") from e
        finally:
            predict_gate.release()
        return {
            "label": prediction.label,
            "confidence": prediction.confidence,
            "scores": prediction.scores,
            "latency_ms": prediction.latency_ms,
            "model": engine.spec.name,
            "version": agent.model_version(engine),
        }

    @app.get("/drift")
    def drift() -> dict[str, object]:
        if agent.drift_provider is None:
            raise HTTPException(404, "drift monitor not configured")
        return agent.drift_provider()

    @app.get("/visits")
    def visits(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        if agent.visits is None:
            raise HTTPException(404, "visits are not tracked on this device")
        items = agent.visits.recent(limit)
        return {"visits": items, "count": len(items)}

    @app.get("/visits/{visit_id}/snapshot")
    def visit_snapshot(visit_id: str) -> Response:
        if agent.visits is None:
            raise HTTPException(404, "visits are not tracked on this device")
        data = agent.visits.snapshot(visit_id) if _VISIT_ID.fullmatch(visit_id) else None
        if data is None:
            raise HTTPException(404, f"no snapshot kept for visit {visit_id!r}")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/commands/{action}")
    async def command(action: str, request: Request) -> dict[str, Any]:
        require_token(request)
        try:
            body = await _read_capped(request, 64 * 1024)
            args = json.loads(body) if body else {}
        except _TooLarge:
            raise HTTPException(413, "command arguments larger than 64 KiB") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPException(400, f"arguments are not valid JSON: {e}") from e
        # A client retrying after a timeout sends the same Idempotency-Key: the command
        # runs once and the retry gets its outcome again.
        key = request.headers.get("idempotency-key") or uuid.uuid4().hex
        try:
            cmd = Command(
                device_id=agent.config.device_id,
                ts=utc_now(),
                seq=0,
                cmd_id=f"local-{key}",
                action=action,
                args=args,
                issued_by="local-api",
            )
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise HTTPException(422, f"invalid command: {problems}") from e
        ack = await run_in_threadpool(agent.run_command, cmd)
        status = 200 if ack.result == "done" else 409
        if status != 200:
            raise HTTPException(status, f"{ack.result}: {ack.detail}")
        return {"cmd_id": ack.cmd_id, "result": ack.result, "detail": ack.detail}

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    return app
