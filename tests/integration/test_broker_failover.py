"""``edge-agent run`` against a real 3-node NATS cluster: it fails over between MQTT nodes.

The agent is given every node as ``broker.endpoints``; killing the node it is connected to
(or listing a dead port first) must cost no prediction: each seq arrives, in order, at a
subscriber on a node that stays up.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.fleet.store import schema, sqlite_url
from cloud_trainer.stack import nats_cluster
from cloud_trainer.stack.mosquitto import free_port
from cloud_trainer.stack.nats_cluster import ClusterUnavailable, NatsCluster, NatsNode, node_config
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.outbox import OutboxStore
from tests.integration.agent_fixtures import camera_config

pytestmark = pytest.mark.integration

PREDICTIONS = "mlops/park/cam-01/predictions"
CONNECTED = re.compile(r"connected to 127\.0\.0\.1:(\d+) as ")
# While JetStream re-elects the leaders the dead node held, a live node answers CONNECT
# only after its 4 s request timeout, with a refusal. Worst case seen: the base delay
# (<= 3 s), a round over both live nodes (2 x 4 s), the back-off (<= reconnect_max_s, 5 s),
# a second round's first node (4 s); + slack.
FAILOVER_BOUND_S = 3.0 + 2 * 4.0 + 5.0 + 4.0 + 4.0


def _replicated_mqtt_config(
    node: NatsNode, peers: list[NatsNode], host: str = "127.0.0.1", **more: Any
) -> str:
    """The cluster's node configuration with MQTT's JetStream assets on all three nodes.

    Left to itself nats-server 2.9 sizes them from the peers it knows when the first MQTT
    client arrives (often 2): a node death can then leave a session stream without quorum,
    and CONNECT fails on the live nodes for as long as the node stays down.
    """
    text = node_config(node, peers, host, **more)
    if "stream_replicas" not in text:
        text = text.replace("mqtt {", "mqtt {\n  stream_replicas: 3\n  consumer_replicas: 3", 1)
    return text


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsCluster]:
    monkeypatch.setattr(nats_cluster, "node_config", _replicated_mqtt_config)
    cluster = NatsCluster()
    try:
        cluster.start()
    except ClusterUnavailable as e:
        pytest.skip(f"no NATS cluster here: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Subscriber:
    """A QoS 0 subscription on a node that stays up, keeping the prediction seqs as they come.

    QoS 0 is plain NATS delivery: it does not depend on the JetStream consumers that move
    when a node dies, and a connection that stays up loses nothing.
    """

    endpoint: BrokerEndpoint
    arrived: list[int] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _link: MqttLink | None = None

    def __enter__(self) -> Subscriber:
        link = MqttLink(self.endpoint, client_id=f"failover-sub-{uuid.uuid4().hex[:8]}")
        link.subscribe(PREDICTIONS, self._on_message, qos=0)
        probe = f"probe/{link.client_id}"
        got_probe = threading.Event()
        link.subscribe(probe, lambda _t, _p: got_probe.set(), qos=0)
        link.start()
        # A round trip proves both subscriptions are active before the agent publishes.
        deadline = time.monotonic() + 15
        while not got_probe.is_set() and time.monotonic() < deadline:
            link.publish(probe, b"1").wait(2)
            got_probe.wait(0.5)
        assert got_probe.is_set(), "the subscriber's probe never came back"
        self._link = link
        return self

    def __exit__(self, *exc: object) -> None:
        if self._link is not None:
            assert self._link.connected.is_set(), "the subscriber's node went down"
            self._link.stop()

    def _on_message(self, _topic: str, payload: bytes) -> None:
        with self._cond:
            self.arrived.append(int(json.loads(payload)["seq"]))
            self._cond.notify_all()

    def wait_distinct(self, count: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(set(self.arrived)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.arrived)


@dataclass
class AgentProcess:
    """``edge-agent run`` as a child process; its log lines are read as they come."""

    config: Path
    connects: list[tuple[float, int]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    proc: subprocess.Popen[str] | None = None

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "run",
                "--config",
                str(self.config),
                "--exit-at-end",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            match = CONNECTED.search(line)
            with self._cond:
                self.lines.append(line)
                if match:
                    self.connects.append((time.monotonic(), int(match[1])))
                self._cond.notify_all()

    def wait_connects(self, count: int, timeout: float) -> list[tuple[float, int]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.connects) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "".join(self.lines)
                    raise AssertionError(f"agent connected {len(self.connects)} times:\n{tail}")
                self._cond.wait(left)
            return list(self.connects)

    def finish(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _write_config(tmp: Path, endpoints: list[str], frames: int, fps: float) -> Path:
    config = camera_config(tmp, 1883, frames=frames).model_dump(mode="json", exclude_none=True)
    config["source"].update(pace="realtime", fps=fps, on_end="close")
    config["api"] = {"enabled": False}
    broker = config["broker"]
    del broker["host"], broker["port"]
    broker.update(endpoints=endpoints, reconnect_max_s=5)
    path = tmp / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _assert_every_seq_once(arrived: list[int], frames: int) -> int:
    """Every prediction arrived (duplicates dropped by seq); returns how many arrived after
    a later one: the outbox sends new predictions at once after a reconnection while it
    replays the unacknowledged ones, so receivers order by seq."""
    first_seen = list(dict.fromkeys(arrived))  # de-duplicated by seq, in arrival order
    assert len(first_seen) == frames, f"{frames - len(first_seen)} predictions lost: {arrived}"
    return sum(seq < max(first_seen[:i], default=0) for i, seq in enumerate(first_seen))


def _outbox_depth(path: Path) -> int:
    return OutboxStore(Path(yaml.safe_load(path.read_text())["limits"]["outbox_path"])).depth


def test_failover_when_the_connected_node_dies(tmp_path: Path, cluster: NatsCluster) -> None:
    ports = [port for _host, port in cluster.mqtt_endpoints]
    frames = 160
    path = _write_config(tmp_path, [f"127.0.0.1:{p}" for p in ports], frames, fps=20)
    with Subscriber(BrokerEndpoint("127.0.0.1", ports[2])) as subscriber:
        agent = AgentProcess(path).start()
        try:
            [(_at, first_port)] = agent.wait_connects(1, timeout=30)
            assert first_port == ports[0]  # the first endpoint first
            before = subscriber.wait_distinct(40, timeout=30)
            assert len(set(before)) >= 40, f"only {len(set(before))} predictions before the kill"
            killed_at = time.monotonic()
            cluster.kill(0)
            try:
                connects = agent.wait_connects(2, timeout=FAILOVER_BOUND_S + 5)
            except AssertionError as e:
                logs = "\n".join(cluster.tail_log(node, lines=8) for node in cluster.nodes[1:])
                raise AssertionError(f"{e}\nlive nodes:\n{logs}") from None
            (reconnected_at, second_port) = connects[1]
            assert second_port in ports[1:]
            # The first attempt after a lost connection waits the base delay (at most 3 s for
            # the agent); a live node accepts the session once JetStream has re-elected the
            # leaders of its MQTT streams (see FAILOVER_BOUND_S).
            failover_s = reconnected_at - killed_at
            assert failover_s < FAILOVER_BOUND_S, f"failover took {failover_s:.1f}s"
            assert agent.finish(timeout=60) == 0, "".join(agent.lines[-30:])
        finally:
            agent.kill()
        arrived = subscriber.wait_distinct(frames, timeout=15)
    late = _assert_every_seq_once(arrived, frames)
    duplicates = len(arrived) - len(set(arrived))
    print(f"failover in {failover_s:.2f}s, {duplicates} duplicates, {late} out of order")
    assert _outbox_depth(path) == 0


def test_failover_at_start_past_a_dead_first_endpoint(tmp_path: Path, cluster: NatsCluster) -> None:
    ports = [port for _host, port in cluster.mqtt_endpoints]
    dead = free_port()
    frames = 40
    endpoints = [f"127.0.0.1:{dead}", *(f"127.0.0.1:{p}" for p in ports)]
    path = _write_config(tmp_path, endpoints, frames, fps=40)
    with Subscriber(BrokerEndpoint("127.0.0.1", ports[2])) as subscriber:
        agent = AgentProcess(path).start()
        try:
            [(_at, port)] = agent.wait_connects(1, timeout=30)
            assert port == ports[0]  # the next endpoint after the dead one
            assert agent.finish(timeout=60) == 0, "".join(agent.lines[-30:])
        finally:
            agent.kill()
        arrived = subscriber.wait_distinct(frames, timeout=15)
    assert _assert_every_seq_once(arrived, frames) == 0  # nothing was replayed
    assert _outbox_depth(path) == 0


def _stored_predictions(fleet: FleetService) -> set[int]:
    r = schema.received.c
    query = select(r.seq).where(r.device_id == "cam-01", r.kind == "prediction")
    return set(fleet.store.read(lambda c: [int(seq) for (seq,) in c.execute(query)]))


def test_stream_leader_killed_the_fleet_asks_and_stores_every_prediction(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    """NATS acknowledges an MQTT PUBLISH before the stream that captures it has stored it:
    while the FLEET stream elects a new leader, what a device on a surviving node sends is
    acknowledged and dropped, and the device cannot tell. The fleet sees the leader move and
    asks the devices to resend what their broker acknowledged meanwhile; every prediction
    ends up stored once."""
    ports = [port for _host, port in cluster.mqtt_endpoints]
    settings = FleetSettings(
        database_url=sqlite_url(tmp_path / "fleet.db"),
        broker_host="127.0.0.1",
        broker_port=ports[0],
        broker_endpoints=[f"127.0.0.1:{p}" for p in ports[1:]],
        source="jetstream",
        nats_urls=cluster.nats_urls,
        jetstream_max_bytes=64 * 1024**2,
        http_port=0,
        samples_dir=tmp_path / "samples",
    )
    # Long enough (30 s) for the fleet's second and third requests to find the agent.
    frames = 600
    with FleetService(settings) as fleet:
        assert fleet.jetstream is not None
        deadline = time.monotonic() + 30
        while (leader := cluster.stream_leader("FLEET")) is None:
            assert time.monotonic() < deadline, "the FLEET stream has no leader"
            time.sleep(0.2)
        old_leader = fleet.jetstream.leader or cluster.nodes[leader].name
        live = [i for i in range(len(ports)) if i != leader]
        # The agent and the check on nodes that stay up: the agent's connection never
        # drops, so only the fleet's request can make it send anything again.
        path = _write_config(tmp_path, [f"127.0.0.1:{ports[i]}" for i in live], frames, fps=20)
        with Subscriber(BrokerEndpoint("127.0.0.1", ports[live[1]])) as subscriber:
            agent = AgentProcess(path).start()
            try:
                subscriber.wait_distinct(40, timeout=30)
                cluster.kill(leader)
                deadline = time.monotonic() + 30
                while fleet.jetstream.leader in (None, old_leader):
                    assert time.monotonic() < deadline, "no new FLEET leader seen in 30 s"
                    time.sleep(0.2)
                cluster.restart(leader)
                assert agent.finish(timeout=90) == 0, "".join(agent.lines[-30:])
            finally:
                agent.kill()
            arrived = set(subscriber.wait_distinct(frames, timeout=15))
        assert len(arrived) == frames
        deadline = time.monotonic() + 30
        while not arrived <= (stored := _stored_predictions(fleet)):
            if time.monotonic() > deadline:
                missing = sorted(arrived - stored)
                raise AssertionError(f"{len(missing)} predictions never stored: {missing[:20]}")
            time.sleep(0.2)
        moves = fleet.metrics.value("fleet_jetstream_leader_moves_total")
    assert moves >= 1
    # The agent may also have lost its connection while its node's MQTT streams moved (it
    # then resends by itself); the fleet's request must have reached it either way.
    asked = [line for line in agent.lines if "command resend done" in line]
    print(f"leader {old_leader} killed; {len(stored)} stored; agent: {asked}")
    assert asked, "the agent was never asked to resend:\n" + "".join(agent.lines[-30:])
