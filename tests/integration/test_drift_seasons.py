"""Seasonal drift baselines on real station rows replayed in time order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.weather.dataset import LabelledRows, labelled_rows
from cloud_trainer.weather.ingest import load_station_history
from cloud_trainer.weather.packaging import DRIFT_FEATURES
from edge_agent.drift.baseline import feature_baselines, seasonal_features
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.features.weather import FEATURE_NAMES
from edge_agent.protocol import TensorSpec
from edge_agent.protocol.bundle import DriftBaseline, ModelSpec, SeasonalBaseline
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def station(shared_data: Path) -> tuple[LabelledRows, ModelSpec]:
    """Rows of the whole history; baselines from the years before 2014 (training period)."""
    history, _ = load_station_history(shared_data / "weather" / "weather_dataset_raw.csv.gz")
    rows = labelled_rows(history)
    train = rows.hours < np.datetime64("2014-01-01T00")
    columns = {n: rows.x[train, FEATURE_NAMES.index(n)] for n in DRIFT_FEATURES}
    spec = ModelSpec(
        name="weather-rain-4h",
        task="tabular_classification",
        labels=["no_rain", "rain"],
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, len(FEATURE_NAMES)])],
        outputs=[TensorSpec(name="p", dtype="float32", shape=[None, 2])],
        probabilities_output="p",
        preprocessing={
            "kind": "tabular",
            "feature_set": "weather-hourly-v1",
            "features": list(FEATURE_NAMES),
        },
        drift=DriftBaseline(
            features=feature_baselines(columns),
            seasonal=SeasonalBaseline(features=seasonal_features(rows.hours[train], columns)),
        ),
    )
    return rows, ModelSpec.from_metadata(spec.to_metadata())


def _replay(
    rows: LabelledRows,
    spec: ModelSpec,
    first: str,
    last: str,
    config: DriftConfig,
    offset: tuple[str, float, str] | None = None,
) -> tuple[list[tuple[np.datetime64, str]], int]:
    monitor = DriftMonitor.from_spec(spec, config)
    pick = (rows.hours >= np.datetime64(first)) & (rows.hours < np.datetime64(last))
    x, hours = rows.x[pick].astype(np.float64), rows.hours[pick]
    if offset is not None:
        name, amount, since = offset
        x[hours >= np.datetime64(since), FEATURE_NAMES.index(name)] += amount
    alerts: list[tuple[np.datetime64, str]] = []
    for k in range(len(x)):
        ts = datetime.fromtimestamp(int(hours[k].astype("datetime64[s]").astype(np.int64)), UTC)
        feats = dict(zip(FEATURE_NAMES, x[k].tolist(), strict=True))
        for v in monitor.observe(
            Sample(ts, f"h{k}", features=feats), Prediction("rain", 0.9, input_stats=feats)
        ):
            alerts.append((hours[k], v.state))
    return alerts, len(x)


def _raised_share(alerts: list[tuple[np.datetime64, str]], first: str, last: str) -> float:
    hours, since = 0.0, None
    for t, state in alerts:
        if state == "raised":
            since = t
        elif since is not None:
            hours, since = hours + float((t - since) / np.timedelta64(1, "h")), None
    if since is not None:
        hours += float((np.datetime64(last, "h") - since) / np.timedelta64(1, "h"))
    span = (np.datetime64(last, "h") - np.datetime64(first, "h")) / np.timedelta64(1, "h")
    return hours / float(span)


def test_held_out_half_year_in_time_order_stays_under_one_alert_a_week(station) -> None:
    rows, spec = station
    config = DriftConfig(detectors=["features"])
    alerts, n = _replay(rows, spec, "2015-01-01", "2015-07-01", config)
    raises = sum(1 for _, s in alerts if s == "raised")
    assert raises / (n / 168) < 1.0
    assert _raised_share(alerts, "2015-01-01", "2015-07-01") < 0.5
    # The whole-period baseline calls the seasons drift: raised from winter on, nearly always.
    whole, _ = _replay(
        rows, spec, "2015-01-01", "2015-07-01", config.model_copy(update={"seasonal": False})
    )
    assert _raised_share(whole, "2015-01-01", "2015-07-01") > 0.9


@pytest.mark.parametrize("since", ["2015-05-10T12", "2015-09-10T12", "2015-11-10T12"])
def test_pressure_offset_is_raised_within_a_day(station, since: str) -> None:
    rows, spec = station
    sigma = spec.drift.feature("pressure_mb").std
    day = np.timedelta64(24, "h")
    start = np.datetime64(since, "h") - 4 * day
    end = np.datetime64(since, "h") + 4 * day
    config = DriftConfig(detectors=["features"])
    quiet, _ = _replay(rows, spec, str(start), str(end), config)
    assert not any(s == "raised" and t < np.datetime64(since, "h") for t, s in quiet)
    alerts, _ = _replay(rows, spec, str(start), str(end), config, ("pressure_mb", sigma, since))
    raised = [t for t, s in alerts if s == "raised"]
    assert raised and np.datetime64(since, "h") <= raised[0] <= np.datetime64(since, "h") + day
