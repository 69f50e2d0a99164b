"""Runs a private NATS cluster (JetStream, an MQTT listener on every node) on loopback ports.

The clustered broker tier: devices reach any node over MQTT 3.1.1, the fleet's consumers read
a replicated JetStream stream that captures the device subjects (``fleet.jetstream``). Used
by the tests and ``benchmarks/bench_fleet_cluster.py``; a production cluster runs the same
per-node configuration (:func:`node_config`) on its own machines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nats

from cloud_trainer.stack import process
from cloud_trainer.stack.mosquitto import MAX_PACKET_BYTES

log = logging.getLogger(__name__)

_SEARCH = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server")
CLUSTER_NAME = "edge-mlops"


class ClusterUnavailable(RuntimeError):
    """nats-server is not installed, or the cluster did not form in time."""


def find_nats_server() -> str:
    """Path of the nats-server binary, or ClusterUnavailable saying how to install it."""
    return process.find_binary(
        "nats-server",
        _SEARCH,
        ClusterUnavailable,
        "apt-get install nats-server; 2.9 or newer, with JetStream and MQTT",
    )


@dataclass
class NatsNode:
    """One node's ports and files."""

    name: str
    client_port: int
    mqtt_port: int
    route_port: int
    monitor_port: int
    store_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def node_config(
    node: NatsNode,
    peers: list[NatsNode],
    host: str = "127.0.0.1",
    *,
    consumer_replicas: int = 3,
    consumer_memory: bool = False,
) -> str:
    """The nats-server configuration of one node (JetStream, cluster routes, MQTT).

    Every QoS 1 MQTT subscription is a JetStream consumer of its own (a device's ``cmd``
    and release topics: two per device); ``consumer_replicas`` and ``consumer_memory``
    size what each costs (see docs/scaling.md).
    """
    routes = ", ".join(f'"nats-route://{host}:{p.route_port}"' for p in peers if p is not node)
    return "\n".join(
        [
            f'server_name: "{node.name}"',
            f'listen: "{host}:{node.client_port}"',
            f'http: "{host}:{node.monitor_port}"',
            f"max_payload: {MAX_PACKET_BYTES}",
            "jetstream {",
            f'  store_dir: "{node.store_dir}"',
            "  max_memory_store: 64MB",
            "  max_file_store: 2GB",
            "}",
            "cluster {",
            f'  name: "{CLUSTER_NAME}"',
            f'  listen: "{host}:{node.route_port}"',
            f"  routes: [{routes}]",
            "}",
            "mqtt {",
            f'  listen: "{host}:{node.mqtt_port}"',
            # QoS 1 messages a subscriber has not acknowledged yet, per session (the default
            # 1024 would hold back a fleet consumer catching up on a backlog).
            "  max_ack_pending: 10000",
            # Sessions and retained messages on three replicas: with the default (2 on a
            # 3-node cluster) a node's death left the others refusing CONNECT for 25-30 s.
            f"  stream_replicas: {min(3, len(peers))}",
            f"  consumer_replicas: {min(consumer_replicas, len(peers))}",
            *(["  consumer_memory_storage: true"] if consumer_memory else []),
            '  ack_wait: "30s"',
            "}",
            "",
        ]
    )


@dataclass
class NatsCluster(process.Service):
    """Three (or ``size``) nats-server processes forming one cluster in a temporary folder."""

    size: int = 3
    # MQTT consumers (one per QoS 1 subscription): replicas and memory storage.
    mqtt_consumer_replicas: int = 3
    mqtt_consumer_memory: bool = False
    host: str = "127.0.0.1"
    workdir: Path | None = None
    nodes: list[NatsNode] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    # -- addresses -------------------------------------------------------------------------

    @property
    def mqtt_endpoints(self) -> list[tuple[str, int]]:
        """(host, port) of every node's MQTT listener, in node order."""
        return [(self.host, n.mqtt_port) for n in self.nodes]

    @property
    def nats_urls(self) -> list[str]:
        """nats:// URLs of every node, for JetStream clients."""
        return [f"nats://{self.host}:{n.client_port}" for n in self.nodes]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> NatsCluster:
        binary = find_nats_server()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nats-cluster-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.nodes:
            used: set[int] = set()
            for i in range(self.size):
                ports: list[int] = []
                while len(ports) < 4:
                    # Nodes are killed and restarted on their ports: keep them out of the
                    # range outgoing connections take theirs from.
                    port = process.restartable_port(self.host, used)
                    used.add(port)
                    ports.append(port)
                name = f"n{i + 1}"
                self.nodes.append(
                    NatsNode(
                        name=name,
                        client_port=ports[0],
                        mqtt_port=ports[1],
                        route_port=ports[2],
                        monitor_port=ports[3],
                        store_dir=self.workdir / name / "jetstream",
                        config_path=self.workdir / name / "nats.conf",
                        log_path=self.workdir / name / "nats.log",
                    )
                )
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(
                node_config(
                    node,
                    self.nodes,
                    self.host,
                    consumer_replicas=self.mqtt_consumer_replicas,
                    consumer_memory=self.mqtt_consumer_memory,
                )
            )
        for node in self.nodes:
            self._spawn(binary, node)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, binary: str, node: NatsNode) -> None:
        node.proc = process.spawn([binary, "-c", str(node.config_path)], node.log_path)

    def _monitor(self, node: NatsNode, path: str) -> dict[str, object] | None:
        url = f"http://{self.host}:{node.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                body = json.loads(resp.read())
                return body if isinstance(body, dict) else None
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def stream_leader(self, stream: str) -> int | None:
        """Index of the node that leads ``stream`` (the one whose loss forces an election)."""
        for node in self.nodes:
            found = self._monitor(node, "/jsz?streams=true")
            accounts = found.get("account_details") if found else None
            for account in accounts if isinstance(accounts, list) else []:
                for detail in account.get("stream_detail") or []:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        names = [n.name for n in self.nodes]
                        return names.index(leader) if leader in names else None
        return None

    def durable_state(self, stream: str, durable: str) -> tuple[int, int]:
        """(messages not yet delivered, delivered but not acknowledged) of a durable
        consumer, asked of the cluster; raises what the client raises when it cannot say."""

        async def state() -> tuple[int, int]:
            nc = await nats.connect(servers=self.nats_urls, connect_timeout=5)
            try:
                info = await nc.jetstream(timeout=5).consumer_info(stream, durable)
                return int(info.num_pending or 0), int(info.num_ack_pending or 0)
            finally:
                await nc.close()

        return asyncio.run(state())

    def node_ready(self, node: NatsNode, strict: bool = True) -> bool:
        """Routes to every other running node, JetStream healthy, MQTT port accepting.

        ``strict=False`` (a node coming back) asks only that JetStream is enabled: its
        replicas catch up in the background, and the full health check fails until every
        stream and consumer on it is current again, which takes a while under load.
        """
        if not node.running:
            return False
        health = self._monitor(node, "/healthz" if strict else "/healthz?js-enabled-only=true")
        if health is None or health.get("status") != "ok":
            return False
        routez = self._monitor(node, "/routez")
        others = sum(1 for n in self.nodes if n is not node and n.running)
        if routez is None or int(str(routez.get("num_routes", 0))) < others:
            return False
        return process.port_open(self.host, node.mqtt_port)

    def wait_ready(
        self, timeout: float = 30.0, nodes: list[NatsNode] | None = None, strict: bool = True
    ) -> None:
        """Wait until every running node (or ``nodes``) is ready; ClusterUnavailable if not."""
        wanted = nodes if nodes is not None else [n for n in self.nodes if n.running]

        def exited() -> None:
            for node in wanted:
                if node.proc is not None and node.proc.poll() is not None:
                    raise ClusterUnavailable(
                        f"nats-server {node.name} exited with code {node.proc.returncode}: "
                        f"{self.tail_log(node)}"
                    )

        if process.wait_until(
            lambda: all(self.node_ready(n, strict) for n in wanted), timeout, check=exited
        ):
            log.info("NATS cluster ready: %s", ", ".join(self.nats_urls))
            return
        raise ClusterUnavailable(
            f"the NATS cluster did not become ready in {timeout:.0f} s: "
            + "; ".join(f"{n.name}: {self.tail_log(n)}" for n in wanted)
        )

    def kill(self, index: int) -> None:
        """SIGKILL one node (a power cut for that machine); its store stays on disk."""
        process.kill_process(self.nodes[index].proc, 10, group=True)

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start a killed or stopped node again with its store; waits until it is ready."""
        node = self.nodes[index]
        if node.running:
            return
        self._spawn(find_nats_server(), node)
        self.wait_ready(timeout, nodes=[node], strict=False)

    def stop_node(self, index: int, timeout: float = 10.0) -> None:
        process.stop_process(self.nodes[index].proc, timeout, group=True)

    def stop(self) -> None:
        for i in range(len(self.nodes)):
            self.stop_node(i)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        """The same as :meth:`stop` (the end of a ``with`` block)."""
        self.stop()

    def tail_log(self, node: NatsNode, lines: int = 5) -> str:
        return process.tail_log(node.log_path, lines, " | ")
