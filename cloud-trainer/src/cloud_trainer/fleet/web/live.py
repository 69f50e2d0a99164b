"""Server-sent events that tell open dashboards which parts of the fleet changed."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store import schema as t

log = logging.getLogger(__name__)


@dataclass
class FleetSnapshot:
    """Just enough of the store to tell what changed since the previous look."""

    devices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    alerts: tuple[Any, ...] = ()
    releases: tuple[Any, ...] = ()
    commands: tuple[Any, ...] = ()


def read_snapshot(conn: Connection) -> FleetSnapshot:
    """A handful of cheap aggregate reads; the store is the only source, so several
    service instances behind one database all feed every dashboard."""
    d = t.devices.c
    devices = {
        row[0]: tuple(row[1:])
        for row in conn.execute(
            select(
                d.device_id, d.last_seen, d.state, d.drift_status, d.model_version, d.site, d.kind
            )
        )
    }
    a = t.drift_alerts.c
    alerts = tuple(conn.execute(select(func.max(a.id), func.count(a.acknowledged_at))).one())
    r, rd = t.releases.c, t.release_devices.c
    releases = tuple(conn.execute(select(func.count(), func.sum(r.wave))).one()) + tuple(
        conn.execute(select(func.count(), func.max(rd.updated_at))).one()
    )
    c = t.commands.c
    commands = tuple(
        conn.execute(select(func.count(), func.max(c.issued_at), func.max(c.acked_at))).one()
    )
    return FleetSnapshot(devices, alerts, releases, commands)


def changes(before: FleetSnapshot | None, after: FleetSnapshot) -> dict[str, dict[str, Any]]:
    """Event name → data, for every part that differs (everything on the first look)."""
    if before is None:
        return {"hello": {"devices": len(after.devices)}}
    found: dict[str, dict[str, Any]] = {}
    changed = sorted(
        device_id
        for device_id in after.devices.keys() | before.devices.keys()
        if after.devices.get(device_id) != before.devices.get(device_id)
    )
    if changed:
        found["devices"] = {"changed": changed}
    if after.alerts != before.alerts:
        found["alerts"] = {"latest_id": after.alerts[0], "acknowledged": after.alerts[1]}
    if after.releases != before.releases:
        found["releases"] = {}
    if after.commands != before.commands:
        found["commands"] = {}
    return found


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class LiveFeed:
    """Polls the store once per interval per open stream and sends what changed.

    Polling the store, rather than hooking the ingest path, keeps dashboards off the writer's
    thread and sees changes made by every instance. A stream ends after ``max_age_s``;
    ``EventSource`` reconnects by itself, which bounds how long a dead client can hold one.
    """

    def __init__(
        self,
        store: FleetStore,
        interval_s: float = 1.0,
        heartbeat_s: float = 15.0,
        max_age_s: float = 600.0,
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.max_age_s = max_age_s

    async def stream(self, disconnected: Any) -> AsyncIterator[bytes]:
        """``disconnected`` is the request's ``is_disconnected`` coroutine function."""
        yield f"retry: {int(self.interval_s * 2000)}\n\n".encode()
        previous: FleetSnapshot | None = None
        started = last_sent = time.monotonic()
        while time.monotonic() - started < self.max_age_s:
            try:
                snapshot = await run_in_threadpool(self.store.read, read_snapshot)
            except SQLAlchemyError as e:
                log.warning("live feed cannot read the store: %s", e)
                yield sse("unavailable", {"detail": "the fleet database does not answer"})
            else:
                for event, data in changes(previous, snapshot).items():
                    yield sse(event, data)
                    last_sent = time.monotonic()
                previous = snapshot
            if time.monotonic() - last_sent >= self.heartbeat_s:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(self.interval_s)
            if await disconnected():
                return
