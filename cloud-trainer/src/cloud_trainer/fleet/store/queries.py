"""Read queries behind the HTTP API and the dashboard; rows come back as plain dicts."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, func, not_, or_, select

from cloud_trainer.fleet.store import schema as t

ONLINE_STATES = ("starting", "online", "degraded")


def _dict(row: Row[Any] | Any) -> dict[str, Any]:
    return dict(row._mapping)


def with_presence(device: dict[str, Any], now: float, offline_after_s: float) -> dict[str, Any]:
    """A device is online while its last status says so and it was heard from recently."""
    last_seen = device.get("last_seen")
    recent = last_seen is not None and now - float(last_seen) <= offline_after_s
    device["online"] = bool(recent and device.get("state") in ONLINE_STATES)
    return device


def _device_filters(
    *,
    now: float,
    offline_after_s: float,
    site: str | None,
    kind: str | None,
    model: str | None,
    online: bool | None,
) -> list[ColumnElement[bool]]:
    """The listing's filters as SQL, ``online`` included (the same rule as with_presence),
    so that a page is a page of the filtered devices."""
    d = t.devices.c
    where: list[ColumnElement[bool]] = []
    if site is not None:
        where.append(d.site == site)
    if kind is not None:
        where.append(d.kind == kind)
    if model is not None:
        where.append(d.model_name == model)
    if online is not None:
        is_online = and_(d.last_seen >= now - offline_after_s, d.state.in_(ONLINE_STATES))
        where.append(is_online if online else or_(d.last_seen.is_(None), not_(is_online)))
    return where


def list_devices(
    conn: Connection,
    *,
    now: float,
    offline_after_s: float,
    site: str | None = None,
    kind: str | None = None,
    model: str | None = None,
    online: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Devices by site then id, from the devices table (each device's summary, kept by
    ingest) in the order of its (site, device_id) index; ``limit``/``offset`` page it."""
    d = t.devices.c
    where = _device_filters(
        now=now, offline_after_s=offline_after_s, site=site, kind=kind, model=model, online=online
    )
    query = select(t.devices).where(*where).order_by(d.site, d.device_id)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return [with_presence(_dict(r), now, offline_after_s) for r in conn.execute(query)]


def count_devices(
    conn: Connection,
    *,
    now: float,
    offline_after_s: float,
    site: str | None = None,
    kind: str | None = None,
    model: str | None = None,
    online: bool | None = None,
) -> int:
    """How many devices the listing with these filters holds, all pages together."""
    where = _device_filters(
        now=now, offline_after_s=offline_after_s, site=site, kind=kind, model=model, online=online
    )
    query = select(func.count()).select_from(t.devices).where(*where)
    return int(conn.execute(query).scalar_one())


def get_device(conn: Connection, device_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(t.devices).where(t.devices.c.device_id == device_id)).first()
    return None if row is None else _dict(row)


def telemetry_series(
    conn: Connection, device_id: str, since: float, limit: int
) -> list[dict[str, Any]]:
    c = t.telemetry.c
    query = (
        select(t.telemetry)
        .where(c.device_id == device_id, c.ts >= since)
        .order_by(c.ts.desc(), c.seq.desc())
        .limit(limit)
    )
    rows = [_dict(r) for r in conn.execute(query)]
    rows.reverse()
    return rows


def prediction_distribution(conn: Connection, device_id: str, since: float) -> dict[str, Any]:
    """Counts per label, mean confidence and latency since ``since``, per model version."""
    b = t.prediction_buckets.c
    query = (
        select(
            b.model_name,
            b.model_version,
            b.label,
            func.sum(b.count),
            func.sum(b.confidence_sum),
            func.sum(b.latency_sum_ms),
            func.max(b.latency_max_ms),
        )
        .where(b.device_id == device_id, b.bucket_start >= since)
        .group_by(b.model_name, b.model_version, b.label)
        .order_by(b.model_name, b.model_version, b.label)
    )
    versions: dict[str, dict[str, Any]] = {}
    for model, version, label, count, conf, lat, lat_max in conn.execute(query):
        entry = versions.setdefault(
            f"{model}:{version}",
            {"model_name": model, "model_version": version, "total": 0, "labels": {}},
        )
        n = int(count)
        entry["total"] += n
        entry["labels"][label] = {
            "count": n,
            "mean_confidence": float(conf) / n,
            "mean_latency_ms": float(lat) / n,
            "max_latency_ms": float(lat_max),
        }
    for entry in versions.values():
        for stats in entry["labels"].values():
            stats["share"] = stats["count"] / entry["total"]
    return {"since": since, "versions": list(versions.values())}


def prediction_series(
    conn: Connection, device_id: str, since: float, limit: int = 2000
) -> list[dict[str, Any]]:
    b = t.prediction_buckets.c
    query = (
        select(b.bucket_start, b.label, b.count, b.confidence_sum)
        .where(b.device_id == device_id, b.bucket_start >= since)
        .order_by(b.bucket_start, b.label)
        .limit(limit)
    )
    return [_dict(r) for r in conn.execute(query)]


def list_alerts(
    conn: Connection,
    *,
    device_id: str | None = None,
    model: str | None = None,
    unacknowledged: bool | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    a = t.drift_alerts.c
    query = select(t.drift_alerts).order_by(a.id.desc()).limit(limit)
    if device_id is not None:
        query = query.where(a.device_id == device_id)
    if model is not None:
        query = query.where(a.model_name == model)
    if unacknowledged is True:
        query = query.where(a.acknowledged_at.is_(None))
    elif unacknowledged is False:
        query = query.where(a.acknowledged_at.is_not(None))
    return [_dict(r) for r in conn.execute(query)]


def get_alert(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(t.drift_alerts).where(t.drift_alerts.c.id == alert_id)).first()
    return None if row is None else _dict(row)


def update_history(conn: Connection, device_id: str, limit: int = 200) -> list[dict[str, Any]]:
    e = t.update_events.c
    query = select(t.update_events).where(e.device_id == device_id)
    query = query.order_by(e.ts.desc(), e.seq.desc()).limit(limit)
    return [_dict(r) for r in conn.execute(query)]


def device_commands(conn: Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    c = t.commands.c
    query = select(t.commands).where(c.device_id == device_id)
    return [_dict(r) for r in conn.execute(query.order_by(c.issued_at.desc()).limit(limit))]


def get_command(conn: Connection, cmd_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(t.commands).where(t.commands.c.cmd_id == cmd_id)).first()
    return None if row is None else _dict(row)


def _outcomes(conn: Connection, release_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    r = t.release_devices.c
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not release_ids:
        return found
    query = select(t.release_devices).where(r.release_id.in_(release_ids))
    for row in conn.execute(query.order_by(r.release_id, r.device_id)):
        item = _dict(row)
        found[item.pop("release_id")].append(item)
    return found


def _history(conn: Connection, release_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each release's rollout steps in the order they were taken."""
    h = t.rollout_log.c
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not release_ids:
        return found
    query = select(t.rollout_log).where(h.release_id.in_(release_ids))
    for row in conn.execute(query.order_by(h.release_id, h.seq)):
        item = _dict(row)
        found[item.pop("release_id")].append(item)
    return found


def list_releases(
    conn: Connection, model: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Releases newest first, each with its devices' outcomes and a count per state."""
    rel = t.releases.c
    query = select(t.releases).order_by(rel.created.desc()).limit(limit)
    if model is not None:
        query = query.where(rel.model_name == model)
    rows = [_dict(r) for r in conn.execute(query)]
    ids = [r["release_id"] for r in rows]
    outcomes, history = _outcomes(conn, ids), _history(conn, ids)
    for row in rows:
        row.pop("manifest", None)
        row["devices"] = outcomes.get(row["release_id"], [])
        row["history"] = history.get(row["release_id"], [])
        counts: dict[str, int] = defaultdict(int)
        for device in row["devices"]:
            counts[device["state"]] += 1
        row["outcome_counts"] = dict(counts)
    return rows


def get_release(conn: Connection, release_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(t.releases).where(t.releases.c.release_id == release_id)).first()
    if row is None:
        return None
    item = _dict(row)
    item["devices"] = _outcomes(conn, [release_id]).get(release_id, [])
    item["history"] = _history(conn, [release_id]).get(release_id, [])
    return item


def list_samples(
    conn: Connection, device_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    s = t.samples.c
    query = select(t.samples).order_by(s.id.desc()).limit(limit)
    if device_id is not None:
        query = query.where(s.device_id == device_id)
    return [_dict(r) for r in conn.execute(query)]


def list_policy_actions(
    conn: Connection, model: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    p = t.policy_actions.c
    query = select(t.policy_actions).order_by(p.id.desc()).limit(limit)
    if model is not None:
        query = query.where(p.model_name == model)
    return [_dict(r) for r in conn.execute(query)]


def sensor_faults(conn: Connection, device_id: str, limit: int = 100) -> dict[str, Any]:
    """A device's sensor-health verdicts, newest first, and the faults open now: per sensor
    and test, the latest verdict (by the device's seq) when it says raised."""
    f = t.sensor_faults.c
    query = select(t.sensor_faults).where(f.device_id == device_id)
    history = [_dict(r) for r in conn.execute(query.order_by(f.seq.desc()).limit(limit))]
    latest = (
        select(f.sensor, f.test, func.max(f.seq).label("seq"))
        .where(f.device_id == device_id)
        .group_by(f.sensor, f.test)
        .subquery()
    )
    open_query = (
        select(t.sensor_faults)
        .join(
            latest,
            (f.sensor == latest.c.sensor) & (f.test == latest.c.test) & (f.seq == latest.c.seq),
        )
        .where(f.device_id == device_id, f.state == "raised")
        .order_by(f.sensor, f.test)
    )
    open_faults = [_dict(r) for r in conn.execute(open_query)]
    return {
        "open": open_faults,
        "faulty": sorted({r["sensor"] for r in open_faults}),
        "history": history,
    }


def visits(conn: Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A camera's visits, newest start first; ``ended_at`` is null while one is under way."""
    v = t.visits.c
    query = select(t.visits).where(v.device_id == device_id)
    query = query.order_by(v.started_at.desc(), v.visit_id.desc()).limit(limit)
    return [_dict(r) for r in conn.execute(query)]


def stream_events(conn: Connection, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A camera's stream losses and recoveries, newest first (by the device's seq)."""
    e = t.stream_events.c
    query = select(t.stream_events).where(e.device_id == device_id)
    return [_dict(r) for r in conn.execute(query.order_by(e.seq.desc()).limit(limit))]


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows per table, for metrics and tests."""
    return {
        name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for name, table in t.metadata.tables.items()
    }
