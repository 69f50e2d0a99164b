"""Policy rules: the actions planned for an alert, listed; hysteresis and cooldown in the store."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.policy import (
    AlertFacts,
    OpenEpisode,
    PlannedAction,
    PolicyConfig,
    PolicyConfigError,
    PolicyDecision,
    PolicyEngine,
    PolicyRule,
    plan_actions,
)
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope, FleetStore, queries, sqlite_url
from edge_agent.protocol import DeviceKind

RULES = PolicyConfig(
    rules=[
        PolicyRule(name="notify", actions=["notify"]),
        PolicyRule(
            name="catdog-fleet",
            model="catdog",
            min_severity="critical",
            min_devices=2,
            actions=["retrain"],
        ),
        PolicyRule(
            name="accuracy-drop",
            metrics=["accuracy", "f1"],
            min_score_ratio=1.5,
            actions=["rollback", "notify"],
        ),
    ]
)


def facts(**overrides: object) -> AlertFacts:
    base = AlertFacts(
        alert_id=10,
        device_id="cam-01",
        model_name="catdog",
        model_version=3,
        detector="image_stats",
        severity="warning",
        state="raised",
        metrics=frozenset({"psi"}),
        max_score_ratio=1.6,
        episode_alert_id=10,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def actions(planned: list[PlannedAction]) -> list[tuple[str, str, str]]:
    return [(p.action, p.rule, p.episode_key) for p in planned]


def test_a_warning_on_one_device_only_notifies() -> None:
    assert actions(plan_actions(facts(), [], RULES)) == [
        ("notify", "notify", "notify/catdog/cam-01/image_stats/10")
    ]


def test_a_cleared_alert_plans_nothing() -> None:
    assert plan_actions(facts(state="cleared", severity="critical"), [], RULES) == []


def test_retrain_needs_enough_devices_drifting_on_the_same_version() -> None:
    alert = facts(severity="critical")
    other_version = [OpenEpisode("cam-02", "image_stats", 2)]
    same_version = [OpenEpisode("cam-02", "image_stats", 3)]
    assert [p.action for p in plan_actions(alert, other_version, RULES)] == ["notify"]
    assert actions(plan_actions(alert, same_version, RULES)) == [
        ("notify", "notify", "notify/catdog/cam-01/image_stats/10"),
        ("retrain", "catdog-fleet", "retrain/catdog/3"),
    ]


def test_rule_for_another_model_does_not_fire() -> None:
    alert = facts(model_name="rain4h", severity="critical")
    episodes = [OpenEpisode("wx-02", "features", 3)]
    assert [p.action for p in plan_actions(alert, episodes, RULES)] == ["notify"]


def test_accuracy_drop_rolls_back_and_notifies_once() -> None:
    alert = facts(metrics=frozenset({"accuracy"}), detector="accuracy", max_score_ratio=2.0)
    assert actions(plan_actions(alert, [], RULES)) == [
        ("notify", "notify", "notify/catdog/cam-01/accuracy/10"),
        ("rollback", "accuracy-drop", "rollback/catdog/3"),
    ]
    weak = replace(alert, max_score_ratio=1.2)
    assert [p.action for p in plan_actions(weak, [], RULES)] == ["notify"]


def test_severity_below_the_rule_minimum_does_not_fire() -> None:
    config = PolicyConfig(
        rules=[PolicyRule(name="crit", min_severity="critical", actions=["notify"])]
    )
    assert plan_actions(facts(severity="warning"), [], config) == []
    assert [p.action for p in plan_actions(facts(severity="critical"), [], config)] == ["notify"]


def test_policy_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: x\n    actions: [reboot]\n")
    with pytest.raises(PolicyConfigError, match=r"rules\.0\.actions\.0"):
        PolicyConfig.load(path)
    path.write_text("rules:\n  - {name: a, actions: [notify]}\n  - {name: a, actions: [notify]}\n")
    with pytest.raises(PolicyConfigError, match="unique: a"):
        PolicyConfig.load(path)
    path.write_text("rules:\n  - {name: ok, model: catdog, actions: [retrain]}\ncooldown_s: 60\n")
    assert PolicyConfig.load(path).rules[0].actions == ["retrain"]


def test_engine_acts_once_per_episode_and_records_outcomes(tmp_path: Path) -> None:
    store = FleetStore(sqlite_url(tmp_path / "fleet.db"))
    retrained: list[PolicyDecision] = []

    def retrain(decision: PolicyDecision) -> str:
        retrained.append(decision)
        return f"pipeline queued for {decision.model_name}"

    def broken_rollback(decision: PolicyDecision) -> str:
        raise RuntimeError("release tooling unreachable")

    config = PolicyConfig(
        rules=[
            PolicyRule(name="n", actions=["notify"]),
            PolicyRule(name="r", model="catdog", min_devices=2, actions=["retrain", "rollback"]),
        ]
    )
    engine = PolicyEngine(
        store, config, FleetMetrics(), {"retrain": retrain, "rollback": broken_rollback}
    )
    cams = [
        SimulatedDevice(f"cam-{i}", "park", DeviceKind.CAMERA, model_version=3) for i in range(3)
    ]
    try:

        def send(device: SimulatedDevice, state: str) -> None:
            envelope = Envelope("park", device.drift(state, score=0.6), time.time())
            engine.on_alerts(store.ingest([envelope]).alerts)
            assert engine.wait(10)

        send(cams[0], "raised")  # one device: notify only
        send(cams[1], "raised")  # two devices: retrain + rollback, once
        send(cams[2], "raised")  # three devices: retrain held (same model version)
        send(cams[0], "raised")  # still the same episode on cam-0: no second notify
        send(cams[0], "cleared")
        send(cams[0], "raised")  # a new episode on cam-0: notified again
        rows = store.read(queries.list_policy_actions)
        recorded = [(r["action"], r["device_id"], r["status"]) for r in reversed(rows)]
    finally:
        engine.close()
        store.close()

    assert recorded == [
        ("notify", "cam-0", "done"),
        ("notify", "cam-1", "done"),
        ("retrain", "cam-1", "done"),
        ("rollback", "cam-1", "failed"),
        ("notify", "cam-2", "done"),
        ("notify", "cam-0", "done"),
    ]
    assert [d.model_version for d in retrained] == [3]
    assert engine.metrics.value("fleet_policy_actions_total", action="retrain", outcome="held") == 3
