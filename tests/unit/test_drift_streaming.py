"""Streaming detectors on synthetic error streams, and the weather station's online score
from its own forecasts joined with what it observed 4 hours later (real station rows)."""

from __future__ import annotations

import csv
import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_agent.drift.accuracy import macro_f1
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.drift.streaming import Adwin, PageHinkley
from edge_agent.protocol import TensorSpec
from edge_agent.protocol.bundle import ModelSpec
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction


def _errors(rng, rates_and_lengths):
    return np.concatenate([rng.random(n) < p for p, n in rates_and_lengths]).astype(float)


@pytest.mark.parametrize("make", ["page_hinkley", "adwin"])
def test_streaming_detectors_find_a_rising_error_rate_and_stay_quiet_otherwise(make) -> None:
    def build():
        if make == "page_hinkley":
            return PageHinkley(delta=0.02, threshold=15.0, min_samples=100)
        return Adwin(delta=0.002, max_window=2000, clock=16)

    rng = np.random.default_rng(8)
    quiet = build()
    changes = [c for c in (quiet.update(x) for x in _errors(rng, [(0.1, 5000)])) if c == "up"]
    assert changes == []
    det = build()
    stream = _errors(rng, [(0.1, 1000), (0.4, 1000)])
    ups = [k for k, x in enumerate(stream) if det.update(x) == "up"]
    assert ups and 1000 <= ups[0] <= 1150
    downs = [k for k, x in enumerate(_errors(rng, [(0.1, 1500)])) if det.update(x) == "down"]
    assert downs and downs[0] <= 400


def test_adwin_memory_is_bounded() -> None:
    adwin = Adwin(delta=0.002, max_window=300, clock=8)
    for x in np.random.default_rng(1).random(10_000) < 0.2:
        adwin.update(float(x))
    assert adwin.width <= 300


def test_macro_f1_matches_a_hand_count() -> None:
    pred = np.array([0, 0, 1, 1, 2])
    obs = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp0 fn1 -> 0.8; class 2: tp0 fp1 -> 0
    assert macro_f1(pred, obs, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def _station_rows(path: Path, start: datetime, hours: int) -> dict[datetime, str]:
    rows: dict[datetime, str] = {}
    end = start + timedelta(hours=hours)
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            ts = datetime.fromisoformat(row["Timestamp"]).astimezone(UTC)
            if start <= ts < end and row["Weather_conditions"]:
                rows.setdefault(ts, row["Weather_conditions"])
    return rows


def test_online_accuracy_joins_forecasts_with_observations_4h_later(shared_data: Path) -> None:
    # Real station rows, fed in time order; the forecaster is persistence (the condition
    # in 4 h = the condition now), whose accuracy can be counted directly on the time axis.
    start = datetime(2009, 1, 10, tzinfo=UTC)
    rows = _station_rows(shared_data / "weather" / "weather_dataset_raw.csv.gz", start, 24 * 21)
    labels = ["clear", "rain", "snow"]
    spec = ModelSpec(
        name="weather-rain-4h",
        task="tabular_classification",
        labels=labels,
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 2])],
        outputs=[TensorSpec(name="p", dtype="float32", shape=[None, 3])],
        probabilities_output="p",
        preprocessing={"kind": "tabular", "feature_set": "t", "features": ["a", "b"]},
        horizon_s=4 * 3600,
    )
    config = DriftConfig(detectors=["accuracy"], accuracy_window=10_000, accuracy_min_samples=8)
    monitor = DriftMonitor.from_spec(spec, config, model_version=3)
    times = sorted(rows)
    for ts in times:
        monitor.observe(
            Sample(ts, ts.isoformat(), observed_label=rows[ts]), Prediction(rows[ts], 0.8)
        )
    pairs = [
        (rows[t], rows[t + timedelta(hours=4)]) for t in times if t + timedelta(hours=4) in rows
    ]
    expected = sum(a == b for a, b in pairs) / len(pairs)
    detector = monitor.detectors[0]
    assert detector.last is not None
    acc = next(s for s in detector.last.scores if s.metric == "accuracy")
    assert detector.detail()["joined"] == len(pairs)
    assert acc.score == pytest.approx(expected, abs=1e-9)
    assert 0.5 < expected < 1.0
    snap = monitor.snapshot()
    assert snap.detectors[0].detail["pending"] <= config.max_pending_forecasts


def test_degraded_forecaster_raises_accuracy_and_error_alerts() -> None:
    rng = np.random.default_rng(9)
    labels = ["no_rain", "rain"]
    spec = ModelSpec(
        name="weather-rain-4h",
        task="tabular_classification",
        labels=labels,
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 2])],
        outputs=[TensorSpec(name="p", dtype="float32", shape=[None, 2])],
        probabilities_output="p",
        positive_label="rain",
        preprocessing={"kind": "tabular", "feature_set": "t", "features": ["a", "b"]},
        horizon_s=4 * 3600,
    )
    monitor = DriftMonitor.from_spec(
        spec,
        DriftConfig(detectors=["accuracy", "errors"], max_pending_forecasts=8),
        model_version=1,
    )
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    truth = rng.choice(["rain", "snow", "clear"], p=[0.5, 0.3, 0.2], size=3000)
    alerts = []
    for k in range(3000):
        ts = t0 + timedelta(hours=k)
        future = truth[k + 4] if k + 4 < 3000 else "rain"
        right = "rain" if future == "rain" else "no_rain"
        wrong_rate = 0.05 if k < 1500 else 0.45
        label = right if rng.random() > wrong_rate else ("no_rain" if right == "rain" else "rain")
        sample = Sample(ts, f"h{k}", observed_label=str(truth[k]))
        alerts += [(k, v) for v in monitor.observe(sample, Prediction(label, 0.7))]
    raised = {v.detector: k for k, v in alerts if v.state == "raised"}
    assert set(raised) == {"accuracy", "errors"}
    assert all(1500 <= k <= 1500 + 168 for k in raised.values())
    acc_alert = next(v for _, v in alerts if v.detector == "accuracy")
    assert acc_alert.features[0].metric in ("accuracy", "f1")
    assert acc_alert.to_message("ws-1", 1, t0).features[0].score < 0.7
