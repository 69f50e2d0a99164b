"""Canary means canary: targeting, the abort's restore and the rollout history, on real parts.

Real Mosquitto, real updaters serving real ONNX models, the real artefact server, the real
fleet service (SQLite store, HTTP API) and the real ``cloud-trainer release`` CLI.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import queries, sqlite_url
from cloud_trainer.release.publisher import ReleaseTarget
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import (
    Channel,
    StatusMessage,
    UpdateState,
    encode,
    utc_now,
    verify_manifest,
)
from tests.integration.updater_device import Device
from tests.integration.updater_fixtures import Fleet, fleet
from tests.support.newer_spec import from_a_newer_cloud, rewrite_spec

pytestmark = pytest.mark.integration
__all__ = ["fleet"]

TOKEN = "operator-token-canary-0123456789"
# The fixture's smoke budget is tight on purpose for its own tests; here a loaded machine must
# not turn a probation verdict into a smoke failure.
SMOKE = {"latency_budget_factor": 1.0}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


VIEWER = "release-viewer-0123456789"


@pytest.fixture
def service(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FleetService]:
    """The fleet service; the release tooling reads it with a viewer token from the shell."""
    monkeypatch.setenv("EDGE_MLOPS_FLEET_TOKEN", VIEWER)
    settings = FleetSettings(
        database_url=sqlite_url(tmp_path / "fleet.db"),
        broker_host=fleet.endpoint.host,
        broker_port=fleet.endpoint.port,
        root=fleet.root,
        http_port=0,
        api_tokens=parse_tokens(f"operator={TOKEN}"),
        viewer_tokens=parse_tokens(f"release-tooling={VIEWER}"),
        samples_dir=tmp_path / "samples",
        release_public_keys=[fleet.public_key],
        instance=uuid.uuid4().hex[:8],
    )
    running = FleetService(settings).start()
    try:
        yield running
    finally:
        running.stop()


def cli_args(fleet: Fleet, tmp_path: Path, verb: str, *extra: str) -> list[str]:
    return [
        "release",
        verb,
        "--broker",
        f"{fleet.endpoint.host}:{fleet.endpoint.port}",
        "--root",
        fleet.root,
        "--key",
        str(tmp_path / "keys" / "fleet.key"),
        "--artefacts",
        str(tmp_path / "artefacts"),
        "--base-url",
        fleet.server.base_url,
        "--model",
        "catdog",
        *extra,
    ]


def untouched_by(device: Device, version: int) -> bool:
    """The device never went past a refusal for ``version`` and still serves its own."""
    went = [e for e in device.events if e.to_version == version]
    return all(e.state is UpdateState.REFUSED for e in went)


def test_a_canary_publish_reaches_the_canary_group_only(
    fleet: Fleet,
    service: FleetService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for device_id, groups in (("cam-01", ["canary"]), ("cam-02", [])):
        body = {"device_id": device_id, "site": "lab", "kind": "camera", "groups": groups}
        answer = httpx.post(f"{service.base_url}/api/devices", json=body, headers=auth)
        assert answer.status_code == 201, answer.text
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    canary = fleet.device(tmp_path / "a", v1, device_id="cam-01", groups=["canary"], smoke=SMOKE)
    other = fleet.device(tmp_path / "b", v1, device_id="cam-02", smoke=SMOKE)
    try:
        model = ["--file", str(v2), "--file-version", "2"]
        # No audience named: refused, nothing published.
        assert cloud_main(cli_args(fleet, tmp_path, "publish", *model)) == 2
        assert "no audience" in capsys.readouterr().err
        # The dry run names the exact devices from the fleet's list.
        fleet_url = ["--fleet-url", service.base_url]
        dry = cli_args(fleet, tmp_path, "publish", *model, "--groups", "canary", "--dry-run")
        assert cloud_main([*dry, *fleet_url]) == 0
        out = capsys.readouterr().out
        assert "audience: groups canary" in out and "1 of 2 known device(s): cam-01" in out
        assert fleet.channel.current("catdog", timeout=0.5) is None  # a dry run publishes nothing
        real = cli_args(fleet, tmp_path, "publish", *model, "--groups", "canary", *fleet_url)
        assert cloud_main(real) == 0
        assert "1 of 2 known device(s): cam-01" in capsys.readouterr().out
        current = fleet.channel.current("catdog")
        assert current is not None and current.rollout.percent == 0
        assert current.rollout.groups == ["canary"]
        canary.wait_for(lambda e: e.to_version == 2 and e.state is UpdateState.COMMITTED)
        serving = canary.slot.current.path  # loaded from staging, reported where it now lives
        assert serving.is_file() and serving.parent.name == "versions", serving
        other.wait_for(lambda e: e.to_version == 2 and e.state is UpdateState.REFUSED)
        time.sleep(0.5)  # give a wrongly targeted device time to start downloading
        assert untouched_by(other, 2)
        assert other.updater.state.active is not None
        assert other.updater.state.active.version == 1
        assert {s.sha256 for s in other.served[-20:]} == {other.slot.current.sha256}
    finally:
        canary.stop()
        other.stop()


def test_an_aborted_rollout_restores_the_last_committed_release_and_keeps_its_history(
    fleet: Fleet,
    service: FleetService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = service.store
    v1 = fleet.model("v1")
    good, flipped = fleet.model("v2", bias=0.01), fleet.model("flipped", bias=20.0)
    probation = {"max_disagreement": 0.2}
    canary = fleet.device(
        tmp_path / "a", v1, device_id="cam-01", groups=["canary"], probation=probation, smoke=SMOKE
    )
    other = fleet.device(tmp_path / "b", v1, device_id="cam-02", probation=probation, smoke=SMOKE)
    devices = (canary, other)
    try:
        everyone = ReleaseTarget(percent=100.0)
        committed = fleet.channel.publish(fleet.manifest(good, 2, everyone))
        for device in devices:
            device.wait_for(lambda e: e.to_version == 2 and e.state is UpdateState.COMMITTED)
        # A bad release reaches everyone and is rejected by everyone: it stays retained.
        rejected = fleet.channel.publish(fleet.manifest(flipped, 3, everyone))
        for device in devices:
            device.wait_for(lambda e: e.to_version == 3 and e.state is UpdateState.ROLLED_BACK)

        def outcomes(release_id: str) -> list[str]:
            release = store.read(lambda c: queries.get_release(c, release_id))
            return sorted(d["state"] for d in (release or {}).get("devices", []))

        wait_until(lambda: outcomes(committed.release_id) == ["committed"] * 2, "v2 committed")
        wait_until(lambda: outcomes(rejected.release_id) == ["rolled_back"] * 2, "v3 rejected")

        rollout = cli_args(
            fleet,
            tmp_path,
            "rollout",
            "--file",
            str(flipped),
            "--file-version",
            "4",
            "--groups",
            "canary",
            "--waves",
            "0,100",
            "--soak-s",
            "0",
            "--fleet-url",
            service.base_url,
        )
        assert cloud_main(rollout) == 1
        said = capsys.readouterr().out
        assert "abort" in said and "re-released v2" in said, said
        restored = fleet.channel.current("catdog")
        assert restored is not None and restored.version == 2 and restored.allow_downgrade
        assert restored.rollout.percent == 100
        verify_manifest(restored, fleet.key.public_key)
        assert untouched_by(other, 4)  # the second wave never went out

        wait_until(
            lambda: store.counts()["rollout_log"] >= 3, "rollout records stored"
        )  # started, aborted, restored
        status = ["release", "status", "--broker", f"{fleet.endpoint.host}:{fleet.endpoint.port}"]
        status += ["--root", fleet.root, "--model", "catdog", "--fleet-url", service.base_url]
        assert cloud_main([*status, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["current"]["version"] == 2
        releases = {r["version"]: r for r in report["fleet"]["releases"] if r["version"] != 2}
        aborted = releases[4]
        assert "failure rate 1/1" in aborted["aborted"]
        assert aborted["restored"]["version"] == 2
        assert committed.release_id in aborted["restored"]["reason"]
        assert [s["action"] for s in aborted["history"]] == ["started", "aborted", "restored"]
        assert aborted["devices"]["cam-01"]["state"] == "rolled_back"
        assert "cam-02" not in aborted["devices"] or aborted["devices"]["cam-02"]["state"] in (
            "refused",
        )
        assert {d["state"] for d in releases[3]["devices"].values()} == {"rolled_back"}
        assert cloud_main(status) == 0
        text = capsys.readouterr().out
        assert "aborted wave 0: failure rate 1/1" in text and "restored" in text
    finally:
        canary.stop()
        other.stop()


def test_a_model_old_agents_cannot_read_is_staged_to_the_agents_that_can(
    fleet: Fleet,
    service: FleetService,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A spec from a newer cloud (sections this agent never heard of, declared optional)
    needs agent 0.2.0: the fleet knows cam-02 runs 0.1.0, so only cam-01 is sent it, and
    cam-01, the current agent, reads it, skips what it does not know and commits it."""
    link = MqttLink(fleet.endpoint, client_id=f"status-{uuid.uuid4().hex[:8]}")
    link.start()
    try:
        for seq, (device_id, agent) in enumerate((("cam-01", "0.2.0"), ("cam-02", "0.1.0"))):
            status = StatusMessage(
                device_id=device_id,
                ts=utc_now(),
                seq=seq,
                state="online",
                site="lab",
                kind="camera",
                agent_version=agent,
                model_name="catdog",
                model_version=1,
            )
            topic = fleet.tree.device("lab", device_id, Channel.STATUS)
            assert link.publish(topic, encode(status), qos=1, retain=True).wait(10)
    finally:
        link.stop()
    wait_until(
        lambda: {d.get("agent_version") for d in service.store.devices()} == {"0.1.0", "0.2.0"},
        "agent versions stored",
    )
    v1 = fleet.model("v1")
    newer = rewrite_spec(fleet.model("v2", bias=0.01), from_a_newer_cloud)
    canary = fleet.device(tmp_path / "a", v1, device_id="cam-01", smoke=SMOKE)
    try:
        model = ["--file", str(newer), "--file-version", "2", "--percent", "100"]
        args = cli_args(fleet, tmp_path, "publish", *model, "--fleet-url", service.base_url)
        assert cloud_main(args) == 0
        out = capsys.readouterr().out
        assert "run an agent older than 0.2.0, which this model needs: cam-02" in out
        assert "staged only to the 1 device(s) that can read it" in out
        current = fleet.channel.current("catdog")
        assert current is not None
        assert current.rollout.devices == ["cam-01"] and current.rollout.percent == 0
        canary.wait_for(lambda e: e.to_version == 2 and e.state is UpdateState.COMMITTED)
        # Without the fleet the tool cannot know who runs what: it says so instead.
        args = cli_args(fleet, tmp_path, "publish", *model, "--dry-run")
        assert cloud_main(args) == 0
        assert "needs agent 0.2.0 or newer" in capsys.readouterr().out
    finally:
        canary.stop()
