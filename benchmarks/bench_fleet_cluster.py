"""The fleet past one box: a 3-node NATS cluster, JetStream consumers, PostgreSQL, node loss.

    .venv/bin/python -m benchmarks.bench_fleet_cluster [--devices 1000] [--seconds 90]
        [--kill-at 20] [--down-s 20] [--backlog 30000] [--users 8] [--json OUT] [--quick]

Everything runs here on loopback, each part as it would in production: three ``nats-server``
nodes (JetStream, an MQTT listener on each), a private PostgreSQL, the fleet service as
``cloud-trainer fleet serve --source jetstream`` processes, simulated devices in processes
of their own (one MQTT session each, failing over between the nodes the way the agent
does). Phases:

1. **Node loss.** ``--devices`` devices send one QoS 1 message a second each for
   ``--seconds``; node 2 is killed (SIGKILL) at ``--kill-at`` and restarted ``--down-s``
   later. Counted from the store: ``lost`` (acknowledged by the broker, never stored),
   ``duplicates_stored`` (stored rows beyond one per device and seq), reconnect times, and
   the fleet's lag (stored minus sent) around the outage: ``lag_after_return_s`` is how long
   after the node's return the last message took 1 s or more.
2. **Reads.** ``--users`` viewers ask back to back for ``/api/devices`` (the whole list, and
   a page of 100) over the devices of phase 1; ``/healthz`` is the same service's floor.
3. **Ingestion.** A backlog of ``--backlog`` device messages in the stream is drained by a
   raw JetStream subscriber (pull, acknowledge, nothing else: the baseline), by one fleet
   instance into PostgreSQL, and by two sharing one durable consumer.
4. **A consumer killed.** One instance drains the backlog again and is killed with SIGKILL
   part-way; a second takes over (after the stream's ack wait): nothing lost, nothing twice.

The last line printed is the JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nats
import psycopg

from benchmarks.bench_device_list import load
from benchmarks.cluster_devices import device_worker
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.stack.nats_cluster import NatsCluster
from cloud_trainer.stack.postgres import PostgresServer
from edge_agent.protocol import Channel, DeviceKind, TopicTree, encode

OPERATOR = "bench-operator-token-0123456789"
VIEWER = "bench-viewer-token-0123456789ab"
ACK_WAIT_S = 5.0


# -- the fleet service as a process ----------------------------------------------------------


class FleetProcess:
    """``cloud-trainer fleet serve --source jetstream`` in a process of its own."""

    def __init__(
        self,
        name: str,
        cluster: NatsCluster,
        db_url: str,
        root: str,
        group: str,
        stream: str,
        workdir: Path,
        resend: bool = True,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / f"{name}.yaml"
        config.write_text(
            json.dumps(
                {
                    "jetstream_stream": stream,
                    "jetstream_ack_wait_s": ACK_WAIT_S,
                    "jetstream_max_bytes": 256 * 1024**2,
                    "jetstream_resend_on_leader_move": resend,
                    "samples_dir": str(workdir / f"samples-{name}"),
                }
            )
        )
        tokens = workdir / "tokens"
        tokens.write_text(f"bench={OPERATOR}\n")
        viewers = workdir / "viewers"
        viewers.write_text(f"viewer={VIEWER}\n")
        cli = str(Path(sys.executable).with_name("cloud-trainer"))
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *([cli] if os.path.exists(cli) else [sys.executable, "-m", "cloud_trainer.cli"]),
                "fleet",
                "serve",
                "--config",
                str(config),
                "--source",
                "jetstream",
                "--nats",
                ",".join(cluster.nats_urls),
                "--broker",
                ",".join(f"{host}:{port}" for host, port in cluster.mqtt_endpoints),
                "--db",
                db_url,
                "--root",
                root,
                "--instances-group",
                group,
                "--instance",
                name,
                "--port",
                "0",
                "--tokens-file",
                str(tokens),
                "--viewer-tokens-file",
                str(viewers),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.base_url = ""

    def wait_ready(self, timeout: float = 90.0) -> FleetProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"fleet service at (http://\S+)", self.log_path.read_text())
            if found:
                self.base_url = found.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"fleet instance did not start:\n{self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextlib.contextmanager
def fleet(*processes: FleetProcess) -> Iterator[list[FleetProcess]]:
    try:
        yield [p.wait_ready() for p in processes]
    finally:
        for p in processes:
            p.stop()


# -- the store, read back ------------------------------------------------------------------


class Store:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            try:
                return list(conn.execute(sql).fetchall())
            except psycopg.errors.UndefinedTable:
                return []

    def received(self) -> int:
        rows = self.query("SELECT count(*) FROM received")
        return int(rows[0][0]) if rows else 0

    def duplicates(self) -> int:
        """Rows stored beyond one per (device, seq): telemetry rows and prediction counts
        against the keys the store claimed for them."""
        claimed = dict(self.query("SELECT kind, count(*) FROM received GROUP BY kind"))
        telemetry = self.query("SELECT count(*) FROM telemetry")
        predictions = self.query("SELECT coalesce(sum(count), 0) FROM prediction_buckets")
        rows = int(telemetry[0][0]) + int(predictions[0][0])
        keys = int(claimed.get("telemetry", 0)) + int(claimed.get("prediction", 0))
        return rows - keys

    def clear(self) -> None:
        tables = [
            r[0] for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        ]
        if tables:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {', '.join(tables)}")  # names from pg_tables


def wait_until(what: str, check: Any, timeout: float, every: float = 0.2) -> float:
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - began


# -- phase 1: devices through a node loss -----------------------------------------------------


def node_loss(
    cluster: NatsCluster, store: Store, workdir: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], FleetProcess]:
    root = "park"
    instance = FleetProcess(
        "a", cluster, store.url, root, "fleet", "FLEET", workdir, resend=not args.no_resend
    )
    instance.wait_ready()
    ctx = mp.get_context("spawn")
    per = -(-args.devices // args.processes)
    start_at = time.time() + 5.0 + args.devices / 200  # every device connected first
    pipes, procs = [], []
    for p in range(args.processes):
        first = p * per
        count = min(per, args.devices - first)
        if count <= 0:
            break
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=device_worker,
            args=(
                cluster.mqtt_endpoints,
                root,
                first,
                count,
                start_at,
                args.seconds,
                child,
                args.cmd_qos,
            ),
        )
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    killed_at = start_at + args.kill_at
    while time.time() < killed_at:
        time.sleep(0.05)
    leader = cluster.stream_leader("FLEET")
    victim = leader if args.kill == "leader" and leader is not None else 1
    if args.kill == "follower":
        victim = next(i for i in range(len(cluster.nodes)) if i != leader)
    cluster.kill(victim)
    print(
        f"node {victim + 1} killed at t={args.kill_at:.0f} s "
        f"(the FLEET stream's leader: node {leader + 1 if leader is not None else '?'})"
    )
    while time.time() < killed_at + args.down_s:
        time.sleep(0.05)
    returned_at = time.time()
    cluster.restart(victim)
    print(f"node {victim + 1} back after {returned_at - killed_at:.1f} s")
    reports = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join(30)
    acked = {(d, s) for r in reports for d, seqs in r["acked"].items() for s in seqs}
    sent_at = {(d, s): t for r in reports for d, m in r["sent_at"].items() for s, t in m.items()}
    sent = sum(r["sent"] for r in reports)
    # The stream keeps what the consumer has not taken yet: wait until the durable has
    # nothing left to deliver or to see acknowledged (however far behind the fleet is), then
    # count. A message acknowledged to a device and absent from the stream is lost.
    drained_at = time.time()
    with contextlib.suppress(TimeoutError):  # what never comes is counted below as lost
        wait_until(
            "the durable drained",
            lambda: store.received() >= len(acked) or durable_state(cluster) == (0, 0),
            args.drain_timeout,
            every=1.0,
        )
    drained_s = time.time() - drained_at
    time.sleep(2 * ACK_WAIT_S)  # any redelivery still due has happened by now
    rows = store.query("SELECT device_id, seq, received_at FROM received")
    stored = {(d, int(s)): float(at) for d, s, at in rows}
    lost = acked - stored.keys()
    # Where the lost ones were sent: before the kill, while the node was down, after.
    when = [sent_at.get(k, 0.0) for k in lost]
    lost_when = {
        "before_kill": sum(t < killed_at for t in when),
        "node_down": sum(killed_at <= t < returned_at for t in when),
        "after_return": sum(t >= returned_at for t in when),
    }
    # When the lost ones were sent, in seconds from the kill, and what the fleet did then.
    offsets = sorted(t - killed_at for t in when)
    remedy = [
        f"{_log_time(line) - killed_at:+.1f}s {line.split(': ', 1)[-1]}"
        for line in instance.log_path.read_text(errors="replace").splitlines()
        if "leader moved" in line or "resend to" in line or "resend not sent" in line
    ]
    lags = sorted((stored[k] - sent_at[k], stored[k]) for k in stored.keys() & sent_at.keys())
    late_after = [at for lag, at in lags if lag >= 1.0 and at >= returned_at]
    before = [lag for lag, at in lags if at < killed_at]
    reconnects = sorted(t for r in reports for t in r["reconnect_s"])
    figures = {
        "devices": args.devices,
        "seconds": args.seconds,
        "sent": sent,
        "acked": len(acked),
        "unacked_at_end": sum(r["unacked"] for r in reports),
        "stored": len(stored),
        "lost": len(lost),
        "lost_when": lost_when,
        "lost_devices_first_node": _first_nodes(lost, len(cluster.nodes)),
        "lost_sent_after_kill_s": [offsets[0], _pct(offsets, 0.5), offsets[-1]] if offsets else [],
        "fleet_remedy": remedy,
        "duplicates_stored": store.duplicates(),
        "failovers": sum(r["failovers"] for r in reports),
        "resent": sum(r["resent"] for r in reports),
        "resend_commands": sum(r["resend_commands"] for r in reports),
        "reconnect_median_s": statistics.median(reconnects) if reconnects else None,
        "reconnect_max_s": reconnects[-1] if reconnects else None,
        "node_down_s": returned_at - killed_at,
        "killed": "stream leader" if victim == leader else "not the stream leader",
        "resend_on_leader_move": not args.no_resend,
        "lag_before_kill_p99_s": _pct(before, 0.99),
        "lag_max_s": max(lag for lag, _ in lags) if lags else None,
        "lag_after_return_s": (max(late_after) - returned_at) if late_after else 0.0,
        "drained_after_end_s": drained_s,
    }
    return figures, instance


def durable_state(cluster: NatsCluster) -> tuple[int, int]:
    """The fleet's durable as ``NatsCluster.durable_state`` says; (-1, -1) while the cluster
    does not answer."""
    try:
        return cluster.durable_state("FLEET", "fleet")
    except Exception:  # noqa: BLE001 - no answer now: ask again
        return (-1, -1)


def _log_time(line: str) -> float:
    """The epoch time of a fleet log line (``2026-12-06 02:25:34,031 ...``, local time)."""
    try:
        stamp = time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
        return time.mktime(stamp) + int(line[20:23]) / 1000
    except ValueError:
        return float("nan")


def _first_nodes(lost: set[tuple[str, int]], nodes: int) -> dict[str, int]:
    """Lost messages by the node their device started on (device ``i`` on node ``i mod n``)."""
    counts = {f"n{i + 1}": 0 for i in range(nodes)}
    for device_id, _seq in lost:
        counts[f"n{int(device_id.split('-')[1]) % nodes + 1}"] += 1
    return counts


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# -- phase 2: reads ----------------------------------------------------------------------------


def reads(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    targets: list[tuple[str, str, dict[str, Any]]] = [
        ("healthz", "/healthz", {}),
        ("all", "/api/devices", {}),
        ("page100", "/api/devices", {"limit": 100}),
    ]
    for label, path, params in targets:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            job = pool.submit(load, base_url, path, params, args.users, args.read_s, VIEWER)
            figures[label] = job.result()
        r = figures[label]
        print(
            f"reads {label:8s} {args.users} users: {r['rps']:6.0f} req/s  p50 "
            f"{r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}"
        )
    return figures


# -- phase 3 and 4: a backlog, drained ----------------------------------------------------------


def backlog_messages(root: str, count: int, devices: int = 200) -> list[tuple[str, bytes]]:
    """The device mix (nine predictions, one telemetry) as subjects and payloads."""
    tree = TopicTree(root)
    sims = [
        SimulatedDevice(f"bk-{i:04d}", f"site-{i % 10}", DeviceKind.CAMERA, seed=i)
        for i in range(devices)
    ]
    out: list[tuple[str, bytes]] = []
    for n in range(count):
        sim = sims[n % devices]
        telemetry = sim.seq % 10 == 9
        message = sim.telemetry() if telemetry else sim.prediction()
        channel = Channel.TELEMETRY if telemetry else Channel.PREDICTIONS
        out.append(
            (tree.device(sim.site, sim.device_id, channel).replace("/", "."), encode(message))
        )
    return out


async def _fill(urls: list[str], stream: str, root: str, messages: list[tuple[str, bytes]]) -> None:
    from nats.js.api import StreamConfig

    from cloud_trainer.fleet.consumer.jetstream import device_subjects

    nc = await nats.connect(servers=urls, connect_timeout=5)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=stream,
                subjects=device_subjects(root),
                num_replicas=3,
                max_bytes=256 * 1024**2,
            )
        )
        for start in range(0, len(messages), 500):
            acks = [js.publish(s, p, stream=stream) for s, p in messages[start : start + 500]]
            await asyncio.gather(*acks)
    finally:
        await nc.close()


def raw_drain(urls: list[str], stream: str, count: int, out: Any) -> None:
    """The baseline, in a process of its own: pull, acknowledge, nothing else."""

    async def run() -> float:
        from nats.js.api import AckPolicy, ConsumerConfig

        nc = await nats.connect(servers=urls, connect_timeout=5)
        js = nc.jetstream()
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT)
        )
        sub = await js.pull_subscribe_bind(durable="raw", stream=stream)
        got = 0
        began = 0.0
        while got < count:
            try:
                msgs = await sub.fetch(500, timeout=2.0)
            except nats.errors.TimeoutError:
                continue
            if not began:
                began = time.perf_counter()
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        elapsed = time.perf_counter() - began
        await nc.close()
        return (count - 500) / elapsed  # the first batch started the clock

    out.send(asyncio.run(run()))


def drain_rate(store: Store, count: int, timeout: float) -> tuple[float, float]:
    """(messages/s from the first row stored to the last, seconds in all)."""
    began = time.monotonic()
    first_at = first_n = 0.0
    while True:
        n = store.received()
        now = time.monotonic()
        if n and not first_at:
            first_at, first_n = now, n
        if n >= count:
            return (n - first_n) / max(now - first_at, 1e-6), now - began
        if now - began > timeout:
            raise TimeoutError(f"drain: {n} of {count} stored after {timeout:.0f} s")
        time.sleep(0.05)


def ingestion(
    cluster: NatsCluster, store: Store, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    root, stream = "backlog", "BACKLOG"
    messages = backlog_messages(root, args.backlog)
    began = time.perf_counter()
    asyncio.run(_fill(cluster.nats_urls, stream, root, messages))
    print(f"backlog: {len(messages)} messages in the stream in {time.perf_counter() - began:.1f} s")
    figures: dict[str, Any] = {"backlog": len(messages)}

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=raw_drain, args=(cluster.nats_urls, stream, len(messages), child))
    proc.start()
    raw = float(parent.recv())
    proc.join(30)
    figures["raw_msg_s"] = raw
    print(f"raw JetStream subscriber: {raw:7.0f} msg/s")

    for k in (1, 2):
        store.clear()
        instances = [
            FleetProcess(f"k{k}-{i}", cluster, store.url, root, f"k{k}", stream, workdir)
            for i in range(k)
        ]
        with fleet(*instances):
            rate, _ = drain_rate(store, len(messages), 600)
        figures[f"k{k}_msg_s"] = rate
        figures[f"k{k}_vs_raw"] = rate / raw
        figures[f"k{k}_duplicates_stored"] = store.duplicates()
        print(f"fleet K={k} into PostgreSQL: {rate:7.0f} msg/s ({rate / raw:4.2f} x raw)")
    figures["ingest_vs_raw"] = figures["k1_vs_raw"]
    figures["k2_vs_k1"] = figures["k2_msg_s"] / figures["k1_msg_s"]

    # Phase 4: an instance killed with SIGKILL part-way; a second one takes over.
    store.clear()
    first = FleetProcess("k9-a", cluster, store.url, root, "k9", stream, workdir).wait_ready()
    try:
        wait_until("a third stored", lambda: store.received() >= len(messages) // 3, 600, 0.02)
        first.kill()
    finally:
        first.stop()
    at_kill = store.received()
    second = FleetProcess("k9-b", cluster, store.url, root, "k9", stream, workdir)
    with fleet(second):
        took = wait_until("the rest stored", lambda: store.received() >= len(messages), 600)
        time.sleep(2 * ACK_WAIT_S)
    final = store.received()
    figures["kill9"] = {
        "stored_before_kill": at_kill,
        "stored": final,
        "lost": len(messages) - final,
        "duplicates_stored": store.duplicates(),
        "rest_stored_in_s": took,
    }
    print(
        f"consumer kill -9 at {at_kill} stored: {final} of {len(messages)} in the end, "
        f"{figures['kill9']['duplicates_stored']} duplicates"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2, help="device processes")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--kill-at", type=float, default=20.0)
    parser.add_argument("--down-s", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=30000)
    parser.add_argument(
        "--kill",
        choices=("leader", "follower"),
        default="leader",
        help="which node dies: the FLEET stream's leader (default, the worst case) or not",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=600.0,
        help="longest wait for the fleet to take what the stream holds after the devices stop",
    )
    parser.add_argument(
        "--mqtt-consumer-replicas",
        type=int,
        default=3,
        help="replicas of the JetStream consumer behind each QoS 1 MQTT subscription",
    )
    parser.add_argument(
        "--mqtt-consumer-memory",
        action="store_true",
        help="keep those consumers in memory (NATS mqtt.consumer_memory_storage)",
    )
    parser.add_argument(
        "--cmd-qos",
        type=int,
        choices=(0, 1),
        default=1,
        help="QoS of each device's cmd subscription (the agent's is 1)",
    )
    parser.add_argument(
        "--no-resend",
        action="store_true",
        help="the fleet does not ask for a resend when the stream's leader moves (to compare)",
    )
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--read-s", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="200 devices, 45 s, 10,000 backlog")
    parser.add_argument(
        "--skip",
        action="append",
        choices=("reads", "ingestion"),
        default=[],
        help="leave a phase out (node loss always runs)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # Stopped with SIGTERM (timeout, CI): leave through the ExitStack, so no server is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.devices, args.seconds, args.kill_at, args.down_s = 200, 45.0, 10.0, 10.0
        args.backlog, args.read_s = 10000, 5.0
    if args.kill_at + args.down_s >= args.seconds:
        parser.error("--kill-at plus --down-s must end before --seconds")
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster-")))
        cluster = stack.enter_context(
            NatsCluster(
                workdir=workdir / "nats",
                mqtt_consumer_replicas=args.mqtt_consumer_replicas,
                mqtt_consumer_memory=args.mqtt_consumer_memory,
            )
        )
        store = Store(stack.enter_context(PostgresServer()).url)
        print(f"3-node NATS cluster and PostgreSQL up; {args.devices} devices, {args.seconds:g} s")
        loss, instance = node_loss(cluster, store, workdir / "fleet", args)
        try:
            results.update(loss)
            print(
                f"sent {loss['sent']}, acknowledged {loss['acked']}, lost {loss['lost']}, "
                f"duplicates stored {loss['duplicates_stored']}, reconnect median "
                f"{loss['reconnect_median_s']} s, "
                f"lag after return {loss['lag_after_return_s']:.1f} s"
            )
            if "reads" not in args.skip:
                results["reads"] = reads(instance.base_url, args)
        finally:
            instance.stop()
        if "reads" not in args.skip:
            results["api_devices_p99_ms"] = results["reads"]["all"]["p99_ms"]
            results["api_devices_page100_p99_ms"] = results["reads"]["page100"]["p99_ms"]
        if "ingestion" not in args.skip:
            results["ingestion"] = ingestion(cluster, store, workdir / "fleet", args)
            results["ingest_vs_raw"] = results["ingestion"]["ingest_vs_raw"]
    line = json.dumps(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(line)


if __name__ == "__main__":
    main()
