"""Routes over the fleet's state: devices, registration, alerts, releases, policy actions."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.fleet.api.deps import Caller, Context
from cloud_trainer.fleet.api.responses import refusals
from cloud_trainer.fleet.store import queries
from edge_agent.protocol import DeviceKind
from edge_agent.protocol.topics import IDENT_PATTERN

router = APIRouter(prefix="/api")

IdentQuery = Annotated[str | None, Query(pattern=IDENT_PATTERN)]
# Row ids fit a signed 64-bit column: a larger number is a 422, not a database overflow.
AlertId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


class DeviceRegistration(BaseModel):
    """A device announced by provisioning, before (or after) it first connects."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=IDENT_PATTERN)
    site: str = Field(pattern=IDENT_PATTERN)
    kind: DeviceKind | None = None
    groups: list[Annotated[str, Field(pattern=IDENT_PATTERN)]] = Field(
        default_factory=list, max_length=32
    )
    model_name: str | None = Field(default=None, pattern=IDENT_PATTERN)


class DeviceList(BaseModel):
    devices: list[dict[str, Any]]
    count: int = Field(description="Devices on this page.")
    now: float = Field(description="The service's clock, so a page can age last_seen.")
    total: int | None = Field(default=None, description="Devices matching, all pages.")
    next_offset: int | None = Field(
        default=None, description="The offset of the next page; null on the last one."
    )


class Registration(BaseModel):
    device: dict[str, Any] | None
    created: bool
    by: str = Field(description="Who registered it (the token's owner).")


class AlertList(BaseModel):
    alerts: list[dict[str, Any]]
    count: int


class AlertAcknowledged(BaseModel):
    alert_id: int
    acknowledged_by: str


class ReleaseList(BaseModel):
    releases: list[dict[str, Any]]
    count: int


class VisitList(BaseModel):
    visits: list[dict[str, Any]]
    count: int
    stream_events: list[dict[str, Any]]


class PolicyActionList(BaseModel):
    actions: list[dict[str, Any]]
    count: int


@router.get("/devices", response_model=DeviceList, responses=refusals(503))
def list_devices(
    context: Context,
    site: IdentQuery = None,
    kind: DeviceKind | None = None,
    model: IdentQuery = None,
    online: bool | None = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Response:
    """Devices by site then id. Without ``limit``, all of them (one page); with it, a page
    of at most ``limit`` from ``offset``, and ``next_offset`` to ask for the next.

    The same query is answered from memory for ``devices_cache_s`` (1 s) unless this
    instance stored something since: a wall of dashboards costs one read a second."""
    ttl = context.settings.devices_cache_s
    key = (site, kind, model, online, limit, offset)
    generation = context.store.generation  # before the read: a write during it is newer
    cached = context.listing_cache.get(key) if ttl > 0 else None
    if cached is not None and cached[0] == generation and time.monotonic() - cached[1] < ttl:
        return _listing(cached[2], ttl)
    now = time.time()
    devices, total = context.store.device_page(
        limit,
        offset,
        now=now,
        site=site,
        kind=None if kind is None else kind.value,
        model=model,
        online=online,
    )
    more = limit is not None and offset + len(devices) < total
    listing = DeviceList(
        devices=devices,
        count=len(devices),
        now=now,
        total=total,
        next_offset=offset + len(devices) if more else None,
    )
    # Serialised once here: FastAPI would validate and encode the rows again (most of
    # this route's cost on a large fleet); the Open API schema is still DeviceList.
    body = listing.model_dump_json().encode()
    if ttl > 0:
        if len(context.listing_cache) >= 256:  # filters and pages asked for: keep it bounded
            context.listing_cache.clear()
        context.listing_cache[key] = (generation, time.monotonic(), body)
    return _listing(body, ttl)


def _listing(body: bytes, ttl: float) -> Response:
    cache = f"private, max-age={int(ttl)}" if ttl >= 1 else "no-store"
    return Response(body, media_type="application/json", headers={"Cache-Control": cache})


@router.post(
    "/devices",
    status_code=201,
    responses={
        200: {"model": Registration, "description": "Registered already: nothing changed."},
        **refusals(400, 401, 413, 503),
    },
)
def register_device(
    body: DeviceRegistration, context: Context, caller: Caller, response: Response
) -> Registration:
    created = context.store.register_device(
        body.device_id,
        body.site,
        None if body.kind is None else body.kind.value,
        body.groups,
        body.model_name,
    )
    if not created:
        response.status_code = 200
    return Registration(device=context.store.device(body.device_id), created=created, by=caller)


@router.get("/devices/{device_id}", responses=refusals(404, 503))
def device_detail(
    device_id: str,
    context: Context,
    window_s: Annotated[float, Query(gt=0, le=90 * 86400)] = 86400.0,
    telemetry_limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Everything the device page shows, in one round trip."""
    device = context.store.device(device_id)
    if device is None:
        raise HTTPException(404, f"unknown device {device_id!r}")
    since = time.time() - window_s

    def read(conn: Any) -> dict[str, Any]:
        return {
            "device": device,
            "telemetry": queries.telemetry_series(conn, device_id, since, telemetry_limit),
            "predictions": queries.prediction_distribution(conn, device_id, since),
            "prediction_series": queries.prediction_series(conn, device_id, since),
            "alerts": queries.list_alerts(conn, device_id=device_id, limit=100),
            "updates": queries.update_history(conn, device_id),
            "commands": queries.device_commands(conn, device_id),
            "samples": queries.list_samples(conn, device_id, limit=20),
            "sensor_faults": queries.sensor_faults(conn, device_id),
            "visits": queries.visits(conn, device_id, limit=50),
            "stream_events": queries.stream_events(conn, device_id, limit=50),
        }

    return context.store.read(read)


@router.get("/devices/{device_id}/visits", responses=refusals(404, 503))
def device_visits(
    device_id: str,
    context: Context,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> VisitList:
    """A camera's visits (newest first) and its recent stream losses and recoveries."""
    if context.store.device(device_id) is None:
        raise HTTPException(404, f"unknown device {device_id!r}")
    found = context.store.read(
        lambda c: (
            queries.visits(c, device_id, limit=limit),
            queries.stream_events(c, device_id, limit=limit),
        )
    )
    return VisitList(visits=found[0], count=len(found[0]), stream_events=found[1])


@router.get("/alerts", responses=refusals(503))
def list_alerts(
    context: Context,
    device: IdentQuery = None,
    model: IdentQuery = None,
    unacknowledged: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AlertList:
    alerts = context.store.read(
        lambda c: queries.list_alerts(
            c, device_id=device, model=model, unacknowledged=unacknowledged, limit=limit
        )
    )
    return AlertList(alerts=alerts, count=len(alerts))


@router.post("/alerts/{alert_id}/ack", responses=refusals(401, 404, 409, 503))
def acknowledge_alert(alert_id: AlertId, context: Context, caller: Caller) -> AlertAcknowledged:
    if context.store.acknowledge_alert(alert_id, caller):
        return AlertAcknowledged(alert_id=alert_id, acknowledged_by=caller)
    if context.store.read(lambda c: queries.get_alert(c, alert_id)) is None:
        raise HTTPException(404, f"no alert {alert_id}")
    raise HTTPException(409, f"alert {alert_id} was acknowledged already")


@router.get("/releases", responses=refusals(503))
def list_releases(context: Context, model: IdentQuery = None) -> ReleaseList:
    releases = context.store.read(lambda c: queries.list_releases(c, model))
    return ReleaseList(releases=releases, count=len(releases))


@router.get("/releases/{release_id}", responses=refusals(404, 503))
def release_detail(release_id: str, context: Context) -> dict[str, Any]:
    release = context.store.read(lambda c: queries.get_release(c, release_id))
    if release is None:
        raise HTTPException(404, f"unknown release {release_id!r}")
    return release


@router.get("/policy/actions", responses=refusals(503))
def policy_actions(context: Context, model: IdentQuery = None) -> PolicyActionList:
    actions = context.store.read(lambda c: queries.list_policy_actions(c, model))
    return PolicyActionList(actions=actions, count=len(actions))
