"""One valid instance of every wire message, and hypothesis strategies that build them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from edge_agent.protocol import (
    Command,
    CommandAck,
    DriftAlert,
    DriftWindow,
    FeatureDrift,
    LabelledAccuracy,
    MessageBase,
    PredictionMessage,
    ReleaseManifest,
    Rollout,
    SensorFault,
    StatusMessage,
    StreamEventMessage,
    TelemetryMessage,
    TensorSpec,
    UpdateEvent,
    UpdateState,
    VisitCounters,
    VisitEvent,
    VisitSnapshot,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def sample_messages(device: str = "cam-01") -> list[MessageBase]:
    """Every message type once, with realistic values."""
    return [
        StatusMessage(
            device_id=device,
            ts=T0,
            seq=1,
            state="online",
            site="park",
            kind="camera",
            agent_version="0.1.0",
            model_name="catdog",
            model_version=3,
        ),
        TelemetryMessage(
            device_id=device,
            ts=T0,
            seq=2,
            uptime_s=3600,
            cpu_percent=31.5,
            mem_percent=40.2,
            disk_percent=12.0,
            temperature_c=51.0,
            rss_bytes=120_000_000,
            inference_p50_ms=6.5,
            inference_p95_ms=9.1,
            fps=5.0,
            outbox_depth=3,
            dropped={"undecodable_frames": 2},
        ),
        PredictionMessage(
            device_id=device,
            ts=T0,
            seq=3,
            model_name="catdog",
            model_version=3,
            label="dog",
            confidence=0.88,
            scores={"cat": 0.12, "dog": 0.88},
            latency_ms=7.0,
            input_ts=T0,
            input_id="frame-000123",
        ),
        DriftAlert(
            device_id=device,
            ts=T0,
            seq=4,
            model_name="catdog",
            model_version=3,
            state="raised",
            detector="image_stats",
            severity="warning",
            window=DriftWindow(start=T0 - timedelta(hours=24), end=T0, n=4320),
            features=[
                FeatureDrift(name="brightness", metric="psi", score=0.41, threshold=0.25),
                FeatureDrift(name="pred_ratio_dog", metric="ratio", score=1.3, threshold=1.25),
            ],
            summary="brightness and class ratio moved",
        ),
        UpdateEvent(
            device_id=device,
            ts=T0,
            seq=5,
            model_name="catdog",
            release_id="catdog-4",
            from_version=3,
            to_version=4,
            state=UpdateState.PROBATION,
            duration_ms=840.0,
        ),
        Command(
            device_id=device,
            ts=T0,
            seq=6,
            cmd_id="cmd-42",
            action="pin",
            args={"version": 3, "reason": "canary failed"},
            issued_by="cloud",
            expires_at=T0 + timedelta(minutes=5),
        ),
        CommandAck(device_id=device, ts=T0, seq=7, cmd_id="cmd-42", result="done"),
        SensorFault(
            device_id=device,
            ts=T0,
            seq=8,
            sensor="pressure_mb",
            test="stuck",
            state="raised",
            since=T0 - timedelta(hours=3),
            observed_at=T0,
            value=1013.2,
            score=12.5,
            threshold=1.4,
            model_name="rain4h",
            model_version=5,
            summary="pressure_mb unchanged at 1013 for 4 readings",
        ),
        VisitEvent(
            device_id=device,
            ts=T0,
            seq=9,
            phase="end",
            visit_id="20261128-115930-0a1b2c3d",
            model_name="catdog",
            model_version=3,
            label="cat",
            confidence=0.97,
            started_at=T0 - timedelta(seconds=30),
            ended_at=T0 - timedelta(seconds=4),
            subject_frames=12,
            frames=14,
            label_frames={"cat": 10, "dog": 2},
            ended_by="quiet",
            snapshot=VisitSnapshot(
                id="20261128-115930-0a1b2c3d", bytes=48_213, sha256="c0" * 32, width=640, height=480
            ),
        ),
        StreamEventMessage(
            device_id=device,
            ts=T0,
            seq=10,
            source="gate",
            state="restored",
            at=T0,
            detail="reconnected",
            down_s=12.5,
        ),
    ]


def sample_manifest(**overrides: object) -> ReleaseManifest:
    fields: dict[str, object] = {
        "release_id": "catdog-4",
        "model": "catdog",
        "version": 4,
        "sha256": "ab" * 32,
        "size": 4_200_000,
        "urls": ["http://127.0.0.1:8000/artifacts/catdog/4/model.onnx"],
        "inputs": [TensorSpec(name="image", dtype="float32", shape=[None, 224, 224, 3])],
        "outputs": [TensorSpec(name="probs", dtype="float32", shape=["batch", 2])],
        "channel": "stable",
        "rollout": Rollout(percent=10, groups=["canary"], devices=["cam-07"]),
        "created": T0,
        "publisher": "cloud",
    }
    fields.update(overrides)
    return ReleaseManifest.model_validate(fields)


# -- hypothesis strategies ------------------------------------------------------------------

idents = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")
names = st.text(min_size=1, max_size=40)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
nonneg = st.floats(min_value=0, max_value=1e12, allow_nan=False)
percent = st.floats(min_value=0, max_value=100, allow_nan=False)
versions = st.integers(min_value=0, max_value=10**9)
labels = st.text(min_size=1, max_size=20)

base = {"device_id": idents, "ts": times, "seq": seqs}

message_strategies: dict[str, st.SearchStrategy[MessageBase]] = {
    "status": st.builds(
        StatusMessage,
        **base,
        site=idents,
        state=st.sampled_from(["starting", "online", "degraded", "stopping", "offline"]),
        model_name=st.none() | idents,
        model_version=st.none() | versions,
        detail=st.none() | st.text(max_size=100),
    ),
    "telemetry": st.builds(
        TelemetryMessage,
        **base,
        uptime_s=nonneg,
        cpu_percent=percent,
        mem_percent=percent,
        disk_percent=percent,
        temperature_c=st.none() | finite,
        rss_bytes=st.integers(0, 2**40),
        fps=nonneg,
        outbox_depth=st.integers(0, 10**9),
        dropped=st.dictionaries(names, st.integers(0, 10**9), max_size=5),
        labelled=st.none()
        | st.builds(
            LabelledAccuracy,
            accuracy=st.floats(0, 1),
            macro_f1=st.floats(0, 1),
            n=st.integers(1, 10**6),
        ),
        sensor_faults=st.none() | st.lists(names, min_size=1, max_size=4),
        visits=st.none()
        | st.builds(
            VisitCounters,
            frames=st.integers(0, 10**9),
            absent_frames=st.integers(0, 10**9),
            visits_started=st.integers(0, 10**6),
            visits_ended=st.integers(0, 10**6),
        ),
        absent_rate=st.none() | st.floats(0, 1),
    ),
    "prediction": st.builds(
        PredictionMessage,
        **base,
        model_name=idents,
        model_version=versions,
        label=labels,
        confidence=st.floats(0, 1),
        scores=st.dictionaries(labels, finite, max_size=5),
        latency_ms=nonneg,
        input_ts=st.none() | times,
        horizon_s=st.none() | st.integers(0, 10**6),
        flags=st.none() | st.lists(names, min_size=1, max_size=3),
    ),
    "drift": st.builds(
        DriftAlert,
        **base,
        model_name=idents,
        model_version=versions,
        state=st.sampled_from(["raised", "cleared"]),
        detector=names,
        window=st.builds(DriftWindow, start=times, end=times, n=st.integers(0, 10**9)),
        features=st.lists(
            st.builds(
                FeatureDrift,
                name=names,
                metric=st.sampled_from(["psi", "js", "wasserstein"]),
                score=finite,
                threshold=finite,
                baseline=st.none() | finite,
            ),
            min_size=1,
            max_size=4,
        ),
        summary=st.text(max_size=200),
    ),
    "event": st.builds(
        UpdateEvent,
        **base,
        model_name=idents,
        to_version=versions,
        from_version=st.none() | versions,
        state=st.sampled_from(list(UpdateState)),
        reason=st.none() | st.text(max_size=200),
    ),
    "cmd": st.builds(
        Command,
        **base,
        cmd_id=names,
        action=st.sampled_from(["ping", "rollback", "pin"]),
        args=st.dictionaries(
            names,
            st.one_of(st.text(max_size=20), st.integers(-(2**53), 2**53), finite, st.booleans()),
            max_size=4,
        ),
        issued_by=names,
    ),
    "sensor_fault": st.builds(
        SensorFault,
        **base,
        sensor=names,
        test=st.sampled_from(["stuck", "spike", "range", "step", "consistency"]),
        state=st.sampled_from(["raised", "cleared"]),
        since=times,
        observed_at=times,
        value=st.none() | finite,
        score=finite,
        threshold=finite,
        model_name=st.none() | idents,
        model_version=st.none() | versions,
        summary=st.text(max_size=200),
    ),
    "visit": st.builds(
        VisitEvent,
        **base,
        phase=st.just("start"),
        visit_id=idents,
        model_name=idents,
        model_version=versions,
        label=labels,
        confidence=st.floats(0, 1),
        started_at=times,
        subject_frames=st.integers(1, 10**6),
        frames=st.just(10**6),
        label_frames=st.dictionaries(labels, st.integers(1, 10**6), max_size=3),
    ),
    "stream": st.builds(
        StreamEventMessage,
        **base,
        source=names,
        state=st.sampled_from(["lost", "frozen", "restored"]),
        at=times,
        detail=st.none() | st.text(max_size=100),
        down_s=st.none() | nonneg,
    ),
    "cmd_ack": st.builds(
        CommandAck,
        **base,
        cmd_id=names,
        result=st.sampled_from(["accepted", "done", "rejected", "expired", "failed"]),
        detail=st.none() | st.text(max_size=100),
    ),
}

manifests = st.builds(
    sample_manifest,
    release_id=names,
    model=idents,
    version=versions,
    sha256=st.from_regex(r"\A[0-9a-f]{64}\Z"),
    size=st.integers(1, 512 * 1024 * 1024),
    channel=idents,
    created=times,
    allow_downgrade=st.booleans(),
    rollout=st.builds(
        Rollout,
        percent=percent,
        groups=st.lists(idents, max_size=3),
        devices=st.lists(idents, max_size=3),
        wave=st.integers(0, 10),
    ),
)
