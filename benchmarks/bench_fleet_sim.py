"""Fleet scale on one box: N simulated devices at 1 msg/s against 1..K fleet consumers.

    .venv/bin/python -m benchmarks.bench_fleet_sim [--devices 1000] [--procs 4]
        [--instances 1 2] [--seconds 60] [--json OUT]

Each simulated device is its own MQTT session (MQTT 3.1.1, QoS 1, clean session) on one
private Mosquitto; ``--procs`` processes hold them, each driving its sessions from one
selector loop (no thread per device), and every device sends one message a second at its
own phase (nine predictions, then a telemetry). Fleet instances are separate processes,
members of one shared subscription group, writing to one SQLite fleet store.

For each configuration it prints offered and ingested msg/s, end-to-end lag (device
timestamp to the batch committed in the store) p50/p99/max, and loss (sent and
acknowledged by the broker, never stored). The baseline, measured in the same run, is a
raw subscriber on the same shared subscription that only parses the timestamp: the
broker's own lag and rate on this machine.
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing as mp
import selectors
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.fleet.consumer import ConsumerSettings, FleetConsumer
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.sim import SimulatedDevice
from cloud_trainer.fleet.store import Envelope, FleetStore, sqlite_url
from cloud_trainer.fleet.store.ingest import IngestResult
from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink, shared_filter
from edge_agent.protocol import Channel, DeviceKind, TopicTree, encode

GROUP = "sim"


# -- simulated devices (one process per slice) --------------------------------------------


def device_worker(
    port: int, root: str, first: int, count: int, start_at: float, seconds: float, out: Connection
) -> None:
    """``count`` devices, one MQTT session each, one message per second each."""
    tree = TopicTree(root)
    acked = [0]

    def on_publish(*_args: object) -> None:
        acked[0] += 1

    devices, clients, topics = [], [], []
    for i in range(first, first + count):
        device = SimulatedDevice(f"sim-{i:05d}", f"site-{i % 10}", DeviceKind.CAMERA, seed=i)
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{root}-dev-{i}",
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        client.on_publish = on_publish
        client.connect("127.0.0.1", port, keepalive=60)
        devices.append(device)
        clients.append(client)
        topics.append(
            (
                tree.device(device.site, device.device_id, Channel.PREDICTIONS),
                tree.device(device.site, device.device_id, Channel.TELEMETRY),
            )
        )
    selector = selectors.DefaultSelector()
    for client in clients:
        sock = client.socket()
        assert sock is not None, "connect() opened the socket"
        selector.register(sock.fileno(), selectors.EVENT_READ, client)
    due = [(start_at + k / count, k) for k in range(count)]  # a heap: phases spread evenly
    sent = 0
    end = start_at + seconds
    misc_at = time.monotonic()
    while True:
        now = time.time()
        if now >= end and acked[0] >= sent and not any(c.want_write() for c in clients):
            break
        if now >= end + 15:
            break  # acknowledgements that never came count as loss below
        while due[0][0] <= now and now < end:
            at, k = heapq.heappop(due)
            device = devices[k]
            telemetry = device.seq % 10 == 9
            message = device.telemetry() if telemetry else device.prediction()
            # publish() writes to the socket at once when no network thread runs
            clients[k].publish(topics[k][1 if telemetry else 0], encode(message), qos=1)
            sent += 1
            heapq.heappush(due, (at + 1.0, k))
        wait = min(0.05, max(0.0, due[0][0] - time.time())) if now < end else 0.05
        for key, _mask in selector.select(timeout=wait):
            key.data.loop_read()
        if time.monotonic() - misc_at > 0.5:
            misc_at = time.monotonic()
            for client in clients:
                if client.want_write():
                    client.loop_write()  # what a full socket buffer held back
                client.loop_misc()
    for client in clients:
        client.disconnect()
    out.send({"sent": sent, "acked": acked[0]})


# -- consumers ----------------------------------------------------------------------------


class TimedFleetStore(FleetStore):
    """The real store; notes how long each message took from its device to a commit."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.lags: list[float] = []
        self.stored = 0
        self.duplicates = 0

    def ingest(self, batch: list[Envelope]) -> IngestResult:
        result = super().ingest(batch)
        now = time.time()
        self.lags.extend(now - e.message.ts.timestamp() for e in batch)
        self.stored += sum(result.stored.values())
        self.duplicates += result.duplicates
        return result


def fleet_worker(
    port: int, url: str, root: str, index: int, ready: EventType, stop: EventType, out: Connection
) -> None:
    store = TimedFleetStore(url)
    consumer = FleetConsumer(
        BrokerEndpoint("127.0.0.1", port),
        store,
        FleetMetrics(),
        ConsumerSettings(root=root, group=GROUP, client_id=f"{root}-fleet-{index}"),
    )
    consumer.start(timeout=10)
    ready.set()
    stop.wait()
    consumer.stop(drain_timeout=30)
    store.close()
    out.send({"stored": store.stored, "duplicates": store.duplicates, "lags": store.lags})


def raw_worker(
    port: int, url: str, root: str, index: int, ready: EventType, stop: EventType, out: Connection
) -> None:
    """The baseline: a shared-subscription member that only reads each message's time."""
    lags: list[float] = []
    link = MqttLink(BrokerEndpoint("127.0.0.1", port), client_id=f"{root}-raw-{index}")

    def on_message(_topic: str, payload: bytes) -> None:
        ts = json.loads(payload)["ts"]
        lags.append(time.time() - _parse_ts(ts))

    link.subscribe(shared_filter(GROUP, f"{root}/+/+/+"), on_message)
    link.start(timeout=10)
    time.sleep(0.5)
    ready.set()
    stop.wait()
    time.sleep(1.0)
    link.stop()
    out.send({"stored": len(lags), "duplicates": 0, "lags": lags})


def _parse_ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- one configuration --------------------------------------------------------------------


def run_config(
    broker: MosquittoBroker, tmp: Path, devices: int, procs: int, kind: str, k: int, seconds: float
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    root = f"sim{uuid.uuid4().hex[:6]}"
    url = sqlite_url(tmp / f"{root}.db")
    FleetStore(url).close()  # schema once, before the instances race to create it
    stop = ctx.Event()
    consumers = []
    for i in range(k):
        ready = ctx.Event()
        mine, theirs = ctx.Pipe(duplex=False)
        target = fleet_worker if kind == "fleet" else raw_worker
        proc = ctx.Process(target=target, args=(broker.port, url, root, i, ready, stop, theirs))
        proc.start()
        if not ready.wait(60):
            raise SystemExit(f"{kind} instance {i} did not start")
        consumers.append((proc, mine))
    start_at = time.time() + 3.0 + devices / 500  # time for every session to connect
    per = -(-devices // procs)
    senders = []
    for p in range(procs):
        count = min(per, devices - p * per)
        mine, theirs = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=device_worker,
            args=(broker.port, root, p * per, count, start_at, seconds, theirs),
        )
        proc.start()
        senders.append((proc, mine))
    sent = acked = 0
    for proc, pipe in senders:
        got = pipe.recv()
        sent += got["sent"]
        acked += got["acked"]
        proc.join(30)
    sending_s = time.time() - start_at
    time.sleep(2.0)
    stop.set()
    stored = duplicates = 0
    lags: list[float] = []
    for proc, pipe in consumers:
        got = pipe.recv()
        stored += got["stored"]
        duplicates += got["duplicates"]
        lags += got["lags"]
        proc.join(30)
    lags.sort()
    pct = (lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000) if lags else None
    return {
        "kind": kind,
        "instances": k,
        "devices": devices,
        "seconds": seconds,
        "sent": sent,
        "acked": acked,
        "stored": stored,
        "duplicates": duplicates,
        "lost": max(0, acked - stored),
        "offered_msg_s": sent / seconds,
        "ingested_msg_s": stored / max(sending_s, seconds),
        "lag_p50_ms": pct(0.5) if pct else None,
        "lag_p99_ms": pct(0.99) if pct else None,
        "lag_max_ms": lags[-1] * 1000 if lags else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-sim-") as folder:
        tmp = Path(folder)
        with MosquittoBroker(workdir=tmp / "mq") as broker:
            for devices in args.devices:
                rows.append(run_config(broker, tmp, devices, args.procs, "raw", 1, args.seconds))
                for k in args.instances:
                    rows.append(
                        run_config(broker, tmp, devices, args.procs, "fleet", k, args.seconds)
                    )
    for row in rows:
        raw = next(r for r in rows if r["kind"] == "raw" and r["devices"] == row["devices"])
        row["lag_p99_vs_raw"] = (
            row["lag_p99_ms"] / raw["lag_p99_ms"]
            if row["lag_p99_ms"] and raw["lag_p99_ms"]
            else None
        )
        row["rate_vs_raw"] = row["ingested_msg_s"] / raw["ingested_msg_s"]
    return {"configs": rows}


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'consumer':<10} {'K':>2} {'devices':>7} {'sent':>7} {'stored':>7} {'lost':>5} "
        f"{'offered/s':>9} {'ingest/s':>9} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} "
        f"{'p99/raw':>7}"
    )
    for r in result["configs"]:
        ratio = r["lag_p99_vs_raw"]
        print(
            f"{r['kind']:<10} {r['instances']:>2} {r['devices']:>7} {r['sent']:>7} "
            f"{r['stored']:>7} {r['lost']:>5} {r['offered_msg_s']:>9.0f} "
            f"{r['ingested_msg_s']:>9.0f} {r['lag_p50_ms'] or 0:>7.1f} "
            f"{r['lag_p99_ms'] or 0:>8.1f} {r['lag_max_ms'] or 0:>8.1f} "
            f"{'-' if ratio is None else f'{ratio:.1f}':>7}"
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1000])
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--json", type=Path)
    return p


def main() -> None:
    args = parser().parse_args()
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
