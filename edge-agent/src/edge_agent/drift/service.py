"""Wiring the drift monitor into a running agent: its prediction hook, its outbox, ``/drift``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.drift.capture import CaptureStore
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.drift.upload import SampleUploader, UploadError
from edge_agent.protocol.messages import LabelledAccuracy, utc_now

if TYPE_CHECKING:
    from edge_agent.inference.engine import InferenceEngine, Prediction
    from edge_agent.runtime.agent import EdgeAgent
    from edge_agent.sources.sample import Sample

log = logging.getLogger(__name__)


class DriftService:
    """One monitor per serving model: a hot swap (or rollback) starts a fresh monitor on the
    new model's baselines, since the old windows describe another model's inputs."""

    def __init__(self, agent: EdgeAgent, config: DriftConfig, data_dir: Path) -> None:
        self.agent = agent
        self.config = config
        self.capture: CaptureStore | None = None
        if config.capture.enabled:
            directory = config.capture.directory
            self.capture = CaptureStore(
                config.capture, directory if directory.is_absolute() else data_dir / directory
            )
        self.monitor: DriftMonitor | None = None
        self._engine: InferenceEngine | None = None
        self._stop = threading.Event()
        self._uploads: threading.Thread | None = None

    def attach(self) -> DriftService:
        self.agent.on_prediction(self.observe)
        self.agent.set_drift_provider(self.snapshot)
        self.agent.set_labelled_provider(self.labelled)
        self.agent.set_absent_rate_provider(self.absent_rate)
        return self

    def observe(self, sample: Sample, prediction: Prediction, engine: InferenceEngine) -> None:
        if self._engine is not engine or self.monitor is None:
            self._engine = engine
            self.monitor = DriftMonitor.from_spec(
                engine.spec,
                self.config,
                model_version=self.agent.model_version(engine),
                capture=self.capture,
            )
        for verdict in self.monitor.observe(sample, prediction):
            # The agent's outbox stamps the real device id and sequence number.
            self.agent.publish_event(verdict.to_message(self.agent.config.device_id, 0, utc_now()))

    def snapshot(self) -> dict[str, object]:
        monitor = self.monitor
        if monitor is None:
            return {"enabled": self.config.enabled, "detectors": [], "samples": 0}
        return {"enabled": self.config.enabled, **monitor.snapshot().model_dump(mode="json")}

    def labelled(self) -> LabelledAccuracy | None:
        """The serving model's accuracy on labelled predictions, for telemetry; a swap starts
        it afresh with the new model's monitor."""
        monitor = self.monitor
        return None if monitor is None else monitor.labelled()

    def absent_rate(self) -> float | None:
        """The serving model's recent share of absent frames (no_pet), for telemetry."""
        monitor = self.monitor
        return None if monitor is None else monitor.absent_rate()

    def start_uploads(self, interval_s: float = 60.0) -> None:
        """Upload captured samples in the background when an upload URL is configured."""
        if self.capture is None or self.config.capture.upload_url is None:
            return
        uploader = SampleUploader(self.capture, self.agent.config.device_id)

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    sent = uploader.upload_pending()
                except UploadError as e:
                    log.warning("sample upload: %s", e)
                    continue
                if sent:
                    log.info("uploaded %s captured samples", sent)

        self._uploads = threading.Thread(target=loop, name="sample-upload", daemon=True)
        self._uploads.start()

    def stop(self) -> None:
        self._stop.set()
        if self._uploads is not None:
            self._uploads.join(timeout=5)
