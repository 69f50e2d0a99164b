"""Time-ordered calibration of the weather station's drift monitor with the real forecaster.

    .venv/bin/python -m benchmarks.bench_drift --only seasons [--model ONNX] [--trials N]

The station history is cleaned, labelled and split exactly as the training pipeline does
(train < validation year < test year). The released model (``--model``; trained here with
``--no-register`` settings when absent) scores every row; the pipeline's own
``drift_baseline_from`` builds whole-period and per-month baselines. Each part is replayed
hour by hour in time order through a ``DriftMonitor`` with the seasonal baselines and, as
the raw reference, with the whole-period ones: false alerts per device-week per detector.
Then 1σ offsets (σ of the whole training period) of pressure, temperature and humidity
start at random hours of the time-ordered stream: delay to the features alert. A degraded
forecaster (30 % of forecasts wrong from a random hour) gives the accuracy/errors delays.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_drift import Prediction, Sample
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.features.weather import FEATURE_NAMES
from edge_agent.protocol.bundle import ModelSpec

WEEK = 168
SHIFTED = ("pressure_mb", "temperature_c", "humidity")


@dataclass(frozen=True)
class Stream:
    """Rows of one part in time order with the model's P(rain) and the condition now."""

    x: np.ndarray
    hours: np.ndarray
    prob: np.ndarray
    rain_now: np.ndarray

    def part(self, lo: int, hi: int) -> Stream:
        return Stream(self.x[lo:hi], self.hours[lo:hi], self.prob[lo:hi], self.rain_now[lo:hi])


def replay(
    monitor: DriftMonitor, s: Stream, threshold: float, shift: np.ndarray | None = None, start=0
) -> list[tuple[int, Any]]:
    """Feed rows in order with their real timestamps; (row index, verdict) of every alert."""
    epochs = s.hours.astype("datetime64[s]").astype(np.int64)
    alerts = []
    for k in range(len(s.x)):
        row = s.x[k] if shift is None or k < start else s.x[k] + shift
        feats = dict(zip(FEATURE_NAMES, row.tolist(), strict=True))
        p = float(s.prob[k])
        label = "rain" if p >= threshold else "no_rain"
        sample = Sample(
            datetime.fromtimestamp(int(epochs[k]), UTC),
            f"h{k}",
            features=feats,
            observed_label="rain" if s.rain_now[k] else "no_rain",
        )
        for v in monitor.observe(sample, Prediction(label, max(p, 1 - p), input_stats=feats)):
            alerts.append((k, v))
    return alerts


def _real_model(model: Path | None, data: Path) -> Path:
    if model is not None:
        return model
    from cloud_trainer.weather.pipeline import train_weather
    from cloud_trainer.weather.settings import TrainSettings

    work = Path(tempfile.mkdtemp(prefix="bench-drift-weather-"))
    train_weather(TrainSettings(data=data, work_dir=work, register_model=False))
    return work / "weather-rain-4h.onnx"


def seasonal_benchmark(
    data: Path, config: DriftConfig, trials: int, rng: np.random.Generator, model: Path | None
) -> dict[str, Any]:
    from benchmarks.bench_drift import delay, raised_fraction, raises
    from cloud_trainer.weather.dataset import apply_split, labelled_rows, time_split
    from cloud_trainer.weather.ingest import load_station_history
    from cloud_trainer.weather.packaging import drift_baseline_from
    from cloud_trainer.weather.scoring import WeatherScorer

    csv = data / "weather" / "weather_dataset_raw.csv.gz"
    history, _ = load_station_history(csv)
    rows = labelled_rows(history)
    split = apply_split(rows, time_split(rows.hours))
    scorer = WeatherScorer.load(_real_model(model, csv))
    streams = {
        name: Stream(
            part.x.astype(np.float64), part.hours, scorer.prob_positive(part.x), part.persistence
        )
        for name, part in (
            ("train", split.train),
            ("validation", split.validation),
            ("test", split.test),
        )
    }
    drift = drift_baseline_from(
        split, streams["train"].prob, streams["validation"].prob, scorer.threshold
    )
    seasonal_spec = scorer.spec.model_copy(update={"drift": drift})
    whole = config.model_copy(update={"seasonal": False})
    out: dict[str, Any] = {
        "threshold": scorer.threshold,
        "spec_bytes": len(seasonal_spec.to_metadata()["edge_mlops.spec"]),
        "seasonal_bytes": len(drift.seasonal.model_dump_json()) if drift.seasonal else 0,
        "class_ratio_inflation": drift.seasonal.class_ratio_inflation if drift.seasonal else 1.0,
        "watched": [f.name for f in drift.seasonal.features] if drift.seasonal else [],
        "error_rate_by_month": drift.seasonal.error_rate if drift.seasonal else [],
    }

    def monitor(spec: ModelSpec, cfg: DriftConfig) -> DriftMonitor:
        return DriftMonitor.from_spec(spec, cfg, model_version=1)

    for name, s in streams.items():
        for label, cfg in (("seasonal", config), ("whole_period", whole)):
            mon = monitor(seasonal_spec, cfg)
            alerts = replay(mon, s, scorer.threshold)
            n = len(s.x)
            out[f"{name}_{label}"] = {
                "hours": n,
                "fa_per_week": {d.name: raises(alerts, d.name) / (n / WEEK) for d in mon.detectors},
                "raised_share": {d.name: raised_fraction(alerts, d.name, n) for d in mon.detectors},
            }

    # 1σ level offsets at random hours of the time-ordered training and test streams.
    pool = [streams["train"], streams["test"]]
    for feature in SHIFTED:
        j = FEATURE_NAMES.index(feature)
        shift = np.zeros(len(FEATURE_NAMES))
        shift[j] = drift.feature(feature).std
        delays = []
        for _ in range(trials):
            s = pool[int(rng.integers(0, len(pool)))]
            at = int(rng.integers(96, len(s.x) - 4 * WEEK))
            seg = s.part(at - 96, at + 2 * WEEK)
            a = replay(monitor(seasonal_spec, config), seg, scorer.threshold, shift, start=96)
            delays.append(delay(a, "features", 96))
        out[f"delay_1sd_{feature}"] = delays
        out[f"sigma_{feature}"] = drift.feature(feature).std

    # A degraded forecaster in the test year: from a random hour, 30 % of forecasts flipped.
    degraded = []
    test = streams["test"]
    for _ in range(max(trials // 2, 3)):
        at = int(rng.integers(6 * WEEK, len(test.x) - 6 * WEEK))
        seg = test.part(at - 4 * WEEK, at + 4 * WEEK)
        prob = seg.prob.copy()
        flip = (np.arange(len(prob)) >= 4 * WEEK) & (rng.random(len(prob)) < 0.3)
        prob[flip] = np.where(prob[flip] >= scorer.threshold, 0.0, 1.0)
        a = replay(
            monitor(seasonal_spec, config),
            Stream(seg.x, seg.hours, prob, seg.rain_now),
            scorer.threshold,
        )
        degraded.append({d: delay(a, d, 4 * WEEK) for d in ("accuracy", "errors")})
    out["degraded_forecaster_delay"] = degraded
    return out


def report(w: dict[str, Any], summarise: Any) -> None:
    """Print the figures docs/drift.md quotes."""
    print(
        f"weather in time order, real model (threshold {w['threshold']:.2f}): spec "
        f"{w['spec_bytes']} bytes, seasonal part {w['seasonal_bytes']}; watched {w['watched']}; "
        f"class-ratio inflation {w['class_ratio_inflation']}"
    )
    for part in ("train", "validation", "test"):
        for label in ("seasonal", "whole_period"):
            r = w[f"{part}_{label}"]
            print(
                f"  {part} ({r['hours']} h) {label}: alerts per device-week "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["fa_per_week"].items())
                + "; raised "
                + ", ".join(f"{k} {v:.0%}" for k, v in r["raised_share"].items())
            )
    for f in SHIFTED:
        delays = w[f"delay_1sd_{f}"]
        day = sum(1 for d in delays if d is not None and 0 <= d <= 24)
        print(
            f"  +1σ {f} ({w[f'sigma_{f}']:.3g}): delay in hours {summarise(delays)}; "
            f"within 24 h {day}/{len(delays)}"
        )
    for d in ("accuracy", "errors"):
        found = [x[d] for x in w["degraded_forecaster_delay"]]
        print(f"  30 % wrong forecasts, {d}: delay {summarise(found)}")
