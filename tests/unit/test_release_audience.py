"""Release targeting rules and the choice of what an aborted rollout restores."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_trainer.release.audience import AudienceError, describe_rule, resolve_percent
from cloud_trainer.release.restore import Restore, RestoreError, choose_restore, committed_release
from edge_agent.protocol import ReleaseManifest, Rollout, rollout_bucket
from tests.support.samples import sample_manifest


@pytest.mark.parametrize(
    ("percent", "groups", "devices", "expected"),
    [
        (None, ["canary"], [], 0.0),  # groups alone: those groups, nobody else
        (None, [], ["cam-07"], 0.0),
        (10.0, ["canary"], [], 10.0),
        (100.0, [], [], 100.0),
        (25.0, [], [], 25.0),
    ],
)
def test_percent_is_explicit(
    percent: float | None, groups: list[str], devices: list[str], expected: float
) -> None:
    assert resolve_percent(percent, groups, devices) == expected


@pytest.mark.parametrize(
    ("percent", "message"),
    [(None, "no audience"), (0.0, "reaches no device"), (101.0, "within 0-100")],
)
def test_releases_without_an_audience_are_refused(percent: float | None, message: str) -> None:
    with pytest.raises(AudienceError, match=message):
        resolve_percent(percent, [], [])


@pytest.mark.parametrize(
    ("rollout", "words"),
    [
        (Rollout(percent=0, groups=["canary"]), "groups canary"),
        (Rollout(percent=10, groups=["canary"]), "groups canary + 10% of the others"),
        (Rollout(percent=100), "every device"),
        (Rollout(percent=5), "5% of the fleet"),
        (Rollout(percent=0, devices=["cam-07"]), "devices cam-07"),
    ],
)
def test_the_rule_in_words(rollout: Rollout, words: str) -> None:
    assert describe_rule(rollout) == words


def test_groups_alone_reach_no_device_outside_them() -> None:
    rollout = Rollout(percent=0, groups=["canary"])
    others = [f"cam-{i:03d}" for i in range(500)]
    assert not [d for d in others if rollout.reaches(d, set(), "catdog")]
    assert rollout.reaches("cam-001", {"canary"}, "catdog")


def test_the_percent_cohort_is_keyed_by_model_not_release() -> None:
    inside = [d for d in (f"cam-{i:03d}" for i in range(500)) if rollout_bucket(d, "catdog") < 10]
    assert 25 <= len(inside) <= 75  # about 10 % of 500
    assert all(Rollout(percent=10).reaches(d, set(), "catdog") for d in inside)


def _row(release_id: str, version: int, states: list[str], **extra: Any) -> dict[str, Any]:
    manifest = sample_manifest().model_copy(update={"release_id": release_id, "version": version})
    return {
        "release_id": release_id,
        "version": version,
        "devices": [{"device_id": f"d{i}", "state": s} for i, s in enumerate(states)],
        "history": extra.pop("history", []),
        "manifest": manifest.model_dump(mode="json"),
        **extra,
    }


def _failing(version: int = 9) -> ReleaseManifest:
    return sample_manifest().model_copy(update={"release_id": "bad-9", "version": version})


def test_restore_skips_rejected_aborted_and_same_version_releases() -> None:
    rows = [
        _row("bad-9", 9, ["rolled_back"]),  # the failing release itself
        _row("again-9", 9, ["committed"]),  # same version under another id
        _row("rejected-8", 8, ["rolled_back", "rolled_back", "committed"]),
        _row("aborted-7", 7, ["committed"], history=[{"action": "aborted"}]),
        _row("nobody-6", 6, []),
        _row("good-5", 5, ["committed", "committed", "failed"]),
        _row("older-4", 4, ["committed"]),
    ]
    found = committed_release(rows, _failing())
    assert found is not None and found.manifest is not None
    assert found.manifest.release_id == "good-5" and "2 device(s) committed, 1 failed" in found.why


def test_no_source_means_nothing_restored_and_says_why() -> None:
    def down(_failing: ReleaseManifest) -> Restore | None:
        raise RestoreError("the fleet at http://x did not answer")

    choice = choose_restore(_failing(), [down, lambda _f: None])
    assert choice.manifest is None
    assert "did not answer" in choice.why and "nothing re-released" in choice.why
    later = Restore(_failing(3), "v3 holds the registry's champion alias")
    assert choose_restore(_failing(), [down, lambda _f: later]) is later
