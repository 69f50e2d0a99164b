"""The device updater against a real broker, real HTTP and real onnxruntime: each fault case.

In every case a valid model serves afterwards and the outcome is reported on MQTT.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloud_trainer.release.publisher import ReleaseTarget
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.protocol import (
    Channel,
    SigningKey,
    UpdateEvent,
    UpdateState,
    decode_message,
    encode,
)
from tests.integration.updater_device import SITE, Device
from tests.integration.updater_fixtures import FaultyFileServer, Fleet, fleet, make_fleet
from tests.support.mqtt import Collector

pytestmark = pytest.mark.integration
__all__ = ["fleet"]

FINAL = {UpdateState.COMMITTED, UpdateState.ROLLED_BACK, UpdateState.FAILED, UpdateState.REFUSED}


def final_event(device: Device, release_id: str, timeout: float = 20.0) -> UpdateEvent:
    return device.wait_for(lambda e: e.release_id == release_id and e.state in FINAL, timeout)


def reported(collector: Collector, release_id: str, state: UpdateState) -> UpdateEvent:
    """The event as it crossed the broker (not just the device's own hook)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for _topic, payload in list(collector.messages):
            event = decode_message(payload)
            if isinstance(event, UpdateEvent) and (event.release_id, event.state) == (
                release_id,
                state,
            ):
                return event
        time.sleep(0.02)
    raise AssertionError(f"{state} for {release_id} not seen on MQTT")


def assert_serves(device: Device, sha256: str) -> None:
    """The slot serves ``sha256`` and live frames come out of it without errors."""
    assert device.slot.current.sha256 == sha256
    before = len(device.served)
    deadline = time.monotonic() + 10
    while len(device.served) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    recent = device.served[before:]
    assert len(recent) >= 5 and all(s.ok and s.sha256 == sha256 for s in recent)


def events_topic(fleet: Fleet, device: str = "cam-01") -> str:
    return fleet.tree.device(SITE, device, Channel.EVENTS)


def test_release_is_applied_with_every_transition_reported(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    with Collector(fleet.endpoint, events_topic(fleet)) as collector:
        device = fleet.device(tmp_path, v1)
        try:
            manifest = fleet.publish(v2, 2)
            event = final_event(device, manifest.release_id)
            assert event.state is UpdateState.COMMITTED, event.reason
            assert_serves(device, manifest.sha256)
            states = [e.state for e in device.events if e.release_id == manifest.release_id]
            assert states == [
                UpdateState.DOWNLOADING,
                UpdateState.VERIFYING,
                UpdateState.SMOKE,
                UpdateState.ACTIVATING,
                UpdateState.PROBATION,
                UpdateState.COMMITTED,
            ]
            assert not [s for s in device.served if not s.ok], "a frame failed during the swap"
            reported(collector, manifest.release_id, UpdateState.COMMITTED)
            assert (tmp_path / "models" / "active.json").read_text().count(manifest.sha256) == 1
        finally:
            device.stop()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unsigned", "is not signed"),
        ("foreign_key", "unknown key"),
        ("tampered", "does not match its content"),
        ("untrusted_publisher", "may not publish releases"),
        ("downgrade", "downgrade"),
        ("other_channel", "channel 'beta' not taken"),
        ("not_targeted", "not targeted"),
        ("too_big", "exceeds the cap"),
    ],
)
def test_refused_manifests_are_reported(
    fleet: Fleet, tmp_path: Path, case: str, expected: str
) -> None:
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    manifest = fleet.manifest(v2, 2)
    link, topic = fleet.link, fleet.tree.release("catdog")

    if case == "unsigned":
        payload = encode(manifest)
    elif case == "foreign_key":
        payload = encode(SigningKey.generate().sign(manifest))
    elif case == "tampered":
        signed = fleet.key.sign(manifest)
        payload = encode(signed.model_copy(update={"urls": ["http://127.0.0.1:9/evil.onnx"]}))
    elif case == "untrusted_publisher":
        payload = encode(fleet.key.sign(manifest.model_copy(update={"publisher": "intruder"})))
    elif case == "downgrade":
        payload = encode(fleet.key.sign(manifest.model_copy(update={"version": 0})))
    elif case == "other_channel":
        payload = encode(fleet.key.sign(manifest.model_copy(update={"channel": "beta"})))
    elif case == "not_targeted":
        target = ReleaseTarget(percent=0, groups=("other",))
        payload = encode(fleet.key.sign(fleet.manifest(v2, 2, target)))
    else:
        payload = encode(fleet.key.sign(manifest.model_copy(update={"size": 32 * 1024 * 1024})))
    with Collector(fleet.endpoint, events_topic(fleet)) as collector:
        device = fleet.device(tmp_path, v1)
        try:
            assert link.publish(topic, payload, qos=1, retain=True).wait(5)
            event = device.wait_for(lambda e: e.state is UpdateState.REFUSED)
            assert expected in (event.reason or ""), event.reason
            reported(collector, event.release_id or "", UpdateState.REFUSED)
            assert_serves(device, device.updater.state.active.sha256)  # type: ignore[union-attr]
            assert device.updater.state.active.version == 1  # type: ignore[union-attr]
        finally:
            device.stop()


@pytest.mark.parametrize(
    ("case", "state", "expected"),
    [
        ("bit_flip", UpdateState.FAILED, "sha256 mismatch"),
        ("wrong_input_shape", UpdateState.FAILED, "does not load"),
        ("nan_output", UpdateState.FAILED, "not finite"),
        ("slow", UpdateState.FAILED, "exceeds the budget"),
        ("truncated", UpdateState.FAILED, "connection"),
    ],
)
def test_bad_candidates_never_serve(
    fleet: Fleet, tmp_path: Path, case: str, state: UpdateState, expected: str
) -> None:
    v1 = fleet.model("v1")
    all_options: dict[str, dict[str, Any]] = {
        "bit_flip": {"bias": 0.01},
        "wrong_input_shape": {"graph_size": 40, "bias": 0.01},
        "nan_output": {"nan_output": True},
        "slow": {"slow_matmuls": 24, "bias": 0.01},
        "truncated": {"bias": 0.01},
    }
    options = all_options[case]
    v2 = fleet.model("v2", **options)
    manifest = fleet.manifest(v2, 2)
    faulty = None
    if case == "bit_flip":
        stored = fleet.server.store.root / manifest.sha256 / Path(manifest.urls[0]).name
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01
        stored.write_bytes(bytes(data))
    if case == "truncated":
        faulty = FaultyFileServer(v2, truncate_first=100)
        manifest = manifest.model_copy(update={"urls": [faulty.url]})
    device = fleet.device(tmp_path, v1)
    try:
        with Collector(fleet.endpoint, events_topic(fleet)) as collector:
            signed = fleet.channel.publish(manifest)
            event = final_event(device, signed.release_id)
            assert event.state is state and expected in (event.reason or ""), event.reason
            reported(collector, signed.release_id, state)
        assert device.updater.state.active.version == 1  # type: ignore[union-attr]
        assert_serves(device, device.updater.state.active.sha256)  # type: ignore[union-attr]
        assert not list((tmp_path / "models" / "staging").glob("*.part"))
        if faulty is not None:
            assert len(faulty.requests) == 2  # both attempts, the second a resume
            assert faulty.requests[1] is not None and faulty.requests[1].startswith("bytes=")
    finally:
        device.stop()
        if faulty is not None:
            faulty.stop()


def test_truncated_download_resumes_with_range(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    faulty = FaultyFileServer(v2, truncate_first=1)
    device = fleet.device(tmp_path, v1)
    try:
        manifest = fleet.channel.publish(
            fleet.manifest(v2, 2).model_copy(update={"urls": [faulty.url]})
        )
        event = final_event(device, manifest.release_id)
        assert event.state is UpdateState.COMMITTED, event.reason
        half = (v2.stat().st_size) // 2
        assert faulty.requests == [None, f"bytes={half}-"]
        assert_serves(device, manifest.sha256)
    finally:
        device.stop()
        faulty.stop()


@pytest.mark.parametrize("failure", ["latency", "shadow"])
def test_probation_failure_rolls_back_live(fleet: Fleet, tmp_path: Path, failure: str) -> None:
    v1 = fleet.model("v1")
    if failure == "latency":
        v2 = fleet.model("v2", slow_matmuls=24, bias=0.01)
        overrides = {
            "smoke": {"latency_budget_factor": 50.0},
            "probation": {"latency_budget_factor": 0.02},
        }
    else:
        v2 = fleet.model("v2", bias=20.0)  # calls every red frame a dog
        overrides = {"probation": {"shadow": True, "max_disagreement": 0.2}}
    device = fleet.device(tmp_path, v1, **overrides)
    try:
        manifest = fleet.publish(v2, 2)
        event = final_event(device, manifest.release_id)
        assert event.state is UpdateState.ROLLED_BACK
        assert ("latency" if failure == "latency" else "disagrees") in (event.reason or "")
        assert_serves(device, device.updater.state.active.sha256)  # type: ignore[union-attr]
        assert device.updater.state.active.version == 1  # type: ignore[union-attr]
        # The retained release is not retried on reconnect.
        device.updater.offer(manifest)
        time.sleep(0.3)
        assert device.slot.current.sha256 != manifest.sha256
    finally:
        device.stop()


def test_disk_budget_exceeded_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    v1 = fleet.model("v1", slow_matmuls=1)  # ~2 MB each
    v2 = fleet.model("v2", slow_matmuls=1, bias=0.01)
    device = fleet.device(tmp_path, v1, disk_budget_mb=3, max_model_mb=3)
    try:
        manifest = fleet.publish(v2, 2)
        event = final_event(device, manifest.release_id)
        assert event.state is UpdateState.REFUSED and "disk budget" in (event.reason or "")
        assert device.updater.state.active.version == 1  # type: ignore[union-attr]
        assert device.slot.current.sha256 == device.updater.state.active.sha256  # type: ignore[union-attr]
    finally:
        device.stop()


def test_two_releases_back_to_back_end_on_the_newest(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2, v3 = fleet.model("v1"), fleet.model("v2", bias=0.01), fleet.model("v3", bias=0.02)
    device = fleet.device(tmp_path, v1)
    try:
        fleet.publish(v2, 2)
        third = fleet.publish(v3, 3)
        event = final_event(device, third.release_id)
        assert event.state is UpdateState.COMMITTED, event.reason
        assert_serves(device, third.sha256)
        assert device.updater.state.active.version == 3  # type: ignore[union-attr]
        assert not [s for s in device.served if not s.ok]
    finally:
        device.stop()


def test_broker_down_mid_download(private_broker: MosquittoBroker, tmp_path: Path) -> None:
    endpoint = BrokerEndpoint(private_broker.host, private_broker.port)
    fleets = make_fleet(endpoint, tmp_path)
    fleet = next(fleets)
    v1, v2 = fleet.model("v1"), fleet.model("v2", bias=0.01)
    gate = threading.Event()
    faulty = FaultyFileServer(v2, gate=gate)
    device = fleet.device(tmp_path, v1)
    try:
        with Collector(endpoint, events_topic(fleet)) as collector:
            manifest = fleet.channel.publish(
                fleet.manifest(v2, 2).model_copy(update={"urls": [faulty.url]})
            )
            device.wait_for(lambda e: e.state is UpdateState.DOWNLOADING)
            private_broker.kill()
            time.sleep(0.5)
            private_broker.restart()
            assert device.link.connected.wait(15) and collector._link is not None
            assert collector._link.connected.wait(15)
            time.sleep(0.3)  # let the collector's subscription land
            gate.set()
            event = final_event(device, manifest.release_id)
            assert event.state is UpdateState.COMMITTED, event.reason
            reported(collector, manifest.release_id, UpdateState.COMMITTED)
        assert_serves(device, manifest.sha256)
    finally:
        gate.set()
        device.stop()
        faulty.stop()
        next(fleets, None)


def test_operator_rollback_and_pin_commands(fleet: Fleet, tmp_path: Path) -> None:
    v1, v2, v3 = fleet.model("v1"), fleet.model("v2", bias=0.01), fleet.model("v3", bias=0.02)
    device = fleet.device(tmp_path, v1)
    try:
        second = fleet.publish(v2, 2)
        assert final_event(device, second.release_id).state is UpdateState.COMMITTED
        result, detail = device.updater.command("rollback")
        assert result == "done", detail
        assert device.updater.state.active.version == 1  # type: ignore[union-attr]
        assert_serves(device, device.updater.state.active.sha256)  # type: ignore[union-attr]
        result, detail = device.updater.command("pin", {"version": 1})
        assert result == "done", detail
        third = fleet.publish(v3, 3)
        refused = final_event(device, third.release_id)
        assert refused.state is UpdateState.REFUSED and "pinned" in (refused.reason or "")
        assert device.updater.command("pin", {"version": 7})[0] == "rejected"
        result, detail = device.updater.command("unpin")
        assert result == "done" and "version 3" in (detail or ""), detail
        assert_serves(device, third.sha256)
    finally:
        device.stop()
