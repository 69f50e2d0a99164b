"""Wiring the sensor-health tests into a running agent: they see every hourly sample before
the model does, flag or withhold its forecast, and send ``sensor_fault`` messages."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edge_agent.features.weather import READING_FIELDS
from edge_agent.health.config import SensorHealthConfig
from edge_agent.health.gates import FaultChange
from edge_agent.health.monitor import SensorHealthMonitor
from edge_agent.protocol.messages import utc_now

if TYPE_CHECKING:
    from edge_agent.inference.engine import InferenceEngine
    from edge_agent.runtime.agent import EdgeAgent
    from edge_agent.sources.sample import Sample

log = logging.getLogger(__name__)

OUT_OF_RANGE = "out_of_range:"


def readings_from_features(features: Mapping[str, float]) -> dict[str, float]:
    """The station's hourly readings inside a ``weather-hourly-v1`` feature row (the wind
    bearing comes back from its sine and cosine)."""
    out = {name: float(features[name]) for name in READING_FIELDS if name in features}
    if "wind_bearing_deg" not in out and {"wind_bearing_sin", "wind_bearing_cos"} <= set(features):
        angle = math.atan2(features["wind_bearing_sin"], features["wind_bearing_cos"])
        out["wind_bearing_deg"] = math.degrees(angle) % 360.0
    return out


class SensorHealthService:
    """One monitor for the serving model's baseline. A model swap keeps the monitor when the
    new model carries the same baseline (the sensors did not change); otherwise the open
    faults are cleared, said so, and the tests start again on the new limits."""

    def __init__(self, agent: EdgeAgent, config: SensorHealthConfig) -> None:
        self.agent = agent
        self.config = config
        self.monitor: SensorHealthMonitor | None = None
        self._engine: InferenceEngine | None = None
        self._rejected_seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def attach(self) -> SensorHealthService:
        self.agent.set_sample_screen(self.screen)
        self.agent.set_sensor_faults_provider(self.faulty)
        return self

    def screen(self, sample: Sample) -> tuple[list[str], bool]:
        """Test the sample's readings; (flags for its prediction, withhold it)."""
        with self._lock:
            monitor = self._monitor_for(self.agent.slot.current, sample)
            if monitor is None or sample.features is None:
                return [], False
            changes = monitor.observe(
                sample.ts, readings_from_features(sample.features), self._rejected()
            )
            self._publish(changes)
            faulty = monitor.faulty()
        flags = [f"sensor_fault:{s}" for s in faulty] if self.config.flag_predictions else []
        return flags, bool(faulty) and self.config.withhold_forecasts

    def faulty(self) -> list[str]:
        monitor = self.monitor
        return [] if monitor is None else monitor.faulty()

    def snapshot(self) -> dict[str, Any]:
        monitor = self.monitor
        if monitor is None:
            return {"enabled": self.config.enabled, "sensors": [], "faulty": []}
        return {"enabled": self.config.enabled, **monitor.snapshot()}

    def _monitor_for(self, engine: InferenceEngine, sample: Sample) -> SensorHealthMonitor | None:
        if engine is self._engine:
            return self.monitor
        self._engine = engine
        baseline = engine.spec.sensor_health
        old = self.monitor
        if old is not None and baseline is not None and old.baseline == baseline:
            return old
        if old is not None:
            closing = []
            for gate in old.gates.values():
                change = gate.clear(sample.ts, None, 0.0, 0.0, "model changed: tests restart")
                if change is not None:
                    closing.append(change)
            self._publish(closing)
        self.monitor = SensorHealthMonitor.from_spec(engine.spec, self.config)
        if self.monitor is None:
            log.info(
                "model %s carries no sensor-health baseline: no sensor tests", engine.spec.name
            )
        return self.monitor

    def _rejected(self) -> set[str]:
        """Sensors whose readings the source refused as impossible since the last sample."""
        source = self.agent.source
        if source is None:
            return set()
        out = set()
        for key, count in list(source.counters.items()):
            if not key.startswith(OUT_OF_RANGE):
                continue
            sensor = key[len(OUT_OF_RANGE) :]
            if count > self._rejected_seen.get(sensor, 0):
                out.add(sensor)
            self._rejected_seen[sensor] = count
        return out

    def _publish(self, changes: list[FaultChange]) -> None:
        engine = self._engine
        name = engine.spec.name if engine is not None else None
        version = self.agent.model_version(engine) if engine is not None else None
        for change in changes:
            # The agent's outbox stamps the real device id and sequence number.
            message = change.to_message(self.agent.config.device_id, 0, utc_now(), name, version)
            self.agent.publish_event(message)
