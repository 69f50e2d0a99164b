"""Writing a batch of device messages into the store, once each, in one transaction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, or_, select, update

from cloud_trainer.fleet.store import schema as t
from cloud_trainer.fleet.store.engine import upsert
from edge_agent.protocol import (
    CommandAck,
    DriftAlert,
    MessageBase,
    PredictionMessage,
    SensorFault,
    StatusMessage,
    StreamEventMessage,
    TelemetryMessage,
    UpdateEvent,
    VisitEvent,
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, validated device message with where and when it arrived."""

    site: str
    message: MessageBase
    received_at: float

    @property
    def kind(self) -> str:
        return str(getattr(self.message, "type", type(self.message).__name__))


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """A drift alert that was new to the store, with its row id, for the policy engine."""

    alert_id: int
    site: str
    alert: DriftAlert


@dataclass
class IngestResult:
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    alerts: list[StoredAlert] = field(default_factory=list)


def _ts(message: MessageBase) -> float:
    return message.ts.timestamp()


def ingest_batch(conn: Connection, batch: list[Envelope], bucket_s: float) -> IngestResult:
    """Store every message not stored before; ``(device_id, type, seq)`` identifies a message.

    The type is part of the key so that a device whose counter is per channel is never
    mistaken for a replay; a store-and-forward replay repeats all three.
    """
    result = IngestResult()
    fresh = _claim_new(conn, batch, result)
    _touch_devices(conn, batch)
    buckets: dict[tuple[str, str, int, float, str], list[float]] = {}
    telemetry_rows: list[dict[str, Any]] = []
    models: dict[str, tuple[int, str, int]] = {}
    for env in fresh:
        msg = env.message
        result.stored[env.kind] += 1
        if isinstance(msg, StatusMessage):
            _apply_status(conn, msg)
        elif isinstance(msg, TelemetryMessage):
            telemetry_rows.append(_telemetry_row(msg))
            if msg.model_name is not None and msg.model_version is not None:
                _note_model(models, msg.device_id, msg.seq, msg.model_name, msg.model_version)
        elif isinstance(msg, PredictionMessage):
            _add_to_bucket(buckets, msg, bucket_s)
            _note_model(models, msg.device_id, msg.seq, msg.model_name, msg.model_version)
        elif isinstance(msg, DriftAlert):
            alert_id = _insert_alert(conn, msg, env.received_at)
            result.alerts.append(StoredAlert(alert_id, env.site, msg))
        elif isinstance(msg, UpdateEvent):
            _insert_event(conn, msg, env.received_at)
        elif isinstance(msg, CommandAck):
            _insert_ack(conn, msg, env.received_at)
        elif isinstance(msg, SensorFault):
            _insert_sensor_fault(conn, msg, env.received_at)
        elif isinstance(msg, VisitEvent):
            _upsert_visit(conn, msg, env.received_at)
        elif isinstance(msg, StreamEventMessage):
            _insert_stream_event(conn, msg, env.received_at)
    if telemetry_rows:
        # One executemany: SQLAlchemy sends it as multi-row INSERTs on PostgreSQL
        # ("insertmanyvalues"), SQLite runs it natively; both beat a statement compiled
        # per batch with thousands of parameters.
        conn.execute(t.telemetry.insert(), telemetry_rows)
    _set_models(conn, models)
    _flush_buckets(conn, buckets)
    return result


def _claim_new(conn: Connection, batch: list[Envelope], result: IngestResult) -> list[Envelope]:
    """Insert the batch's keys into ``received``; the ones that went in are the new messages.

    INSERT ... ON CONFLICT DO NOTHING RETURNING: the database decides, so two instances
    racing on a replayed message cannot both store it.
    """
    unique: dict[tuple[str, str, int], Envelope] = {}
    for env in batch:
        key = (env.message.device_id, env.kind, env.message.seq)
        if key in unique:
            result.duplicates += 1
        else:
            unique[key] = env
    inserted: set[tuple[str, str, int]] = set()
    if unique:
        r = t.received.c
        rows = [
            {"device_id": d, "kind": k, "seq": s, "received_at": env.received_at}
            for (d, k, s), env in unique.items()
        ]
        # One statement compiled once (cached) and sent as an executemany: SQLAlchemy turns
        # it into multi-row INSERTs of up to a thousand rows ("insertmanyvalues") and
        # gathers the RETURNING rows of all of them.
        ins = upsert(conn, t.received).on_conflict_do_nothing()
        for device_id, kind, seq in conn.execute(ins.returning(r.device_id, r.kind, r.seq), rows):
            inserted.add((device_id, kind, int(seq)))
    fresh = [env for key, env in unique.items() if key in inserted]
    result.duplicates += len(unique) - len(fresh)
    return fresh


def _note_model(
    models: dict[str, tuple[int, str, int]], device_id: str, seq: int, name: str, version: int
) -> None:
    if device_id not in models or models[device_id][0] < seq:
        models[device_id] = (seq, name, version)


def _touch_devices(conn: Connection, batch: list[Envelope]) -> None:
    # Any message, replayed or not, proves the device is alive now.
    latest: dict[str, tuple[str, float]] = {}
    for env in batch:
        prev = latest.get(env.message.device_id)
        if prev is None or env.received_at > prev[1]:
            latest[env.message.device_id] = (env.site, env.received_at)
    if not latest:
        return
    # One upsert for the batch's devices, in key order (no lock-order deadlocks between two
    # writers), compiled once and sent as an executemany (multi-row INSERTs).
    rows = [
        {"device_id": device_id, "site": site, "groups": [], "first_seen": now, "last_seen": now}
        for device_id, (site, now) in sorted(latest.items())
    ]
    ins = upsert(conn, t.devices)
    last_seen = case(
        (t.devices.c.last_seen.is_(None), ins.excluded.last_seen),
        (t.devices.c.last_seen < ins.excluded.last_seen, ins.excluded.last_seen),
        else_=t.devices.c.last_seen,
    )
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=[t.devices.c.device_id],
            set_={
                "last_seen": last_seen,
                "first_seen": func.coalesce(t.devices.c.first_seen, ins.excluded.first_seen),
            },
        ),
        rows,
    )


_d = t.devices.c
# The model moves only for a newer message (an old replayed one does not) that names
# another model: ``model_seq`` is the seq at which the device's current model was first
# seen, so a batch of a steady fleet updates no row.
_SET_MODEL = (
    update(t.devices)
    .where(
        _d.device_id == bindparam("m_device"),
        _d.model_seq < bindparam("m_seq"),
        or_(
            _d.model_name.is_distinct_from(bindparam("m_name")),
            _d.model_version.is_distinct_from(bindparam("m_version")),
        ),
    )
    .values(
        model_name=bindparam("m_name"),
        model_version=bindparam("m_version"),
        model_seq=bindparam("m_seq"),
    )
)


def _set_models(conn: Connection, models: dict[str, tuple[int, str, int]]) -> None:
    """Each device's newest model of the batch, as one executemany in key order."""
    if models:
        conn.execute(
            _SET_MODEL,
            [
                {"m_device": device_id, "m_seq": seq, "m_name": name, "m_version": version}
                for device_id, (seq, name, version) in sorted(models.items())
            ],
        )


def _set_model(conn: Connection, device_id: str, seq: int, name: str, version: int) -> None:
    _set_models(conn, {device_id: (seq, name, version)})


def _apply_status(conn: Connection, msg: StatusMessage) -> None:
    d = t.devices.c
    if msg.last_will:
        # The broker published the device's Last Will: its session ended after every status
        # it sent, whatever the seq (reserved when the session began). Keep status_seq, so
        # the next session's first status (a higher seq) still applies.
        conn.execute(
            update(t.devices)
            .where(d.device_id == msg.device_id)
            .values(state=msg.state, status_detail=msg.detail)
        )
        return
    values: dict[str, Any] = {
        "state": msg.state,
        "status_seq": msg.seq,
        "status_detail": msg.detail,
        "site": msg.site,
    }
    if msg.kind is not None:
        values["kind"] = msg.kind.value
    if msg.agent_version is not None:
        values["agent_version"] = msg.agent_version
    conn.execute(
        update(t.devices).where(d.device_id == msg.device_id, d.status_seq < msg.seq).values(values)
    )
    if msg.model_name is not None and msg.model_version is not None:
        _set_model(conn, msg.device_id, msg.seq, msg.model_name, msg.model_version)


def _telemetry_row(msg: TelemetryMessage) -> dict[str, Any]:
    # The sensors faulty now are kept as the sensor_faults rows that raised them.
    row = msg.model_dump(
        exclude={"schema_version", "type", "open_fds", "labelled", "sensor_faults", "visits"}
    )
    row["ts"] = _ts(msg)
    labelled = msg.labelled
    row["accuracy"] = None if labelled is None else labelled.accuracy
    row["macro_f1"] = None if labelled is None else labelled.macro_f1
    row["labelled_n"] = None if labelled is None else labelled.n
    visits = msg.visits
    row["visit_frames"] = None if visits is None else visits.frames
    row["absent_frames"] = None if visits is None else visits.absent_frames
    row["visits_started"] = None if visits is None else visits.visits_started
    row["visits_ended"] = None if visits is None else visits.visits_ended
    return row


def _add_to_bucket(
    buckets: dict[tuple[str, str, int, float, str], list[float]],
    msg: PredictionMessage,
    bucket_s: float,
) -> None:
    start = (_ts(msg) // bucket_s) * bucket_s
    key = (msg.device_id, msg.model_name, msg.model_version, start, msg.label)
    agg = buckets.setdefault(key, [0.0, 0.0, 0.0, 0.0])
    agg[0] += 1
    agg[1] += msg.confidence
    agg[2] += msg.latency_ms
    agg[3] = max(agg[3], msg.latency_ms)


def _flush_buckets(
    conn: Connection, buckets: dict[tuple[str, str, int, float, str], list[float]]
) -> None:
    """One upsert of the batch's buckets as an executemany, in key order; each key once."""
    b = t.prediction_buckets.c
    rows = [
        {
            "device_id": device_id,
            "model_name": model,
            "model_version": version,
            "bucket_start": start,
            "label": label,
            "count": int(agg[0]),
            "confidence_sum": agg[1],
            "latency_sum_ms": agg[2],
            "latency_max_ms": agg[3],
        }
        for (device_id, model, version, start, label), agg in sorted(buckets.items())
    ]
    if rows:
        ins = upsert(conn, t.prediction_buckets)
        ex = ins.excluded
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[
                    b.device_id,
                    b.model_name,
                    b.model_version,
                    b.bucket_start,
                    b.label,
                ],
                set_={
                    "count": b.count + ex.count,
                    "confidence_sum": b.confidence_sum + ex.confidence_sum,
                    "latency_sum_ms": b.latency_sum_ms + ex.latency_sum_ms,
                    "latency_max_ms": case(
                        (b.latency_max_ms < ex.latency_max_ms, ex.latency_max_ms),
                        else_=b.latency_max_ms,
                    ),
                },
            ),
            rows,
        )


def _insert_alert(conn: Connection, msg: DriftAlert, received_at: float) -> int:
    row = {
        "device_id": msg.device_id,
        "seq": msg.seq,
        "ts": _ts(msg),
        "received_at": received_at,
        "model_name": msg.model_name,
        "model_version": msg.model_version,
        "state": msg.state,
        "detector": msg.detector,
        "severity": msg.severity,
        "window_start": msg.window.start.timestamp(),
        "window_end": msg.window.end.timestamp(),
        "window_n": msg.window.n,
        "features": [f.model_dump(mode="json") for f in msg.features],
        "summary": msg.summary,
    }
    alert_id = int(
        conn.execute(
            t.drift_alerts.insert().values(row).returning(t.drift_alerts.c.id)
        ).scalar_one()
    )
    e = t.drift_episodes.c
    if msg.state == "raised":
        ins = upsert(conn, t.drift_episodes).values(
            device_id=msg.device_id,
            model_name=msg.model_name,
            detector=msg.detector,
            model_version=msg.model_version,
            opened_at=_ts(msg),
            alert_id=alert_id,
        )
        conn.execute(ins.on_conflict_do_nothing())
    else:
        conn.execute(
            t.drift_episodes.delete().where(
                e.device_id == msg.device_id,
                e.model_name == msg.model_name,
                e.detector == msg.detector,
            )
        )
    open_detectors = sorted(
        conn.scalars(select(e.detector).where(e.device_id == msg.device_id)).all()
    )
    conn.execute(
        update(t.devices)
        .where(t.devices.c.device_id == msg.device_id)
        .values(drift_status="drift" if open_detectors else "ok", drift_detectors=open_detectors)
    )
    return alert_id


def _insert_event(conn: Connection, msg: UpdateEvent, received_at: float) -> None:
    row = msg.model_dump(exclude={"schema_version", "type"})
    row["ts"] = _ts(msg)
    row["state"] = msg.state.value
    conn.execute(t.update_events.insert().values(row))
    if msg.state.value == "committed":
        _set_model(conn, msg.device_id, msg.seq, msg.model_name, msg.to_version)
    if msg.release_id is None:
        return
    r = t.release_devices.c
    ins = upsert(conn, t.release_devices).values(
        release_id=msg.release_id,
        device_id=msg.device_id,
        state=msg.state.value,
        state_seq=msg.seq,
        updated_at=received_at,
        reason=msg.reason,
    )
    newer = ins.excluded.state_seq > r.state_seq
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=[r.release_id, r.device_id],
            set_={
                col: case((newer, ins.excluded[col]), else_=r[col])
                for col in ("state", "state_seq", "updated_at", "reason")
            },
        )
    )


def _insert_ack(conn: Connection, msg: CommandAck, received_at: float) -> None:
    conn.execute(
        t.command_acks.insert().values(
            device_id=msg.device_id,
            seq=msg.seq,
            ts=_ts(msg),
            cmd_id=msg.cmd_id,
            result=msg.result,
            detail=msg.detail,
        )
    )
    c = t.commands.c
    target = update(t.commands).where(c.cmd_id == msg.cmd_id, c.device_id == msg.device_id)
    if msg.result == "accepted":
        # A late "accepted" must not hide the final answer that overtook it.
        target = target.where(c.status == "sent")
    conn.execute(target.values(status=msg.result, acked_at=received_at, ack_detail=msg.detail))


def _insert_sensor_fault(conn: Connection, msg: SensorFault, received_at: float) -> None:
    row = msg.model_dump(exclude={"schema_version", "type", "device_id", "seq", "ts"})
    row.update(
        device_id=msg.device_id,
        seq=msg.seq,
        ts=_ts(msg),
        received_at=received_at,
        since=msg.since.timestamp(),
        observed_at=msg.observed_at.timestamp(),
    )
    conn.execute(t.sensor_faults.insert().values(row))


def _upsert_visit(conn: Connection, msg: VisitEvent, received_at: float) -> None:
    """One row per visit: the end's figures win whichever phase arrives first (a replay
    may bring the start after the end)."""
    snapshot = msg.snapshot
    row: dict[str, Any] = {
        "device_id": msg.device_id,
        "visit_id": msg.visit_id,
        "model_name": msg.model_name,
        "model_version": msg.model_version,
        "label": msg.label,
        "confidence": msg.confidence,
        "started_at": msg.started_at.timestamp(),
        "ended_at": None if msg.ended_at is None else msg.ended_at.timestamp(),
        "ended_by": msg.ended_by,
        "subject_frames": msg.subject_frames,
        "frames": msg.frames,
        "label_frames": dict(msg.label_frames),
        "snapshot_id": None if snapshot is None else snapshot.id,
        "snapshot_bytes": None if snapshot is None else snapshot.bytes,
        "snapshot_sha256": None if snapshot is None else snapshot.sha256,
        "start_seq": msg.seq if msg.phase == "start" else None,
        "end_seq": msg.seq if msg.phase == "end" else None,
        "received_at": received_at,
    }
    ins = upsert(conn, t.visits).values(row)
    if msg.phase == "start":
        changes: dict[str, Any] = {"start_seq": ins.excluded.start_seq}
    else:
        keep = {"device_id", "visit_id", "start_seq"}
        changes = {col: ins.excluded[col] for col in row if col not in keep}
    v = t.visits.c
    conn.execute(ins.on_conflict_do_update(index_elements=[v.device_id, v.visit_id], set_=changes))


def _insert_stream_event(conn: Connection, msg: StreamEventMessage, received_at: float) -> None:
    conn.execute(
        t.stream_events.insert().values(
            device_id=msg.device_id,
            seq=msg.seq,
            ts=_ts(msg),
            received_at=received_at,
            source=msg.source,
            state=msg.state,
            at=msg.at.timestamp(),
            detail=msg.detail,
            down_s=msg.down_s,
        )
    )
