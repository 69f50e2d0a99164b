"""A camera reports visits, not frames.

A real agent serves a real ONNX model with a ``no_pet`` label (red: cat, blue: dog, green:
an empty scene) over a real Mosquitto to a running fleet service. A recorded frame sequence
(capture times 5 s apart) holds empty stretches, a stray cat frame and two visits; the agent
publishes exactly one start and one end per visit (the second ended by the shutdown), only
the pet frames as predictions, the camera's stream loss and recovery, and telemetry that
counts frames and visits. The best frame is fetched from the local API; the fleet stores the
visits and serves them. A second run reads a real video file through the camera source.
"""

from __future__ import annotations

import collections
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import queries, sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.api import ApiServer, create_app
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.config.device import DeviceConfig
from edge_agent.drift.service import DriftService
from edge_agent.protocol import (
    PredictionMessage,
    StatusMessage,
    StreamEventMessage,
    TelemetryMessage,
    VisitEvent,
    decode_message,
)
from edge_agent.runtime.agent import EdgeAgent
from edge_agent.sources import Sample, SourceClosed
from edge_agent.sources.events import StreamEvent
from edge_agent.visits.service import VisitService
from tests.integration.agent_fixtures import build_agent
from tests.support.media import write_video
from tests.support.mqtt import Collector
from tests.support.onnx_models import green_frame, presence_classifier, tinted_frame

pytestmark = pytest.mark.integration

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SITE = "garden"
T0 = datetime(2026, 4, 2, 7, 0, tzinfo=UTC)
STEP_S = 5.0
QUIET_S = 20.0


def cat(red: int) -> np.ndarray:
    return tinted_frame(0, 0, red)


def dog(blue: int) -> np.ndarray:
    return tinted_frame(blue, 0, 0)


# The recording, one frame every 5 s: (frame, what it shows).
EMPTY = green_frame()
RECORDING: list[np.ndarray] = (
    [EMPTY] * 6
    + [cat(200)]  # a stray frame: one alone is not a visit
    + [EMPTY] * 3
    + [cat(r) for r in (120, 160, 200)]
    + [cat(250), cat(180), dog(200), cat(140), cat(130)]  # visit A: mostly cat
    + [EMPTY] * 7  # A ends at the first frame 20 s after its last cat
    + [dog(b) for b in (150, 200, 230, 180, 210, 190)]  # visit B: open when the file ends
    + [EMPTY] * 2
)
VISIT_A = range(10, 18)
VISIT_B = range(25, 31)
LOST_AFTER, RESTORED_AFTER = 20, 23  # reads after which the source reports its stream


def at(index: int) -> datetime:
    return T0 + timedelta(seconds=STEP_S * index)


class RecordedCamera:
    """Frames with the capture times they were recorded at, read as fast as the agent asks,
    and the stream events a live camera reports (``pop_events``)."""

    name = "garden-gate"

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.counters: collections.Counter[str] = collections.Counter()
        self._next = 0
        self._events: list[StreamEvent] = []

    def read(self, timeout: float) -> Sample | None:
        if self._next >= len(self.frames):
            raise SourceClosed("recording ended")
        i = self._next
        self._next += 1
        self.counters["samples"] += 1
        if i == LOST_AFTER:
            self._events.append(StreamEvent(self.name, "lost", at(i), "no frame for 4 s"))
        if i == RESTORED_AFTER:
            self._events.append(StreamEvent(self.name, "restored", at(i), "reconnected", 10.0))
        return Sample(ts=at(i), input_id=f"frame-{i:04d}", frame=self.frames[i])

    def pop_events(self) -> list[StreamEvent]:
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        self._next = len(self.frames)


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout:.0f} s"
        time.sleep(0.05)


@dataclass
class Fleet:
    service: FleetService
    root: str
    endpoint: BrokerEndpoint
    workdir: Path
    model: Path


@pytest.fixture(scope="module")
def fleet(mosquitto: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("visits")
    root = f"vi{uuid.uuid4().hex[:6]}"
    service = FleetService(
        FleetSettings(
            database_url=sqlite_url(workdir / "fleet.db"),
            broker_host=mosquitto.host,
            broker_port=mosquitto.port,
            root=root,
            http_port=0,
            api_tokens=parse_tokens(f"operator={TOKEN}"),
            samples_dir=workdir / "samples",
        )
    ).start()
    model = workdir / "catdog-presence.onnx"
    presence_classifier(model)
    try:
        yield Fleet(service, root, BrokerEndpoint(mosquitto.host, mosquitto.port), workdir, model)
    finally:
        service.stop()


def camera_config(
    fleet: Fleet,
    device: str,
    source: dict[str, Any],
    drift: dict[str, Any] | None = None,
    **visits: Any,
) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "device_id": device,
            "site": SITE,
            "kind": "camera",
            "source": source,
            "model": {"path": str(fleet.model), "version": 7},
            "broker": {
                "host": fleet.endpoint.host,
                "port": fleet.endpoint.port,
                "topic_root": fleet.root,
            },
            "limits": {
                "outbox_path": str(fleet.workdir / device / "outbox.db"),
                "telemetry_interval_s": 0.5,
                "flush_timeout_s": 10,
            },
            "api": {"port": 0},
            "visits": visits,
            "drift": drift or {},
        }
    )


@dataclass
class Run:
    agent: EdgeAgent
    messages: list[Any]
    api: dict[str, Any]
    snapshots: dict[str, httpx.Response]

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]


def run_camera(
    fleet: Fleet,
    config: DeviceConfig,
    source: object | None,
    after_stop: Callable[[], None] = lambda: None,
) -> Run:
    agent = build_agent(config, with_source=source is None)
    if source is not None:
        agent.source = source  # type: ignore[assignment]
    data_dir = config.limits.outbox_path.parent
    assert config.drift is not None
    drift = DriftService(agent, config.drift, data_dir).attach()
    drift.start_uploads(interval_s=0.2)
    VisitService(agent, config.visits, data_dir, drift.capture).attach()
    server = ApiServer(create_app(agent, token=TOKEN), "127.0.0.1", 0)
    server.start()
    device = config.device_id
    try:
        with Collector(fleet.endpoint, f"{fleet.root}/{SITE}/{device}/#") as collector:

            def decoded() -> list[Any]:
                return [decode_message(p) for _t, p in list(collector.messages)]

            agent.start(connect_timeout=10)
            try:
                wait_until(lambda: agent.supervisor.workers["inference"].finished, 60, "replay")
                finished_at = datetime.now(UTC)
                wait_until(
                    lambda: any(
                        isinstance(m, TelemetryMessage) and m.ts > finished_at for m in decoded()
                    ),
                    what="telemetry after the replay",
                )
            finally:
                assert agent.stop() is True
                after_stop()
                drift.stop()
            wait_until(
                lambda: any(
                    isinstance(m, StatusMessage) and m.state == "offline" for m in decoded()
                ),
                what="offline status",
            )
            # In the order they were queued: a backlog queued before the connection came up
            # is sent after the live messages.
            messages = sorted(decoded(), key=lambda m: m.seq)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            listed = client.get("/visits").json()
            snapshots = {
                v["visit_id"]: client.get(f"/visits/{v['visit_id']}/snapshot")
                for v in listed["visits"]
            }
    finally:
        server.stop()
    return Run(agent, messages, listed, snapshots)


@pytest.fixture(scope="module")
def recorded(fleet: Fleet) -> Run:
    config = camera_config(
        fleet,
        "cam-rec",
        {"type": "camera", "uri": str(fleet.workdir / "unused.avi")},
        min_frames=2,
        quiet_s=QUIET_S,
    )
    return run_camera(fleet, config, RecordedCamera(RECORDING))


def test_exactly_one_start_and_one_end_per_visit(recorded: Run) -> None:
    visits = recorded.of(VisitEvent)  # in the order queued: A's end before B's start
    assert [(v.phase, v.ended_by) for v in visits] == [
        ("start", None),
        ("end", "quiet"),
        ("start", None),
        ("end", "shutdown"),
    ]
    start_a, end_a, start_b, end_b = visits
    assert start_a.visit_id == end_a.visit_id != start_b.visit_id == end_b.visit_id
    assert start_a.started_at == end_a.started_at == at(VISIT_A[0])
    assert end_a.ended_at == at(VISIT_A[-1])
    assert (end_a.label, end_a.label_frames) == ("cat", {"cat": 7, "dog": 1})
    assert (end_a.subject_frames, end_a.frames) == (8, 8)
    assert (start_b.started_at, end_b.ended_at) == (at(VISIT_B[0]), at(VISIT_B[-1]))
    assert (end_b.label, end_b.subject_frames, end_b.frames) == ("dog", 6, 6)
    assert (start_a.model_name, start_a.model_version) == ("catdog", 7)


def test_only_pet_frames_are_published_as_predictions(recorded: Run) -> None:
    predictions = recorded.of(PredictionMessage)
    pets = [i for i, f in enumerate(RECORDING) if f is not EMPTY]
    assert [p.input_id for p in predictions] == [f"frame-{i:04d}" for i in pets]
    assert {p.label for p in predictions} == {"cat", "dog"}
    # The visit's confidence is its best frame's, as the predictions show it.
    visits = {v.visit_id: v for v in recorded.of(VisitEvent) if v.phase == "end"}
    for visit, frames in zip(visits.values(), (VISIT_A, VISIT_B), strict=True):
        ids = {f"frame-{i:04d}" for i in frames}
        best = max(p.confidence for p in predictions if p.input_id in ids)
        assert visit.confidence == pytest.approx(best)


def test_the_best_frame_is_served_by_the_local_api(recorded: Run) -> None:
    ends = [v for v in recorded.of(VisitEvent) if v.phase == "end"]
    listed = recorded.api["visits"]
    assert [v["visit_id"] for v in listed] == [ends[1].visit_id, ends[0].visit_id]  # newest first
    assert listed[1]["label"] == "cat" and listed[1]["ended_by"] == "quiet"
    expected_best = {ends[0].visit_id: cat(250), ends[1].visit_id: dog(230)}
    for end in ends:
        response = recorded.snapshots[end.visit_id]
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        body = response.content
        assert end.snapshot is not None and end.snapshot.id == end.visit_id
        assert (len(body), hashlib.sha256(body).hexdigest()) == (
            end.snapshot.bytes,
            end.snapshot.sha256,
        )
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert (image.shape[1], image.shape[0]) == (end.snapshot.width, end.snapshot.height)
        best = expected_best[end.visit_id]
        assert np.abs(image.mean(axis=(0, 1)) - best.mean(axis=(0, 1))).max() < 4


def test_stream_loss_and_recovery_travel_as_events(recorded: Run) -> None:
    streams = recorded.of(StreamEventMessage)
    assert [(s.source, s.state, s.at, s.down_s) for s in streams] == [
        ("garden-gate", "lost", at(LOST_AFTER), None),
        ("garden-gate", "restored", at(RESTORED_AFTER), 10.0),
    ]


def test_telemetry_counts_frames_and_visits(recorded: Run) -> None:
    last = recorded.of(TelemetryMessage)[-1]
    assert last.visits is not None
    empty = sum(1 for f in RECORDING if f is EMPTY)
    assert (last.visits.frames, last.visits.absent_frames) == (len(RECORDING), empty)
    assert (last.visits.visits_started, last.visits.visits_ended) == (2, 1)  # B ends at stop
    assert last.absent_rate == pytest.approx(empty / len(RECORDING))


def test_the_fleet_stores_and_serves_the_visits(fleet: Fleet, recorded: Run) -> None:
    ends = [v for v in recorded.of(VisitEvent) if v.phase == "end"]
    store = fleet.service.store

    def stored() -> list[dict[str, Any]]:
        return store.read(lambda c: queries.visits(c, "cam-rec"))

    wait_until(lambda: all(r["ended_at"] is not None for r in stored()) and len(stored()) == 2)
    with httpx.Client(base_url=fleet.service.base_url, headers=AUTH, timeout=10) as client:
        served = client.get("/api/devices/cam-rec/visits").json()
        detail = client.get("/api/devices/cam-rec").json()
        assert client.get("/api/devices/nobody/visits").status_code == 404
    assert served["count"] == 2 and detail["visits"] == served["visits"]
    newest, oldest = served["visits"]
    for row, end in ((oldest, ends[0]), (newest, ends[1])):
        assert end.snapshot is not None and end.ended_at is not None
        assert (row["visit_id"], row["label"], row["ended_by"]) == (
            end.visit_id,
            end.label,
            end.ended_by,
        )
        assert row["started_at"] == pytest.approx(end.started_at.timestamp())
        assert row["ended_at"] == pytest.approx(end.ended_at.timestamp())
        assert (row["snapshot_sha256"], row["snapshot_bytes"]) == (
            end.snapshot.sha256,
            end.snapshot.bytes,
        )
        assert row["end_seq"] == end.seq and row["start_seq"] is not None
    assert [s["state"] for s in served["stream_events"]] == ["restored", "lost"]
    telemetry = detail["telemetry"]
    assert telemetry and telemetry[-1]["visit_frames"] == len(RECORDING)
    assert telemetry[-1]["visits_started"] == 2


def test_snapshots_upload_through_the_capture_uploader(fleet: Fleet) -> None:
    """With ``visits.upload`` each snapshot joins the drift capture's samples and reaches the
    fleet's sample store byte for byte: the sha256 of the visit's end event finds it."""
    token = fleet.workdir / "capture-token"
    token.write_text(TOKEN)
    capture = {
        "enabled": True,
        "low_confidence": False,
        "random_sample_rate": 0.0,
        "drift_windows": False,
        "upload_url": f"{fleet.service.base_url}/api/samples",
        "token_file": str(token),
    }
    config = camera_config(
        fleet,
        "cam-up",
        {"type": "camera", "uri": str(fleet.workdir / "unused.avi")},
        drift={"capture": capture},
        min_frames=2,
        quiet_s=QUIET_S,
        upload=True,
    )

    def uploaded() -> list[dict[str, Any]]:
        return fleet.service.store.read(lambda c: queries.list_samples(c, "cam-up"))

    run = run_camera(
        fleet,
        config,
        RecordedCamera(RECORDING),
        after_stop=lambda: wait_until(lambda: len(uploaded()) == 2, what="both uploaded"),
    )
    ends = [v for v in run.of(VisitEvent) if v.phase == "end"]
    by_sha = {s["sha256"]: s for s in uploaded()}
    assert len(ends) == 2
    for end in ends:
        assert end.snapshot is not None
        sample = by_sha[end.snapshot.sha256]
        assert (sample["reason"], sample["label"], sample["size"]) == (
            "visit",
            end.label,
            end.snapshot.bytes,
        )
        assert sample["content_type"] == "image/jpeg" and sample["model_version"] == 7
        assert Path(sample["path"]).read_bytes() == run.snapshots[end.visit_id].content


def test_a_video_file_through_the_camera_source(fleet: Fleet) -> None:
    """The same through the real camera source, paced like the camera (10 frames a second):
    a cat for 0.8 s, 3 s of empty scene, a dog for 0.8 s."""
    frames = [EMPTY] * 5 + [cat(220)] * 8 + [EMPTY] * 30 + [dog(220)] * 8 + [EMPTY] * 2
    video = write_video(fleet.workdir / "garden.avi", frames, fps=10.0)
    source = {"type": "camera", "uri": str(video), "pace": "realtime", "fps": 10, "on_end": "close"}
    config = camera_config(fleet, "cam-video", source, min_frames=2, quiet_s=1.5)
    run = run_camera(fleet, config, None)
    visits = run.of(VisitEvent)
    assert [(v.phase, v.label) for v in visits] == [
        ("start", "cat"),
        ("end", "cat"),
        ("start", "dog"),
        ("end", "dog"),
    ]
    assert visits[1].ended_by == "quiet" and visits[1].subject_frames == 8
    assert visits[3].ended_by in ("quiet", "shutdown") and visits[3].subject_frames == 8
    assert [p.label for p in run.of(PredictionMessage)] == ["cat"] * 8 + ["dog"] * 8
    for end in (visits[1], visits[3]):
        assert run.snapshots[end.visit_id].status_code == 200
