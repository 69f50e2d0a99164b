"""A 60 MB MQTT message costs neither the fleet nor a device its memory.

The shipped broker config refuses any packet over 512 KiB before reading it; a client
on a broker without that limit drops the connection as soon as the packet's length is
known, instead of reading 60 MB the way paho otherwise would.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink

pytestmark = pytest.mark.integration

BOMB_MB = 60


def _bomb(tmp_path: Path) -> Path:
    path = tmp_path / "bomb.bin"
    with path.open("wb") as f:
        f.truncate(BOMB_MB * 1024 * 1024)  # a sparse file: nothing held in this process
    return path


def _publish_file(
    broker: MosquittoBroker, topic: str, path: Path
) -> subprocess.CompletedProcess[str]:
    """mosquitto_pub, a peer client in its own process, so its buffer is not ours."""
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            topic,
            "-f",
            str(path),
            "-i",
            f"bomber-{uuid.uuid4().hex[:6]}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _link(broker: MosquittoBroker, topic: str, got: list[bytes]) -> MqttLink:
    link = MqttLink(BrokerEndpoint(broker.host, broker.port), reconnect_max_s=2)
    link.subscribe(topic, lambda _t, p: got.append(p))
    link.start()
    return link


def test_shipped_broker_limit_refuses_the_bomb_and_delivers_what_follows(
    tmp_path: Path, private_broker: MosquittoBroker
) -> None:
    topic = f"mlops/park/cam-01/telemetry/{uuid.uuid4().hex[:6]}"
    got: list[bytes] = []
    link = _link(private_broker, topic, got)
    try:
        before = _rss_mb()
        sent = _publish_file(private_broker, topic, _bomb(tmp_path))
        assert sent.returncode != 0, "the broker took a 60 MB publish"
        assert link.publish(topic, b"after", qos=1).wait(10)
        deadline = time.monotonic() + 10
        while b"after" not in got and time.monotonic() < deadline:
            time.sleep(0.05)
        grown = _rss_mb() - before
    finally:
        link.stop()
    print(f"\nbroker limit: publisher refused, subscriber RSS +{grown:.1f} MB")
    assert got == [b"after"], "the bomb was delivered, or what followed was not"
    assert grown < 20, f"subscriber RSS grew by {grown:.0f} MB"
    assert "max_packet_size 524288" in private_broker.config_path.read_text()


def test_a_client_drops_an_oversized_packet_before_reading_it(tmp_path: Path) -> None:
    with MosquittoBroker(workdir=tmp_path / "open-broker", max_packet_bytes=0) as broker:
        topic = f"mlops/park/cam-01/cmd/{uuid.uuid4().hex[:6]}"
        got: list[bytes] = []
        link = _link(broker, topic, got)
        dropped = threading.Event()
        try:
            before = _rss_mb()
            sent = _publish_file(broker, topic, _bomb(tmp_path))
            assert sent.returncode == 0, sent.stderr  # this broker has no limit
            deadline = time.monotonic() + 30
            while link.oversized_packets == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            grown = _rss_mb() - before
            # The link comes back by itself and the session works again.
            if link.connected.wait(15):
                dropped.set()
            assert link.publish(topic, b"after", qos=1).wait(10)
            deadline = time.monotonic() + 10
            while b"after" not in got and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            link.stop()
    print(f"\nclient limit: packet dropped, RSS +{grown:.1f} MB")
    assert link.oversized_packets >= 1
    assert all(len(p) < 1024 for p in got), "the 60 MB payload reached the handler"
    assert grown < 20, f"RSS grew by {grown:.0f} MB reading a packet it refused"
    assert dropped.is_set() and b"after" in got
