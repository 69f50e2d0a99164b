"""``kill -9`` of the device updater at every state, then a restart: a valid model serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.protocol import Channel, PredictionMessage, UpdateEvent, decode_message
from tests.integration.updater_device import SITE
from tests.integration.updater_fixtures import Fleet, fleet
from tests.support.mqtt import Collector

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["fleet"]

ROOT = Path(__file__).resolve().parents[2]

# State killed in → (version serving after the restart, final state reported after it).
CASES = {
    "downloading": (2, "committed"),
    "verifying": (2, "committed"),
    "smoke": (2, "committed"),
    "activating": (1, "rolled_back"),
    "probation": (1, "rolled_back"),
    "committed": (2, None),
}


def start_device(
    fleet: Fleet, workdir: Path, v1: Path, pause_at: str | None
) -> subprocess.Popen[bytes]:
    config = fleet.config(workdir)
    spec = {
        "updater": config.model_dump(mode="json"),
        "port": fleet.endpoint.port,
        "root": fleet.root,
        "provisioned": str(v1),
        "marker": str(workdir / "paused"),
        "pause_at": pause_at,
    }
    path = workdir / f"device-{pause_at or 'restart'}.json"
    path.write_text(json.dumps(spec))
    log = (workdir / f"device-{pause_at or 'restart'}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.updater_device", str(path)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def decoded(collector: Collector, since: int = 0) -> list:
    return [decode_message(p) for _t, p in collector.messages[since:]]


@pytest.mark.parametrize("state", list(CASES))
def test_kill_at_state_then_restart_serves_a_valid_model(
    fleet: Fleet, tmp_path: Path, state: str
) -> None:
    version_after, final_after = CASES[state]
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    workdir = tmp_path / "device"
    workdir.mkdir()
    device_topics = f"{fleet.root}/{SITE}/cam-01/+"
    with Collector(fleet.endpoint, device_topics) as collector:
        proc = start_device(fleet, workdir, v1, pause_at=state)
        restarted = None
        try:
            wait_until(
                lambda: any(isinstance(m, PredictionMessage) for m in decoded(collector)),
                30,
                "the first device to serve",
            )
            manifest = fleet.publish(v2, 2)
            wait_until((workdir / "paused").exists, 30, f"the device to reach {state}")
            # This harness sends events straight over MQTT (no outbox): let the paused
            # state's event reach the broker before the kill, so the check below is about
            # recovery, not about a message in flight at the moment of the kill.
            wait_until(
                lambda: any(
                    isinstance(m, UpdateEvent) and m.state.value == state
                    for m in decoded(collector)
                ),
                10,
                f"the {state} event",
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            mark = len(collector.messages)
            restarted = start_device(fleet, workdir, v1, pause_at=None)

            def serving_expected() -> bool:
                return any(
                    isinstance(m, PredictionMessage) and m.model_version == version_after
                    for m in decoded(collector, mark)
                )

            wait_until(serving_expected, 40, f"version {version_after} to serve after restart")
            if final_after is not None:
                wait_until(
                    lambda: any(
                        isinstance(m, UpdateEvent)
                        and m.release_id == manifest.release_id
                        and m.state.value == final_after
                        for m in decoded(collector, mark)
                    ),
                    40,
                    f"{final_after} reported after restart",
                )
            events = [m for m in decoded(collector) if isinstance(m, UpdateEvent)]
            assert any(e.state.value == state for e in events), "the paused state was reported"
            pointer = json.loads((workdir / "models" / "active.json").read_text())
            assert pointer["version"] == version_after
            topics = {t for t, _p in collector.messages}
            assert fleet.tree.device(SITE, "cam-01", Channel.EVENTS) in topics
        finally:
            for p in (proc, restarted):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(10)
