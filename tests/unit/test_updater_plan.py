"""The updater's pure planner: each decision listed as the steps it produces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.protocol import ReleaseManifest, Rollout, SigningKey, UpdateState
from edge_agent.updater.plan import (
    APPLY_STEPS,
    DeviceFacts,
    Step,
    StepKind,
    plan_command,
    plan_recovery,
    plan_release,
)
from edge_agent.updater.state import ModelRecord, UpdaterState
from tests.support.samples import sample_manifest

KEY = SigningKey.generate()


def facts(**overrides: object) -> DeviceFacts:
    values: dict[str, object] = {
        "device_id": "cam-01",
        "groups": frozenset(),
        "channels": frozenset({"stable"}),
        "trusted_publishers": frozenset({"cloud"}),
        "trusted_keys": {KEY.key_id: KEY.public_key},
        "max_model_bytes": 16 * 1024 * 1024,
    }
    values.update(overrides)
    return DeviceFacts(**values)  # type: ignore[arg-type]


def record(version: int, release: str | None = None) -> ModelRecord:
    sha = f"{version:064x}"
    return ModelRecord(
        version=version, sha256=sha, size=100, file=f"catdog-v{version}.onnx", release_id=release
    )


def manifest(version: int = 4, **changes: object) -> ReleaseManifest:
    fields: dict[str, object] = {
        "version": version,
        "release_id": f"catdog-{version}",
        "rollout": Rollout(percent=100),
    }
    fields.update(changes)
    base = sample_manifest(**fields)
    return KEY.sign(base)


STATE = UpdaterState(model="catdog", active=record(3, "catdog-3"), previous=[record(2)])


def kinds(steps: list[Step]) -> list[StepKind]:
    return [s.kind for s in steps]


def test_new_release_runs_the_whole_chain() -> None:
    assert kinds(plan_release(STATE, manifest(), facts())) == list(APPLY_STEPS)


def test_release_already_serving_is_ignored() -> None:
    steps = plan_release(STATE, manifest(3, release_id="catdog-3"), facts())
    assert kinds(steps) == [StepKind.IGNORE]


def test_release_that_failed_before_is_not_retried() -> None:
    state = STATE.remember_failed("catdog-4")
    assert kinds(plan_release(state, manifest(), facts())) == [StepKind.IGNORE]


@pytest.mark.parametrize(
    ("release", "device", "reason"),
    [
        (
            lambda: manifest().model_copy(update={"signature": None, "key_id": None}),
            {},
            "not signed",
        ),
        (lambda: SigningKey.generate().sign(manifest()), {}, "unknown key"),
        (lambda: manifest().model_copy(update={"size": 5}), {}, "does not match"),
        (
            lambda: KEY.sign(sample_manifest(publisher="x", rollout=Rollout())),
            {},
            "may not publish",
        ),
        (lambda: manifest(channel="beta"), {}, "channel 'beta'"),
        (lambda: manifest(model="other"), {}, "for model 'other'"),
        (lambda: manifest(2), {}, "downgrade"),
        (lambda: manifest(size=10**8), {"max_model_bytes": 10**6}, "exceeds the cap"),
        (
            lambda: KEY.sign(sample_manifest(rollout=Rollout(percent=0, groups=["canary"]))),
            {},
            "not targeted",
        ),
    ],
)
def test_refusals_name_their_reason(release, device, reason) -> None:
    steps = plan_release(STATE, release(), facts(**device))
    assert kinds(steps) == [StepKind.REFUSE]
    assert reason in (steps[0].reason or "")


def test_refusal_is_reported_once() -> None:
    unsigned = manifest().model_copy(update={"signature": None, "key_id": None})
    state = STATE.remember_refused(unsigned.release_id)
    assert kinds(plan_release(state, unsigned, facts())) == [StepKind.IGNORE]


def test_allowed_downgrade_and_group_membership_are_taken() -> None:
    downgrade = manifest(2, allow_downgrade=True)
    assert kinds(plan_release(STATE, downgrade, facts())) == list(APPLY_STEPS)
    canary = KEY.sign(sample_manifest(rollout=Rollout(percent=0, groups=["canary"])))
    in_group = facts(groups=frozenset({"canary"}))
    assert kinds(plan_release(STATE, canary, in_group)) == list(APPLY_STEPS)


def test_pinned_device_refuses_other_versions() -> None:
    state = STATE.model_copy(update={"pinned": 3})
    steps = plan_release(state, manifest(), facts())
    assert kinds(steps) == [StepKind.REFUSE] and "pinned" in (steps[0].reason or "")


@pytest.mark.parametrize("phase", [UpdateState.ACTIVATING, UpdateState.PROBATION])
def test_restart_after_activation_rolls_back(phase: UpdateState) -> None:
    state = STATE.model_copy(update={"phase": phase, "trial": record(4), "candidate": manifest()})
    assert kinds(plan_recovery(state, facts())) == [StepKind.ROLLBACK, StepKind.PRUNE]


@pytest.mark.parametrize(
    "phase", [UpdateState.DOWNLOADING, UpdateState.VERIFYING, UpdateState.SMOKE]
)
def test_restart_before_activation_resumes(phase: UpdateState) -> None:
    state = STATE.model_copy(update={"phase": phase, "candidate": manifest()})
    assert kinds(plan_recovery(state, facts())) == list(APPLY_STEPS)


def test_idle_restart_only_prunes() -> None:
    assert kinds(plan_recovery(STATE, facts())) == [StepKind.PRUNE]


def test_commands() -> None:
    assert kinds(plan_command(STATE, "rollback", {})) == [StepKind.SWITCH, StepKind.PRUNE]
    assert plan_command(STATE, "rollback", {})[0].version == 2
    on_probation = STATE.model_copy(update={"trial": record(4), "phase": UpdateState.PROBATION})
    assert kinds(plan_command(on_probation, "rollback", {})) == [StepKind.ROLLBACK, StepKind.PRUNE]
    assert kinds(plan_command(STATE, "pin", {})) == [StepKind.PIN]
    assert kinds(plan_command(STATE, "pin", {"version": 2})) == [
        StepKind.SWITCH,
        StepKind.PRUNE,
        StepKind.PIN,
    ]
    assert kinds(plan_command(STATE, "pin", {"version": 9})) == [StepKind.REJECT]
    assert kinds(plan_command(STATE, "pin", {"version": "x"})) == [StepKind.REJECT]
    assert kinds(plan_command(STATE, "unpin", {})) == [StepKind.UNPIN, StepKind.CHECK]
    assert kinds(plan_command(STATE, "update_check", {})) == [StepKind.CHECK]
    alone = UpdaterState(model="catdog", active=record(3))
    assert kinds(plan_command(alone, "rollback", {})) == [StepKind.REJECT]


@given(version=st.integers(0, 10**6), active=st.integers(0, 10**6), allow=st.booleans())
def test_never_applies_a_downgrade_unless_allowed(version: int, active: int, allow: bool) -> None:
    state = UpdaterState(model="catdog", active=record(active, "catdog-active"))
    steps = plan_release(state, manifest(version, allow_downgrade=allow), facts())
    applies = kinds(steps) == list(APPLY_STEPS)
    # Same version with other content counts as a downgrade: only an explicit allow takes it.
    assert applies == (version > active or allow)
