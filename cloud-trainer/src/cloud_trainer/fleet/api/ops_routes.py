"""Routes that act or report on the service: commands, sample uploads, health, metrics."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from cloud_trainer.fleet.api.deps import Caller, Context
from cloud_trainer.fleet.api.responses import refusals
from cloud_trainer.fleet.api.sample_files import SampleRejected, store_sample
from cloud_trainer.fleet.api.sample_form import (
    CapturedAt,
    CaptureReason,
    ModelName,
    ModelVersion,
    SampleLabel,
)
from cloud_trainer.fleet.commands import CommandError
from cloud_trainer.fleet.store import queries
from edge_agent.protocol.messages import ArgValue, CommandAction, Name
from edge_agent.protocol.topics import IDENT_PATTERN

log = logging.getLogger(__name__)

router = APIRouter()


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: CommandAction
    # The wire message's own key and value types, so what the schema admits the device's
    # Command model admits too (an empty key is refused here, as a field error).
    args: dict[Name, ArgValue] = Field(default_factory=dict, max_length=32)
    expires_s: float | None = Field(default=300.0, gt=0, le=7 * 86400)


class CommandSent(BaseModel):
    cmd_id: str
    device_id: str
    status: str = Field(description="Always 'sent': the broker took it; the ack comes later.")


class SampleStored(BaseModel):
    id: int
    sha256: str
    size: int
    created: bool = Field(description="False when the same bytes were stored before.")


class SampleList(BaseModel):
    samples: list[dict[str, Any]]
    count: int


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    database: str


class NotReady(BaseModel):
    status: str
    problems: list[str]


@router.post(
    "/api/devices/{device_id}/commands",
    status_code=202,
    responses=refusals(400, 401, 404, 413, 422, 503),
)
def send_command(
    device_id: str, body: CommandRequest, context: Context, caller: Caller
) -> CommandSent:
    if context.commands is None:
        raise HTTPException(503, "commands need a broker connection; none is configured")
    try:
        command = context.commands.send(device_id, body.action, body.args, caller, body.expires_s)
    except CommandError as e:
        headers = {"Retry-After": "2"} if e.status_code == 503 else None
        raise HTTPException(e.status_code, str(e), headers=headers) from e
    return CommandSent(cmd_id=command.cmd_id, device_id=device_id, status="sent")


@router.get("/api/commands/{cmd_id}", responses=refusals(404, 503))
def command_status(cmd_id: str, context: Context) -> dict[str, Any]:
    command = context.store.read(lambda c: queries.get_command(c, cmd_id))
    if command is None:
        raise HTTPException(404, f"unknown command {cmd_id!r}")
    return command


@router.post(
    "/api/samples",
    status_code=201,
    response_model=SampleStored,
    responses={
        200: {"model": SampleStored, "description": "The same bytes were stored already."},
        **refusals(400, 401, 413, 415, 422, 500, 503, 507),
    },
)
def upload_sample(
    context: Context,
    caller: Caller,
    file: Annotated[
        UploadFile,
        # Not empty: an empty file is refused (422), so the schema says so.
        File(description="The captured frame or reading.", json_schema_extra={"minLength": 1}),
    ],
    device_id: Annotated[str, Form(pattern=IDENT_PATTERN)],
    captured_at: CapturedAt = None,
    model_name: ModelName = None,
    model_version: ModelVersion = None,
    label: SampleLabel = None,
    reason: CaptureReason = None,
) -> JSONResponse:
    """Captured samples for retraining: bytes on disk by content hash, provenance in the store."""
    provenance = {
        "device_id": device_id,
        "captured_at": None if captured_at is None else captured_at.timestamp(),
        "model_name": model_name,
        "model_version": model_version,
        "label": label,
        "reason": reason,
        "uploaded_by": caller,
    }
    try:
        row = store_sample(context.settings, file, provenance)
    except SampleRejected as e:
        raise HTTPException(e.status_code, str(e)) from e
    sample_id, created = context.store.record_sample(row)
    if created:
        context.metrics.inc("fleet_samples_stored_total")
    body = {"id": sample_id, "sha256": row["sha256"], "size": row["size"], "created": created}
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("/api/samples", responses=refusals(503))
def list_samples(context: Context, device: str | None = None) -> SampleList:
    samples = context.store.read(lambda c: queries.list_samples(c, device))
    return SampleList(samples=samples, count=len(samples))


@router.get("/healthz")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "Database or broker unreachable."}},
)
def readiness(context: Context) -> JSONResponse:
    """Ready when the database answers and the broker session is up."""
    problems = []
    try:
        context.store.ping()
    except (SQLAlchemyError, OSError) as e:
        problems.append(f"database: {type(e).__name__}")
        log.warning("readiness: database check failed: %s", e)
    if not context.broker_connected():
        problems.append("broker: not connected")
    if problems:
        return JSONResponse(
            {"status": "not ready", "problems": problems},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ready", "database": context.store.backend})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(context: Context) -> PlainTextResponse:
    return PlainTextResponse(
        context.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
