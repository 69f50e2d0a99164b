"""What the fleet store knows about one model version: releases, outcomes, drift and actions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, func, select

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store import schema as t


class ReleaseRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: str
    version: int
    channel: str
    created: float
    wave: int
    percent: float
    groups: list[str]
    pinned_devices: list[str]
    allow_downgrade: bool
    publisher: str | None
    outcomes: dict[str, str] = Field(description="Device → latest update state for the release.")


class UpdateRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    ts: float
    release_id: str | None
    from_version: int | None
    to_version: int
    state: str
    reason: str | None


class AlertRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: int
    device_id: str
    ts: float
    state: str
    detector: str
    severity: str
    summary: str
    features: list[dict[str, Any]]
    acknowledged_by: str | None
    actions: list[dict[str, Any]] = Field(default_factory=list)


class DeviceTraffic(BaseModel):
    """Predictions one device made with the version: counts and confidence per label."""

    model_config = ConfigDict(extra="forbid")

    device_id: str
    site: str | None
    counts: dict[str, int]
    confidence_sum: dict[str, float]


class FleetRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str
    version: int
    releases: list[ReleaseRecord]
    rollbacks: list[UpdateRecord] = Field(description="Device rollbacks away from this version.")
    fleet_rollbacks: list[ReleaseRecord] = Field(
        description="Later downgrade releases that replaced this version fleet-wide."
    )
    updates: list[UpdateRecord]
    devices_running: list[str]
    alerts: list[AlertRecord]
    traffic: list[DeviceTraffic]


def _release(row: dict[str, Any], outcomes: dict[str, str]) -> ReleaseRecord:
    rollout = row["rollout"] or {}
    manifest = row["manifest"] or {}
    return ReleaseRecord(
        release_id=row["release_id"],
        version=int(row["version"]),
        channel=row["channel"],
        created=float(row["created"]),
        wave=int(row["wave"]),
        percent=float(rollout.get("percent", 100.0)),
        groups=list(rollout.get("groups", [])),
        pinned_devices=list(rollout.get("devices", [])),
        allow_downgrade=bool(manifest.get("allow_downgrade", False)),
        publisher=manifest.get("publisher"),
        outcomes=outcomes,
    )


def _read(conn: Connection, model: str, version: int) -> FleetRecord:
    r, rd, u = t.releases.c, t.release_devices.c, t.update_events.c
    rows = [
        dict(x._mapping)
        for x in conn.execute(
            select(t.releases).where(r.model_name == model).order_by(r.created, r.release_id)
        )
    ]
    outcomes: dict[str, dict[str, str]] = defaultdict(dict)
    ids = [row["release_id"] for row in rows]
    if ids:
        for x in conn.execute(
            select(rd.release_id, rd.device_id, rd.state).where(rd.release_id.in_(ids))
        ):
            outcomes[x.release_id][x.device_id] = x.state
    releases = [_release(row, outcomes[row["release_id"]]) for row in rows]
    own = [rel for rel in releases if rel.version == version]
    first_own = min((rel.created for rel in own), default=None)
    fleet_rollbacks = [
        rel
        for rel in releases
        if first_own is not None
        and rel.version < version
        and rel.allow_downgrade
        and rel.created > first_own
    ]
    update_rows = conn.execute(
        select(t.update_events)
        .where(u.model_name == model, (u.to_version == version) | (u.from_version == version))
        .order_by(u.ts, u.device_id, u.seq)
    )
    updates = [
        UpdateRecord(
            device_id=x.device_id,
            ts=float(x.ts),
            release_id=x.release_id,
            from_version=x.from_version,
            to_version=int(x.to_version),
            state=x.state,
            reason=x.reason,
        )
        for x in update_rows
    ]
    d = t.devices.c
    running = [
        str(x.device_id)
        for x in conn.execute(
            select(d.device_id)
            .where(d.model_name == model, d.model_version == version)
            .order_by(d.device_id)
        )
    ]
    return FleetRecord(
        model_name=model,
        version=version,
        releases=own,
        rollbacks=[x for x in updates if x.state == "rolled_back" and x.to_version == version],
        fleet_rollbacks=fleet_rollbacks,
        updates=updates,
        devices_running=running,
        alerts=_alerts(conn, model, version),
        traffic=_traffic(conn, model, version),
    )


def _alerts(conn: Connection, model: str, version: int) -> list[AlertRecord]:
    a, p = t.drift_alerts.c, t.policy_actions.c
    alerts = [
        AlertRecord(
            alert_id=int(x.id),
            device_id=x.device_id,
            ts=float(x.ts),
            state=x.state,
            detector=x.detector,
            severity=x.severity,
            summary=x.summary or "",
            features=list(x.features or []),
            acknowledged_by=x.acknowledged_by,
        )
        for x in conn.execute(
            select(t.drift_alerts)
            .where(a.model_name == model, a.model_version == version)
            .order_by(a.ts, a.id)
        )
    ]
    by_id = {alert.alert_id: alert for alert in alerts}
    if by_id:
        query = select(t.policy_actions).where(p.alert_id.in_(list(by_id))).order_by(p.id)
        for x in conn.execute(query):
            by_id[int(x.alert_id)].actions.append(
                {
                    "action": x.action,
                    "rule": x.rule,
                    "status": x.status,
                    "detail": x.detail,
                    "decided_at": x.decided_at,
                }
            )
    return alerts


def _traffic(conn: Connection, model: str, version: int) -> list[DeviceTraffic]:
    b, d = t.prediction_buckets.c, t.devices.c
    query = (
        select(b.device_id, d.site, b.label, func.sum(b.count), func.sum(b.confidence_sum))
        .select_from(t.prediction_buckets.outerjoin(t.devices, d.device_id == b.device_id))
        .where(b.model_name == model, b.model_version == version)
        .group_by(b.device_id, d.site, b.label)
        .order_by(b.device_id, b.label)
    )
    found: dict[str, DeviceTraffic] = {}
    for device_id, site, label, count, conf in conn.execute(query):
        entry = found.setdefault(
            device_id, DeviceTraffic(device_id=device_id, site=site, counts={}, confidence_sum={})
        )
        entry.counts[label] = int(count)
        entry.confidence_sum[label] = float(conf)
    return list(found.values())


def load_fleet_record(store: FleetStore, model: str, version: int) -> FleetRecord:
    """The fleet's whole history of ``model`` v``version``, read in one connection."""
    return store.read(lambda conn: _read(conn, model, version))
