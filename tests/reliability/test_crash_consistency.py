"""Hundreds of random kill -9: the outbox always opens and loses nothing committed, and a
device killed anywhere in a model install always boots a valid, committed model."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from tests.reliability.crash_runs import boot_violations, install_crashes, outbox_crashes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTBOX_KILLS = 120
INSTALL_KILLS = 80


def test_outbox_survives_random_kills(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    outcome = outbox_crashes(mosquitto, tmp_path / "outbox", OUTBOX_KILLS)
    report = outcome.report
    assert report.summary["kills"] == OUTBOX_KILLS
    assert report.errors == []
    opened = report.of("O")
    # Most children got as far as opening the file; each did so without error.
    assert len(opened) >= OUTBOX_KILLS // 2
    assert len(outcome.committed) > OUTBOX_KILLS * 10, "writers were killed mid-stream"
    assert outcome.committed == sorted(set(outcome.committed)), "seq strictly increases"
    assert outcome.lost == []
    assert outcome.received, "the publisher delivered between kills"
    assert outcome.queued | outcome.received >= set(outcome.committed)


def test_model_installs_survive_random_kills(tmp_path: Path) -> None:
    report = install_crashes(tmp_path / "install", INSTALL_KILLS)
    assert report.summary["kills"] == INSTALL_KILLS
    assert report.errors == []
    boots = report.of("B")
    assert len(boots) >= INSTALL_KILLS // 2, "most children booted before their kill"
    final = report.summary["final"]
    assert len(final) == 1 and final[0].startswith("B "), final
    assert boot_violations(report) == []
    commits = [rest for _c, rest in report.of("S") if rest.startswith("committed")]
    assert len(commits) >= 10, "releases were applied between kills"
    killed_in = report.summary["killed_in"]
    # Kills landed inside the install itself, not only while idle.
    assert (
        sum(
            killed_in.get(s, 0)
            for s in ("downloading", "verifying", "smoke", "activating", "probation")
        )
        >= 10
    ), killed_in
