"""The real station history for sensor-health tests: the training years' baseline, and
replays of held-out hours (optionally with one sensor broken) through a monitor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cloud_trainer.weather.ingest import HourlyHistory, load_station_history
from edge_agent.features.weather import READING_FIELDS
from edge_agent.health.baseline import sensor_health_baseline
from edge_agent.health.gates import FaultChange
from edge_agent.health.monitor import SensorHealthMonitor
from edge_agent.protocol.sensors import SensorHealthBaseline

# The weather pipeline's split of this file: training before 2014, the test year is 2015.
VALIDATION_START = np.datetime64("2014-01-01T00", "h")
TEST_START = np.datetime64("2015-01-01T00", "h")


@dataclass(frozen=True)
class Station:
    history: HourlyHistory
    baseline: SensorHealthBaseline

    def index(self, hour: str) -> int:
        return int(np.searchsorted(self.history.hours, np.datetime64(hour, "h")))

    def readings(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        return {k: v[lo:hi].copy() for k, v in self.history.readings.items()}


def load_station(shared_data: Path) -> Station:
    history, _ = load_station_history(shared_data / "weather" / "weather_dataset_raw.csv.gz")
    train = history.hours < VALIDATION_START
    baseline = sensor_health_baseline(
        history.hours[train], {k: v[train] for k, v in history.readings.items()}
    )
    return Station(history, baseline)


@dataclass
class Replayed:
    changes: list[tuple[int, FaultChange]]
    faulty: list[list[str]]  # per row, the sensors faulty after it

    def raised(self, sensor: str | None = None) -> list[tuple[int, FaultChange]]:
        return [
            (k, c)
            for k, c in self.changes
            if c.state == "raised" and (sensor is None or c.sensor == sensor)
        ]


def replay(
    monitor: SensorHealthMonitor,
    station: Station,
    lo: int,
    hi: int,
    breaks: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> Replayed:
    """Rows ``lo..hi`` in time order as the agent sees them (an hour missing a reading is
    refused whole); ``breaks`` edits the readings first (row 0 is ``lo``)."""
    readings = station.readings(lo, hi)
    if breaks is not None:
        breaks(readings)
    hours = station.history.hours[lo:hi]
    out = Replayed([], [])
    for k in range(hi - lo):
        row = {name: float(readings[name][k]) for name in READING_FIELDS}
        if not all(np.isfinite(v) for v in row.values()):
            out.faulty.append(monitor.faulty())
            continue
        at = datetime.fromisoformat(str(hours[k].astype("datetime64[s]"))).replace(tzinfo=UTC)
        out.changes.extend((k, c) for c in monitor.observe(at, row))
        out.faulty.append(monitor.faulty())
    return out
