"""Retraining triggers (pure planner, config errors) and slice warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.governance.errors import GovernanceError
from cloud_trainer.governance.fleet_facts import DeviceTraffic
from cloud_trainer.governance.slices import image_slices, production_slices, weather_slices
from cloud_trainer.governance.triggers.plan import (
    DAY,
    DriftRequest,
    ModelState,
    ModelTrigger,
    TriggerConfig,
    plan_triggers,
)

NOW = 1_800_000_000.0


def _config(**overrides: object) -> TriggerConfig:
    weather = {"name": "rain4h", "pipeline": "weather", "every_days": 7.0, **overrides}
    catdog = {"name": "catdog", "pipeline": "catdog", "min_new_labels": 50}
    return TriggerConfig.model_validate({"models": [weather, catdog]})


def test_nothing_due_when_fresh_and_quiet() -> None:
    states = {"rain4h": ModelState(NOW - DAY), "catdog": ModelState(NOW - DAY, 49)}
    assert plan_triggers(_config(), states, NOW) == []


def test_each_cause_and_their_merge() -> None:
    drift = DriftRequest(action_id=3, alert_id=12, decided_at=NOW - 60, detail="psi 2x")
    stale = DriftRequest(action_id=1, alert_id=4, decided_at=NOW - 9 * DAY, detail="old")
    states = {
        "rain4h": ModelState(NOW - 8 * DAY, drift=(stale, drift)),
        "catdog": ModelState(NOW - DAY, unused_labels=50),
    }
    weather, catdog = plan_triggers(_config(), states, NOW)
    assert weather.trigger.name == "rain4h" and weather.cause_kinds == "schedule,drift"
    assert "8.0 days old" in weather.causes[0].detail
    # The request from before the last training was answered by it; only alert 12 is new.
    assert weather.causes[1].alert_ids == (12,)
    assert catdog.cause_kinds == "labels" and "50 labelled frames" in catdog.causes[0].detail
    quiet = plan_triggers(_config(retrain_on_drift=False, every_days=30.0), states, NOW)
    assert [d.trigger.name for d in quiet] == ["catdog"]


def test_a_model_never_trained_is_due_on_schedule() -> None:
    (decision,) = plan_triggers(_config(), {"catdog": ModelState(NOW)}, NOW)
    assert decision.causes[0].detail == "no version trained yet"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "triggers.yaml"
    path.write_text("models:\n  - name: rain4h\n    pipeline: forest\n")
    with pytest.raises(GovernanceError, match=r"models\.0\.pipeline"):
        TriggerConfig.load(path)
    path.write_text("models: [")
    with pytest.raises(GovernanceError, match="cannot read"):
        TriggerConfig.load(path)
    with pytest.raises(ValueError, match="greater than 0"):
        ModelTrigger(name="x", pipeline="weather", every_days=0)


def test_weather_slices_flag_the_weak_season() -> None:
    hours = np.arange("2015-01-01T00", "2016-01-01T00", dtype="datetime64[h]")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, hours.size).astype(np.int64)
    pred = y.copy()
    summer = (hours.astype("datetime64[M]").astype(int) % 12 + 1 >= 6) & (
        hours.astype("datetime64[M]").astype(int) % 12 + 1 <= 8
    )
    wrong = summer & (rng.random(hours.size) < 0.5)
    pred[wrong] = 1 - pred[wrong]
    report = weather_slices(y, pred, hours, ("no_rain", "rain"), margin=0.2)
    flagged = [s.name for s in report.slices if s.warning]
    assert flagged == ["summer"]
    names = {(s.kind, s.name) for s in report.slices}
    assert ("time of day", "night 00-06") in names and ("class", "rain") in names
    (summer_slice,) = [s for s in report.slices if s.name == "summer"]
    assert summer_slice.value == pytest.approx(float((y[summer] == pred[summer]).mean()))


def test_image_slices_ignore_tiny_groups() -> None:
    y = np.array([0] * 10 + [1] * 10, dtype=np.int64)
    pred = y.copy()
    pred[10:16] = 0  # dogs mostly missed
    pred[0] = 1  # one rare-breed cat missed: alone, it says nothing
    breeds = ["cat/Abyssinian"] + ["cat/Bengal"] * 9 + ["dog/pug"] * 10
    report = image_slices(y, pred, breeds, ["cat", "dog"], margin=0.2, min_rows=5)
    assert [s.name for s in report.slices if s.warning] == ["dog", "dog/pug"]
    assert "recall 0.400" in report.warnings[0]


def test_production_mix_warns_in_the_operators_words() -> None:
    traffic = [
        DeviceTraffic(device_id="cam-00", site="harbour", counts={"cat": 50, "dog": 50},
                      confidence_sum={"cat": 45.0, "dog": 45.0}),
        DeviceTraffic(device_id="cam-01", site="harbour", counts={"cat": 35, "dog": 65},
                      confidence_sum={"cat": 30.0, "dog": 60.0}),
        DeviceTraffic(device_id="cam-02", site="gate", counts={"cat": 2, "dog": 1},
                      confidence_sum={"cat": 1.0, "dog": 0.5}),
    ]  # fmt: skip
    report = production_slices(traffic, {"cat": 0.5, "dog": 0.5}, margin=0.4)
    assert report.warnings == [
        "device cam-01: predicts dog 86% more often than cat relative to validation "
        "(65 dog vs 35 cat)"
    ]
    (site,) = [s for s in report.slices if s.kind == "site" and s.name == "harbour"
               and s.metric.startswith("label")]  # fmt: skip
    assert site.value == pytest.approx((115 / 85) / 1.0)
    assert site.n == 200
