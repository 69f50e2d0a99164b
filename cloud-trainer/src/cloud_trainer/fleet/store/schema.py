"""The fleet store's tables (SQLAlchemy Core), portable between SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# Times are stored as float seconds since the epoch (UTC): one portable type, cheap range scans.
metadata = MetaData()

ID = String(64)

devices = Table(
    "devices",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("site", ID, nullable=False),
    Column("kind", String(16)),
    Column("groups", JSON, nullable=False, default=list),
    Column("registered_at", Float),
    Column("first_seen", Float),
    Column("last_seen", Float, index=True),
    Column("state", String(16), nullable=False, default="unknown"),
    Column("status_seq", BigInteger, nullable=False, default=-1),
    Column("status_detail", Text),
    Column("agent_version", String(128)),
    Column("model_name", ID, index=True),
    Column("model_version", Integer),
    Column("model_seq", BigInteger, nullable=False, default=-1),
    Column("drift_status", String(16), nullable=False, default="ok"),
    Column("drift_detectors", JSON, nullable=False, default=list),
    # The device listing's order: pages of GET /api/devices are read from this index.
    Index("ix_devices_site_device", "site", "device_id"),
)

# One row per message ever accepted: the store-and-forward de-duplication key.
received = Table(
    "received",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("received_at", Float, nullable=False, index=True),
)

# On PostgreSQL this table is partitioned by day on ``ts`` (see partitions.py), with
# ``(id, ts)`` as its key; messages are de-duplicated by ``received``, not here.
telemetry = Table(
    "telemetry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("uptime_s", Float, nullable=False),
    Column("cpu_percent", Float, nullable=False),
    Column("mem_percent", Float, nullable=False),
    Column("disk_percent", Float, nullable=False),
    Column("temperature_c", Float),
    Column("rss_bytes", BigInteger, nullable=False),
    Column("inference_p50_ms", Float),
    Column("inference_p95_ms", Float),
    Column("fps", Float, nullable=False),
    Column("outbox_depth", Integer, nullable=False),
    Column("dropped", JSON, nullable=False, default=dict),
    Column("model_name", ID),
    Column("model_version", Integer),
    # Accuracy on labelled predictions (TelemetryMessage.labelled); null while none is labelled.
    Column("accuracy", Float),
    Column("macro_f1", Float),
    Column("labelled_n", Integer),
    # A camera's visit counters since its agent started (TelemetryMessage.visits) and its
    # recent share of frames answered with the absent label; null where not reported.
    Column("visit_frames", BigInteger),
    Column("absent_frames", BigInteger),
    Column("visits_started", BigInteger),
    Column("visits_ended", BigInteger),
    Column("absent_rate", Float),
    Index("ix_telemetry_device_ts", "device_id", "ts"),
    Index("ix_telemetry_ts", "ts"),
)

# Predictions are summarised per device, model version, time bucket and label.
prediction_buckets = Table(
    "prediction_buckets",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("model_name", ID, primary_key=True),
    Column("model_version", Integer, primary_key=True),
    Column("bucket_start", Float, primary_key=True),
    Column("label", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("confidence_sum", Float, nullable=False),
    Column("latency_sum_ms", Float, nullable=False),
    Column("latency_max_ms", Float, nullable=False),
    Index("ix_prediction_buckets_start", "bucket_start"),
)

drift_alerts = Table(
    "drift_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False, index=True),
    Column("received_at", Float, nullable=False),
    Column("model_name", ID, nullable=False, index=True),
    Column("model_version", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("detector", String(128), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("window_start", Float, nullable=False),
    Column("window_end", Float, nullable=False),
    Column("window_n", BigInteger, nullable=False),
    Column("features", JSON, nullable=False),
    Column("summary", Text, nullable=False, default=""),
    Column("acknowledged_at", Float),
    Column("acknowledged_by", String(128)),
)

update_events = Table(
    "update_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False, index=True),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("model_name", ID, nullable=False),
    Column("release_id", String(128), index=True),
    Column("from_version", Integer),
    Column("to_version", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("duration_ms", Float),
)

commands = Table(
    "commands",
    metadata,
    Column("cmd_id", String(128), primary_key=True),
    Column("device_id", ID, nullable=False, index=True),
    Column("action", String(32), nullable=False),
    Column("args", JSON, nullable=False, default=dict),
    Column("issued_by", String(128), nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("status", String(16), nullable=False, default="sent"),
    Column("acked_at", Float),
    Column("ack_detail", Text),
)

command_acks = Table(
    "command_acks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("cmd_id", String(128), nullable=False, index=True),
    Column("result", String(16), nullable=False),
    Column("detail", Text),
)

releases = Table(
    "releases",
    metadata,
    Column("release_id", String(128), primary_key=True),
    Column("model_name", ID, nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("channel", ID, nullable=False),
    Column("created", Float, nullable=False),
    Column("wave", Integer, nullable=False, default=0),
    Column("rollout", JSON, nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("seen_at", Float, nullable=False),
)

# Each device's outcome of a release: the latest update-state it reported for it.
release_devices = Table(
    "release_devices",
    metadata,
    Column("release_id", String(128), primary_key=True),
    Column("device_id", ID, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("state_seq", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text),
)

samples = Table(
    "samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("original_name", String(256)),
    Column("captured_at", Float),
    Column("model_name", ID),
    Column("model_version", Integer),
    Column("label", String(64)),
    Column("reason", String(256)),
    Column("uploaded_by", String(128), nullable=False),
    Column("received_at", Float, nullable=False),
    Index("ix_samples_device_sha", "device_id", "sha256", unique=True),
)

policy_actions = Table(
    "policy_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, ForeignKey("drift_alerts.id"), nullable=False),
    Column("episode_key", String(256), nullable=False, index=True),
    Column("rule", String(128), nullable=False),
    Column("action", String(16), nullable=False),
    Column("model_name", ID, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("device_id", ID, nullable=False),
    Column("decided_at", Float, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("detail", Text),
    Column("finished_at", Float),
)

# Open drift episodes: a detector on a device raised and has not cleared yet.
drift_episodes = Table(
    "drift_episodes",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("model_name", ID, primary_key=True),
    Column("detector", String(128), primary_key=True),
    Column("model_version", Integer, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("alert_id", Integer, nullable=False),
)

# Each step of a staged rollout (started, advanced, aborted, restored, done), as recorded by
# the release tooling: the history that stays after the retained release has moved on.
rollout_log = Table(
    "rollout_log",
    metadata,
    Column("release_id", String(128), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("model_name", ID, nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("action", String(16), nullable=False),
    Column("wave", Integer, nullable=False),
    Column("audience", Text, nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("restored_release_id", String(128)),
    Column("restored_version", Integer),
    Column("publisher", String(128), nullable=False),
    Column("received_at", Float, nullable=False),
)

# Every raised/cleared verdict of a device's sensor-health tests (SensorFault); the sensors
# faulty now are those whose latest row per test says raised.
sensor_faults = Table(
    "sensor_faults",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("sensor", String(128), nullable=False),
    Column("test", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("since", Float, nullable=False),
    Column("observed_at", Float, nullable=False),
    Column("value", Float),
    Column("score", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("model_name", ID),
    Column("model_version", Integer),
    Column("summary", Text, nullable=False, default=""),
    Index("ix_sensor_faults_device_seq", "device_id", "seq"),
)

# A camera's visits (VisitEvent): one row per visit, made by its start or its end event,
# whichever arrives first, and completed by the other.
visits = Table(
    "visits",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("visit_id", ID, primary_key=True),
    Column("model_name", ID, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("label", String(64), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("started_at", Float, nullable=False, index=True),
    Column("ended_at", Float),
    Column("ended_by", String(16)),
    Column("subject_frames", BigInteger, nullable=False),
    Column("frames", BigInteger, nullable=False),
    Column("label_frames", JSON, nullable=False, default=dict),
    Column("snapshot_id", ID),
    Column("snapshot_bytes", BigInteger),
    Column("snapshot_sha256", String(64)),
    Column("start_seq", BigInteger),
    Column("end_seq", BigInteger),
    Column("received_at", Float, nullable=False, index=True),
)

# A camera's stream lost, frozen or restored (StreamEventMessage).
stream_events = Table(
    "stream_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("received_at", Float, nullable=False, index=True),
    Column("source", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("detail", Text),
    Column("down_s", Float),
    Index("ix_stream_events_device_seq", "device_id", "seq"),
)
