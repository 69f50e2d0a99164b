"""Release tooling against real parts: HTTP Range/ETag, the release CLI, a staged rollout."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.release.publisher import ReleaseTarget
from cloud_trainer.release.rollout import Action, Decision, RolloutController, RolloutPolicy, Wave
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.protocol import UpdateState, verify_manifest
from tests.integration.updater_fixtures import Fleet, fleet
from tests.support.onnx_models import image_classifier

pytestmark = pytest.mark.integration
__all__ = ["fleet"]


def get(fleet: Fleet, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    host, port = fleet.server.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def test_artefact_server_ranges_and_etag(fleet: Fleet) -> None:
    path = fleet.model("v1")
    data = path.read_bytes()
    sha, size, url = fleet.server.publish_file(path, "catdog-v1.onnx")
    url_path = url.removeprefix(fleet.server.base_url)
    whole = get(fleet, url_path, {})
    assert whole.status == 200 and whole.read() == data and whole.headers["ETag"] == f'"{sha}"'
    part = get(fleet, url_path, {"Range": "bytes=100-", "If-Range": f'"{sha}"'})
    assert part.status == 206 and part.read() == data[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    stale = get(fleet, url_path, {"Range": "bytes=100-", "If-Range": '"other"'})
    assert stale.status == 200 and stale.read() == data  # changed file: send it whole
    assert get(fleet, url_path, {"Range": f"bytes={size}-"}).status == 416
    assert get(fleet, "/artifacts/../../etc/passwd", {}).status == 404


def test_cli_keygen_publish_status(
    broker_endpoint: BrokerEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloud_trainer.release.artefacts import ArtefactServer

    assert cloud_main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 0
    assert cloud_main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 2
    model = tmp_path / "v5.onnx"
    image_classifier(model)
    broker = f"{broker_endpoint.host}:{broker_endpoint.port}"
    with ArtefactServer(tmp_path / "artefacts") as server:
        common = [
            "--broker",
            broker,
            "--root",
            "clirel",
            "--key",
            str(tmp_path / "keys" / "fleet-release.key"),
        ]
        common += ["--artefacts", str(tmp_path / "artefacts"), "--base-url", server.base_url]
        code = cloud_main(
            [
                "release",
                "publish",
                *common,
                "--model",
                "catdog",
                "--file",
                str(model),
                "--file-version",
                "5",
                "--percent",
                "20",
                "--groups",
                "canary",
            ]
        )
        assert code == 0
        assert (
            cloud_main(
                ["release", "status", "--broker", broker, "--root", "clirel", "--model", "catdog"]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "catdog v5" in out and "percent 20 groups ['canary']" in out
        bad = cloud_main(["release", "publish", *common, "--model", "catdog", "--file", str(model)])
        assert bad == 2  # --file needs --file-version


def test_rollout_aborts_on_canary_failure_and_restores(fleet: Fleet, tmp_path: Path) -> None:
    v1 = fleet.model("v1")
    v2 = fleet.model("v2", bias=20.0)  # disagrees with v1 on every red frame
    canary = fleet.device(
        tmp_path / "canary",
        v1,
        device_id="cam-01",
        groups=["canary"],
        probation={"shadow": True, "max_disagreement": 0.2},
    )
    other = fleet.device(tmp_path / "other", v1, device_id="cam-02")
    try:
        fleet.channel.publish(fleet.manifest(v1, 1))
        policy = RolloutPolicy(waves=(Wave(0, ("canary",)), Wave(100)), min_outcomes=1, soak_s=0)
        controller = RolloutController(fleet.link, fleet.tree, fleet.channel, policy)
        decision = controller.run(fleet.manifest(v2, 2), ReleaseTarget(), tick_s=0.1)
        assert decision.action is Action.ABORT, decision
        assert canary.updater.state.active.version == 1  # type: ignore[union-attr]
        assert any(e.state is UpdateState.ROLLED_BACK for e in canary.events)
        # With no fleet store or registry to say which release was committed, the retained
        # v1 is not trusted blindly: nothing is re-released, and the decision says so.
        assert "no committed release of catdog is known" in decision.reason
        assert controller.restored is None
        current = fleet.channel.current("catdog")
        assert current is not None and current.version == 2 and current.rollout.wave == 0
        verify_manifest(current, fleet.key.public_key)
        # The second device was never in a wave that got v2.
        assert not [
            e for e in other.events if e.to_version == 2 and e.state is not UpdateState.REFUSED
        ]
    finally:
        canary.stop()
        other.stop()


def test_rollout_widens_wave_by_wave(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    devices = [
        fleet.device(tmp_path / "a", v1, device_id="cam-01", groups=["canary"]),
        fleet.device(tmp_path / "b", v1, device_id="cam-02"),
    ]
    try:
        # The soak gives the second wave's devices time to start before the verdict.
        policy = RolloutPolicy(waves=(Wave(0, ("canary",)), Wave(100)), min_outcomes=1, soak_s=1.5)
        decisions: list[Decision] = []
        controller = RolloutController(
            fleet.link, fleet.tree, fleet.channel, policy, on_decision=decisions.append
        )
        result = controller.run(fleet.manifest(v2, 2), ReleaseTarget(), tick_s=0.1)
        assert result.action is Action.DONE, result
        assert Action.ADVANCE in [d.action for d in decisions]
        assert all(d.updater.state.active.version == 2 for d in devices)  # type: ignore[union-attr]
    finally:
        for device in devices:
            device.stop()
