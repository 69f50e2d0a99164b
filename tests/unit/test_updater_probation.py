"""Probation verdicts and staged-rollout decisions: pure rules, each case by its numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud_trainer.release.rollout import Action, RolloutPolicy, Tally, Wave, decide, parse_waves
from edge_agent.protocol import UpdateEvent, UpdateState
from edge_agent.updater.config import ProbationConfig
from edge_agent.updater.probation import Outcome, ProbationMonitor


def monitor(**overrides: object) -> ProbationMonitor:
    config = ProbationConfig.model_validate({"frames": 20, "min_samples_to_fail": 5, **overrides})
    return ProbationMonitor(config, latency_budget_ms=10.0, started=0.0)


def test_passes_after_enough_clean_frames() -> None:
    m = monitor()
    for _ in range(19):
        m.record(latency_ms=1.0)
    assert m.verdict(now=1.0).outcome is Outcome.PENDING
    m.record(latency_ms=1.0)
    assert m.verdict(now=1.0).outcome is Outcome.PASSED


def test_minimum_seconds_hold_the_verdict() -> None:
    m = monitor(seconds=30)
    for _ in range(25):
        m.record(latency_ms=1.0)
    assert m.verdict(now=10.0).outcome is Outcome.PENDING
    assert m.verdict(now=31.0).outcome is Outcome.PASSED


def test_one_nan_fails_with_zero_tolerance() -> None:
    m = monitor()
    m.record(latency_ms=1.0)
    m.record(nan=True)
    verdict = m.verdict(now=0.1)
    assert verdict.outcome is Outcome.FAILED and "non-finite" in (verdict.reason or "")


def test_error_rate_is_judged_after_min_samples() -> None:
    m = monitor(max_error_rate=0.2)
    m.record(error=True)
    assert m.verdict(now=0.1).outcome is Outcome.PENDING  # one call is not a verdict
    for _ in range(4):
        m.record(error=True)
    verdict = m.verdict(now=0.1)
    assert verdict.outcome is Outcome.FAILED and "error rate 5/5" in (verdict.reason or "")


def test_slow_live_latency_fails() -> None:
    m = monitor(latency_budget_factor=2.0)
    for _ in range(5):
        m.record(latency_ms=50.0)
    verdict = m.verdict(now=0.1)
    assert verdict.outcome is Outcome.FAILED and "p95 latency" in (verdict.reason or "")


@pytest.mark.parametrize(
    ("mode", "shadow", "expected"),
    [
        ("live", False, Outcome.PENDING),
        ("live", True, Outcome.FAILED),
        ("shadow", False, Outcome.FAILED),  # shadow-first probation always compares
    ],
)
def test_disagreement_fails_when_compared(mode: str, shadow: bool, expected: Outcome) -> None:
    m = monitor(mode=mode, shadow=shadow, max_disagreement=0.2)
    for _ in range(6):
        m.record(latency_ms=1.0, agreed=False)
    assert m.verdict(now=0.1).outcome is expected


@pytest.mark.parametrize(
    ("on_timeout", "expected"), [("commit", Outcome.PASSED), ("rollback", Outcome.FAILED)]
)
def test_quiet_probation_ends_at_the_timeout(on_timeout: str, expected: Outcome) -> None:
    m = monitor(timeout_s=60, on_timeout=on_timeout)
    m.record(latency_ms=1.0)
    assert m.verdict(now=59).outcome is Outcome.PENDING
    assert m.verdict(now=61).outcome is expected


def test_abort_fails_at_once() -> None:
    m = monitor()
    m.abort("rollback command")
    assert m.verdict(now=0).reason == "rollback command"


def event(device: str, state: UpdateState) -> UpdateEvent:
    return UpdateEvent(
        device_id=device,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        seq=1,
        model_name="catdog",
        release_id="r1",
        to_version=2,
        state=state,
    )


POLICY = RolloutPolicy(
    waves=(Wave(10), Wave(50), Wave(100)), min_outcomes=2, max_failure_rate=0.25, soak_s=10
)


def tally(*pairs: tuple[str, UpdateState]) -> Tally:
    t = Tally()
    for device, state in pairs:
        t.record(event(device, state))
    return t


def test_rollout_waits_for_outcomes_then_soaks_then_advances() -> None:
    ok = UpdateState.COMMITTED
    assert decide(POLICY, 0, tally(("a", ok)), 100).action is Action.WAIT
    busy = tally(("a", ok), ("b", ok), ("c", UpdateState.DOWNLOADING))
    assert decide(POLICY, 0, busy, 100).action is Action.WAIT
    two = tally(("a", ok), ("b", ok))
    assert decide(POLICY, 0, two, 5).action is Action.WAIT
    assert decide(POLICY, 0, two, 11).action is Action.ADVANCE
    assert decide(POLICY, 2, two, 11).action is Action.DONE


def test_rollout_aborts_when_canaries_fail() -> None:
    bad = tally(("a", UpdateState.COMMITTED), ("b", UpdateState.ROLLED_BACK))
    decision = decide(POLICY, 0, bad, 1)
    assert decision.action is Action.ABORT and "1/2" in decision.reason
    # A later commit on the same device replaces its failure.
    healed = tally(
        ("b", UpdateState.ROLLED_BACK), ("b", UpdateState.COMMITTED), ("a", UpdateState.COMMITTED)
    )
    assert decide(POLICY, 0, healed, 11).action is Action.ADVANCE


def test_rollout_aborts_a_silent_wave() -> None:
    policy = RolloutPolicy(min_outcomes=1, wave_timeout_s=30)
    assert decide(policy, 0, Tally(), 31).action is Action.ABORT


def test_refusals_do_not_count_as_outcomes() -> None:
    t = tally(("a", UpdateState.REFUSED), ("b", UpdateState.REFUSED))
    assert t.decided == 0


def test_parse_waves() -> None:
    assert parse_waves("5,50,100", ["canary"]) == (Wave(5, ("canary",)), Wave(50), Wave(100))
    for bad in ("50,10", "x", "", "150"):
        with pytest.raises(ValueError, match="waves"):
            parse_waves(bad)
