"""Seasonal drift baselines: month weights, building, metadata round trip, month boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_agent.drift.baseline import (
    feature_baselines,
    monthly_rate,
    seasonal_class_ratio,
    seasonal_features,
    seasonal_histogram,
)
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.drift.seasons import month_weights
from edge_agent.protocol import TensorSpec
from edge_agent.protocol.bundle import DriftBaseline, ModelSpec, SeasonalBaseline
from edge_agent.protocol.errors import ProtocolError
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction


def _epoch(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def _seasonal_year(rng: np.random.Generator, years: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Hourly temperatures with a 20 °C seasonal swing and 3 °C weather noise."""
    hours = np.arange("2010-01-01T00", f"{2010 + years}-01-01T00", dtype="datetime64[h]")
    doy = (hours - hours.astype("datetime64[Y]")).astype(np.int64) / 24.0
    temp = 10 - 10 * np.cos(2 * np.pi * (doy - 15) / 365) + rng.normal(0, 3, hours.size)
    return hours, temp


def _spec(hours: np.ndarray, temp: np.ndarray) -> ModelSpec:
    columns = {"temperature_c": temp}
    return ModelSpec(
        name="weather-rain-4h",
        task="tabular_classification",
        labels=["no_rain", "rain"],
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 1])],
        outputs=[TensorSpec(name="p", dtype="float32", shape=[None, 2])],
        probabilities_output="p",
        preprocessing={"kind": "tabular", "feature_set": "t", "features": ["temperature_c"]},
        drift=DriftBaseline(
            features=feature_baselines(columns),
            seasonal=SeasonalBaseline(features=seasonal_features(hours, columns)),
        ),
    )


def test_month_weights_follow_mid_points_and_wrap_the_year() -> None:
    mid_march = month_weights([_epoch(2021, 3, 16, 12)])
    assert mid_march[2] == pytest.approx(1.0, abs=0.02) and mid_march.sum() == pytest.approx(1)
    boundary = month_weights([_epoch(2021, 4, 1)])
    assert boundary[2] == pytest.approx(0.5, abs=0.02) and boundary[3] == pytest.approx(
        0.5, abs=0.02
    )
    new_year = month_weights([_epoch(2022, 1, 1)])
    assert new_year[11] == pytest.approx(0.5, abs=0.02) and new_year[0] == pytest.approx(
        0.5, abs=0.02
    )
    day = month_weights([_epoch(2021, 6, 30) + 3600 * h for h in range(24)])
    assert day.sum() == pytest.approx(24) and set(np.flatnonzero(day)) == {5, 6}
    with pytest.raises(ValueError, match="finite"):
        month_weights([float("nan")])


def test_seasonal_baseline_round_trips_through_model_metadata_and_stays_small() -> None:
    rng = np.random.default_rng(11)
    hours, temp = _seasonal_year(rng)
    spec = _spec(hours, temp)
    seasonal = spec.drift.seasonal
    assert seasonal is not None
    feature = seasonal.feature("temperature_c")
    # January is cold, July warm; each month's spread is the weather noise, not the year's.
    assert feature.mean[0] < 2 and feature.mean[6] > 18
    assert all(1.5 < s < 5 for s in feature.std) and min(feature.n) >= 24 * 28 * 3
    metadata = spec.to_metadata()
    assert len(metadata["edge_mlops.spec"]) < 20_000
    assert ModelSpec.from_metadata(metadata) == spec
    # A spec without seasonal baselines (older models) still reads, with none.
    old = spec.model_copy(update={"drift": spec.drift.model_copy(update={"seasonal": None})})
    assert ModelSpec.from_metadata(old.to_metadata()).drift.seasonal is None
    # Thirteen months is refused, naming the field.
    raw = metadata["edge_mlops.spec"].replace('"mean":[', '"mean":[0.5,', 1)
    with pytest.raises(ProtocolError, match="mean"):
        ModelSpec.from_metadata({"edge_mlops.spec": raw})


def test_thin_months_borrow_from_their_neighbours() -> None:
    rng = np.random.default_rng(12)
    hours, temp = _seasonal_year(rng, years=1)
    keep = ~((hours >= np.datetime64("2010-05-01")) & (hours < np.datetime64("2010-05-04")))
    keep &= ~((hours >= np.datetime64("2010-05-05")) & (hours < np.datetime64("2010-06-01")))
    h = seasonal_histogram(hours[keep], temp[keep])
    assert h.n[4] == 24  # one day of May seen
    # May's baseline is pooled with April and June, so it sits between them.
    assert h.mean[3] < h.mean[4] < h.mean[5]
    assert sum(1 for p in h.probs[4] if p > 0) >= 8
    flags = rng.random(hours.size) < np.where(
        hours.astype("datetime64[M]").astype(int) % 12 < 6, 0.1, 0.3
    )
    rate = monthly_rate(hours, flags)
    assert rate[0] == pytest.approx(0.1, abs=0.03) and rate[9] == pytest.approx(0.3, abs=0.04)


def test_class_ratio_inflation_measures_spells_of_alike_hours() -> None:
    rng = np.random.default_rng(13)
    hours = np.arange("2010-01-01T00", "2012-01-01T00", dtype="datetime64[h]")
    independent = ["rain" if r else "no_rain" for r in rng.random(hours.size) < 0.7]
    spells = np.repeat(rng.random(hours.size // 48 + 1) < 0.7, 48)[: hours.size]
    spelled = ["rain" if r else "no_rain" for r in spells]
    ratios, inflation_iid = seasonal_class_ratio(hours, independent, ["no_rain", "rain"])
    _, inflation_spells = seasonal_class_ratio(hours, spelled, ["no_rain", "rain"])
    assert len(ratios) == 12 and ratios[3]["rain"] == pytest.approx(0.7, abs=0.05)
    assert inflation_iid < 2.0
    # Two-day spells: a week holds ~3.5 independent draws instead of 168 hours' worth.
    assert inflation_spells > 20


def _feed(monitor: DriftMonitor, start: datetime, values: np.ndarray) -> list:
    out = []
    for k, v in enumerate(values):
        ts = start + timedelta(hours=k)
        feats = {"temperature_c": float(v)}
        for verdict in monitor.observe(
            Sample(ts, f"s{k}", features=feats), Prediction("rain", 0.9, input_stats=feats)
        ):
            out.append((ts, verdict))
    return out


def test_spring_in_time_order_is_quiet_with_seasonal_baselines_only() -> None:
    rng = np.random.default_rng(14)
    hours, temp = _seasonal_year(rng)
    spec = _spec(hours, temp)
    _, replay = _seasonal_year(np.random.default_rng(99), years=1)
    start = datetime(2010, 3, 1, tzinfo=UTC)
    spring = replay[24 * 59 : 24 * (59 + 61)]  # March and April, across the month boundary
    seasonal = DriftMonitor.from_spec(spec, DriftConfig(detectors=["features"]))
    assert _feed(seasonal, start, spring) == []
    whole = DriftMonitor.from_spec(spec, DriftConfig(detectors=["features"], seasonal=False))
    assert [v.state for _, v in _feed(whole, start, spring)][:1] == ["raised"]
    # At the boundary the reference is a blend of March and April, not either month.
    boundary = DriftMonitor.from_spec(spec, DriftConfig(detectors=["features"]))
    _feed(boundary, datetime(2010, 3, 31, 12, tzinfo=UTC), replay[24 * 89 + 12 : 24 * 90 + 12])
    last = boundary.detectors[0].last
    assert last is not None
    feature = spec.drift.seasonal.feature("temperature_c")  # type: ignore[union-attr]
    blended = last.scores[0].baseline
    assert blended is not None and feature.mean[2] + 1 < blended < feature.mean[3] - 1


def test_a_warm_offset_in_january_is_raised_within_a_day() -> None:
    rng = np.random.default_rng(15)
    hours, temp = _seasonal_year(rng)
    spec = _spec(hours, temp)
    january = _seasonal_year(np.random.default_rng(7), years=1)[1][: 24 * 20]
    whole_sigma = spec.drift.feature("temperature_c").std
    january[24 * 10 :] += whole_sigma
    monitor = DriftMonitor.from_spec(spec, DriftConfig(detectors=["features"]))
    alerts = _feed(monitor, datetime(2010, 1, 1, tzinfo=UTC), january)
    assert [v.state for _, v in alerts] == ["raised"]
    ts, verdict = alerts[0]
    assert timedelta(0) <= ts - datetime(2010, 1, 11, tzinfo=UTC) <= timedelta(hours=24)
    assert verdict.features[0].name == "temperature_c"
