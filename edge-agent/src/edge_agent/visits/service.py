"""Wiring the visit tracker into a running agent: its prediction hook, a worker that stores
snapshots and publishes visit events, telemetry counters, ``/visits`` and the final flush.

The inference thread only updates the tracker (a few dictionary operations) and hands a
visit change to the worker; JPEG encoding and disk writes happen on the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.protocol.messages import (
    VisitCounters,
    VisitEvent,
    VisitSnapshot,
    utc_now,
)
from edge_agent.visits.config import VisitsConfig
from edge_agent.visits.snapshots import (
    EncodedSnapshot,
    SnapshotError,
    SnapshotStore,
    encode_capped,
)
from edge_agent.visits.tracker import Visit, VisitTracker

if TYPE_CHECKING:
    from edge_agent.drift.capture import CaptureStore
    from edge_agent.inference.engine import InferenceEngine, Prediction
    from edge_agent.runtime.agent import EdgeAgent
    from edge_agent.sources.sample import Sample

log = logging.getLogger(__name__)

# Best frames waiting for the worker's JPEG encoder (a 1080p frame is 6 MB); beyond this an
# ended visit goes out without its snapshot, counted as snapshot_dropped (the event is kept).
MAX_PENDING = 4
TICK_S = 0.5


def is_subject(engine: InferenceEngine, label: str) -> bool:
    """Whether ``label`` names the subject: anything but the model's absent label."""
    presence = engine.spec.presence
    return presence is None or label != presence.absent_label


class VisitService:
    """One tracker for the device; a model swap keeps it (a visit outlives a new model)."""

    def __init__(
        self,
        agent: EdgeAgent,
        config: VisitsConfig,
        data_dir: Path,
        capture: CaptureStore | None = None,
    ) -> None:
        self.agent = agent
        self.config = config
        self.tracker = VisitTracker(config.min_frames, config.quiet_s)
        directory = (
            config.directory if config.directory.is_absolute() else data_dir / config.directory
        )
        self.store = SnapshotStore(directory, config.max_files, config.max_bytes)
        self.capture = capture if config.upload else None
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._queue: queue.Queue[Visit] = queue.Queue()
        self._pending_frames = 0
        self._clock: tuple[datetime, float] | None = None  # last capture time, monotonic then
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    def attach(self) -> VisitService:
        self.agent.on_prediction(self.observe)
        self.agent.set_visits(self)
        self.agent.on_stop(self.stop)
        self._worker = threading.Thread(target=self._run, name="visits", daemon=True)
        self._worker.start()
        return self

    # -- inference thread ---------------------------------------------------------------

    def observe(self, sample: Sample, prediction: Prediction, engine: InferenceEngine) -> None:
        subject = is_subject(engine, prediction.label)
        with self._lock:
            if self._stopping.is_set():
                return
            self._clock = (sample.ts, time.monotonic())
            seen = self.tracker.observe(
                sample.ts,
                prediction.label,
                prediction.confidence,
                subject,
                engine.spec.name,
                self.agent.model_version(engine),
                sample.frame if self.config.snapshots else None,
            )
            for visit in seen.changes:
                self._hand_over(visit)

    def _hand_over(self, visit: Visit) -> None:
        if visit.best is not None:
            if self._pending_frames >= MAX_PENDING:
                self.counters["snapshot_dropped"] += 1
                visit = _without_frame(visit)
            else:
                self._pending_frames += 1
        self._queue.put(visit)

    # -- worker -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                visit = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                self._tick()
                continue
            self._publish_guarded(visit)

    def _tick(self) -> None:
        """End a visit when frames stopped coming: the capture clock moves on by the time
        the device waited since the last frame."""
        with self._lock:
            if self._clock is None or self._stopping.is_set():
                return
            last_ts, at = self._clock
            now = last_ts + timedelta(seconds=time.monotonic() - at)
            for visit in self.tracker.tick(now):
                self._hand_over(visit)

    def _publish_guarded(self, visit: Visit) -> None:
        try:
            self.publish(visit)
        except Exception:  # one visit's failure must not stop the worker
            self.counters["publish_errors"] += 1
            log.exception("visit %s could not be published", visit.visit_id)

    def publish(self, visit: Visit) -> VisitEvent:
        """Store the end's record and snapshot, then queue the event in the outbox."""
        snapshot: EncodedSnapshot | None = None
        if visit.best is not None:
            with self._lock:
                self._pending_frames -= 1
            snapshot = self._encode(visit)
        message = VisitEvent(
            device_id=self.agent.config.device_id,
            ts=utc_now(),
            seq=0,
            phase=visit.phase,
            visit_id=visit.visit_id,
            model_name=visit.model_name,
            model_version=visit.model_version,
            label=visit.label,
            confidence=visit.confidence,
            started_at=visit.started_at,
            ended_at=visit.ended_at,
            subject_frames=visit.subject_frames,
            frames=visit.frames,
            label_frames=visit.label_frames,
            ended_by=visit.ended_by,
            snapshot=None
            if snapshot is None
            else VisitSnapshot(
                id=visit.visit_id,
                bytes=len(snapshot.jpeg),
                sha256=snapshot.sha256,
                width=snapshot.width,
                height=snapshot.height,
            ),
        )
        if visit.phase == "end":
            self._keep(message, snapshot)
        self.agent.publish_event(message)
        self.counters[f"published_{visit.phase}"] += 1
        return message

    def _encode(self, visit: Visit) -> EncodedSnapshot | None:
        frame = visit.best
        if not isinstance(frame, np.ndarray):
            return None
        try:
            return encode_capped(
                frame,
                self.config.snapshot_max_bytes,
                self.config.snapshot_max_side,
                self.config.snapshot_quality,
            )
        except (SnapshotError, ValueError) as e:
            self.counters["snapshot_failed"] += 1
            log.warning("visit %s: no snapshot: %s", visit.visit_id, e)
            return None

    def _keep(self, message: VisitEvent, snapshot: EncodedSnapshot | None) -> None:
        record = message.model_dump(
            mode="json", exclude={"schema_version", "event_schema", "seq", "ts", "type"}
        )
        try:
            self.store.save(message.visit_id, record, snapshot)
        except SnapshotError as e:
            # Best effort: the event still goes out, only the local copy is missing.
            self.counters["store_failed"] += 1
            log.warning("visit %s not kept on disk: %s", message.visit_id, e)
            return
        if self.capture is not None and snapshot is not None:
            self._queue_upload(message, snapshot)

    def _queue_upload(self, message: VisitEvent, snapshot: EncodedSnapshot) -> None:
        assert self.capture is not None
        from edge_agent.drift.capture import CaptureError

        meta = {
            "input_id": message.visit_id,
            "visit_id": message.visit_id,
            "captured_at": message.started_at.isoformat(),
            "model_name": message.model_name,
            "model_version": message.model_version,
            "label": message.label,
            "confidence": message.confidence,
        }
        try:
            self.capture.keep_jpeg(snapshot.jpeg, meta, "visit")
        except CaptureError as e:
            self.counters["upload_queue_failed"] += 1
            log.warning("visit %s snapshot not queued for upload: %s", message.visit_id, e)

    # -- readers ------------------------------------------------------------------------

    def visit_counters(self) -> VisitCounters:
        with self._lock:
            counts = self.tracker.counts
            return VisitCounters(
                frames=counts.frames,
                absent_frames=counts.absent_frames,
                visits_started=counts.started,
                visits_ended=counts.ended,
            )

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The visit under way (``phase: open``), then the ended ones kept, newest first."""
        with self._lock:
            current = self.tracker.open_visit
        out: list[dict[str, Any]] = []
        if current is not None:
            out.append(
                {
                    "phase": "open",
                    "visit_id": current.visit_id,
                    "label": current.label,
                    "confidence": current.confidence,
                    "started_at": current.started_at.isoformat(),
                    "subject_frames": current.subject_frames,
                    "frames": current.frames,
                    "model_name": current.model_name,
                    "model_version": current.model_version,
                }
            )
        return out + self.store.recent(max(0, limit - len(out)))

    def snapshot(self, visit_id: str) -> bytes | None:
        return self.store.snapshot(visit_id)

    # -- shutdown -----------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """End the open visit and publish everything waiting, before the outbox's last flush
        (the agent calls this once inference has stopped)."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            for visit in self.tracker.flush():
                self._hand_over(visit)
        if self._worker is not None:
            self._worker.join(timeout)
        while True:
            try:
                visit = self._queue.get_nowait()
            except queue.Empty:
                return
            self._publish_guarded(visit)


def _without_frame(visit: Visit) -> Visit:
    return replace(visit, best=None)
