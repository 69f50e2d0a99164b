"""Broker kill -9, fleet service kill -9, agent kill -9: what each costs the fleet.

Devices publish through the agent's own outbox; the fleet service keeps a persistent
session and acknowledges a message only after storing it. Each test counts, against the
seqs the device committed, what the fleet store holds: nothing may be lost. The figures
(lost, duplicates, recovery times) are printed for docs/results.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings, parse_tokens
from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store import schema as t
from cloud_trainer.fleet.store.engine import sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from tests.integration.agent_fixtures import camera_config
from tests.support.device_stream import DeviceStream
from tests.support.secured_broker import broker_user_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "operator-token-0123456789"


def _received(store: FleetStore, device_id: str, kind: str = "prediction") -> set[int]:
    r = t.received.c
    query = select(r.seq).where(r.device_id == device_id, r.kind == kind)
    return store.read(lambda conn: {int(s) for (s,) in conn.execute(query)})


def _wait(check: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """Seconds until ``check()`` held, or None at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(step)
    return None


@dataclass
class Settled:
    """What the device committed against what the fleet store holds, once it drained."""

    committed: set[int]
    stored: set[int]
    stored_all_s: float | None  # seconds from the drained outbox to all stored

    @property
    def lost(self) -> list[int]:
        return sorted(self.committed - self.stored)


def _settle(device: DeviceStream, store: FleetStore, timeout: float) -> Settled:
    """Stop the device, let its outbox drain to the broker, wait until the fleet has it all."""
    device.pause()
    assert device.drain(30), f"{device.store.depth} messages still in the outbox"
    committed = set(device.committed)
    stored_all = _wait(lambda: _received(store, "cam-01") >= committed, timeout, step=0.1)
    return Settled(committed, _received(store, "cam-01"), stored_all)


def _report(name: str, **figures: object) -> None:
    print(f"\n{name}: " + json.dumps(figures))


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    # As the current user: run as root, mosquitto drops to 'mosquitto' and cannot write its
    # state into the test's folder, so nothing would be restored from disk.
    broker = MosquittoBroker(
        workdir=tmp_path / "mosquitto", persistence=True, extra_config=broker_user_lines()
    )
    broker.start()
    yield broker
    broker.close()


def _settings(workdir: Path, broker: MosquittoBroker, root: str) -> FleetSettings:
    return FleetSettings(
        database_url=sqlite_url(workdir / "fleet.db"),
        broker_host=broker.host,
        broker_port=broker.port,
        root=root,
        http_port=0,
        api_tokens=parse_tokens(f"operator={TOKEN}"),
        samples_dir=workdir / "samples",
    )


def test_broker_kill_9_loses_nothing_for_the_fleet(
    tmp_path: Path, persistent_broker: MosquittoBroker
) -> None:
    root = f"bk{uuid.uuid4().hex[:6]}"
    endpoint = BrokerEndpoint(persistent_broker.host, persistent_broker.port)
    service = FleetService(_settings(tmp_path, persistent_broker, root)).start()
    try:
        subscribed_at = time.time()
        with DeviceStream(endpoint, root, tmp_path) as device:
            assert _wait(lambda: len(_received(service.store, "cam-01")) >= 50, 20) is not None
            # The claim is about a session the broker had on disk: Mosquitto writes it every
            # autosave_interval (10 s); killed before its first save since the fleet
            # subscribed, it restores no session for the fleet, and what devices send before
            # the fleet subscribes again goes to no one (seen: 59 of 932 lost, 0 resends
            # received). Wait for that save, as a long-running fleet would have had it.
            assert persistent_broker.workdir is not None
            saved = persistent_broker.workdir / "mosquitto.db"
            assert _wait(
                lambda: saved.exists() and saved.stat().st_mtime > subscribed_at, 25, step=0.2
            ), "mosquitto never saved its state"
            persistent_broker.kill()
            time.sleep(5)  # devices keep queueing in their outboxes meanwhile
            persistent_broker.start()
            fleet_back = _wait(lambda: service.consumer.connected, 30)
            time.sleep(2)  # live traffic after the restart
            settled = _settle(device, service.store, 30)
        duplicates = service.metrics.value("fleet_messages_duplicate_total")
    finally:
        service.stop()
    _report(
        "broker kill -9 for 5 s",
        committed=len(settled.committed),
        lost=len(settled.lost),
        duplicates_dropped=duplicates,
        fleet_reconnect_s=fleet_back,
        all_stored_after_drain_s=settled.stored_all_s,
    )
    assert fleet_back is not None, "the fleet did not reconnect"
    assert settled.lost == [], (
        f"{len(settled.lost)} of {len(settled.committed)} committed messages never stored"
    )


def _fleet_process(workdir: Path, broker: MosquittoBroker, root: str) -> subprocess.Popen[bytes]:
    """``cloud-trainer fleet serve`` as instance "one"; returns once it has subscribed."""
    tokens = workdir / "tokens"
    tokens.write_text(f"operator={TOKEN}\n")
    log = workdir / f"fleet-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud_trainer",
            "fleet",
            "serve",
            "--db",
            sqlite_url(workdir / "fleet.db"),
            "--broker",
            f"{broker.host}:{broker.port}",
            "--port",
            "0",
            "--root",
            root,
            "--instance",
            "one",
            "--tokens-file",
            str(tokens),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    ready = _wait(lambda: "fleet service at" in log.read_text(errors="replace"), 60, 0.1)
    assert ready is not None, f"fleet service did not start: {log.read_text()[-2000:]}"
    return proc


def test_fleet_service_kill_9_loses_nothing(
    tmp_path: Path, persistent_broker: MosquittoBroker
) -> None:
    root = f"fk{uuid.uuid4().hex[:6]}"
    endpoint = BrokerEndpoint(persistent_broker.host, persistent_broker.port)
    proc = _fleet_process(tmp_path, persistent_broker, root)
    store = FleetStore(sqlite_url(tmp_path / "fleet.db"))
    try:
        with DeviceStream(endpoint, root, tmp_path) as device:
            first = _wait(lambda: len(_received(store, "cam-01")) >= 100, 60, step=0.1)
            assert first is not None, "the fleet stored nothing"
            for _ in range(2):  # killed twice, mid-stream, while devices keep publishing
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                time.sleep(2)
                proc = _fleet_process(tmp_path, persistent_broker, root)
                before = len(_received(store, "cam-01"))

                def grew(n: int = before) -> bool:
                    return len(_received(store, "cam-01")) > n

                assert _wait(grew, 60, 0.1) is not None, "the restarted fleet stores nothing"
            settled = _settle(device, store, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        store.close()
    _report(
        "fleet service kill -9 twice",
        committed=len(settled.committed),
        lost=len(settled.lost),
        all_stored_after_drain_s=settled.stored_all_s,
    )
    assert settled.lost == [], (
        f"{len(settled.lost)} of {len(settled.committed)} committed messages never stored"
    )


def _agent_config(tmp_path: Path, port: int, root: str) -> Path:
    config = camera_config(tmp_path, port, frames=20).model_dump(mode="json", exclude_none=True)
    config["source"].update(on_end="loop", fps=10, pace="realtime")
    config["api"] = {"enabled": False}
    config["broker"]["topic_root"] = root
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_last_will_marks_a_killed_agent_offline_and_a_restart_online(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    root = f"lw{uuid.uuid4().hex[:6]}"
    path = _agent_config(tmp_path, mosquitto.port, root)
    service = FleetService(_settings(tmp_path, mosquitto, root)).start()
    command = [sys.executable, "-m", "edge_agent", "run", "--config", str(path)]
    agent = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(
            base_url=service.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as client:

            def state() -> str | None:
                answer = client.get("/api/devices/cam-01")
                return answer.json()["device"]["state"] if answer.status_code == 200 else None

            assert _wait(lambda: state() == "online", 60, step=0.1) is not None
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(10)
            offline_s = _wait(lambda: state() == "offline", 30, step=0.05)
            detail = client.get("/api/devices/cam-01").json()["device"]
            agent = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
            online_s = _wait(lambda: state() == "online", 60, step=0.1)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        service.stop()
    _report("agent kill -9", offline_after_s=offline_s, online_after_restart_s=online_s)
    assert offline_s is not None, "the Last Will did not make the device offline"
    assert detail["state"] == "offline"
    assert online_s is not None, "the restarted agent did not come back online"
