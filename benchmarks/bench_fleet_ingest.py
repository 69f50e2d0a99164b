"""Fleet ingestion throughput: messages/s from a real Mosquitto into the store, against a raw
subscriber that only counts what arrives, measured in the same run on the same broker.

    .venv/bin/python -m benchmarks.bench_fleet_ingest [--messages 20000] [--postgres URL|private]

``--postgres private`` starts a throwaway PostgreSQL (cloud_trainer.stack.postgres) with its
default, durable settings (fsync and synchronous_commit on).

The raw baseline is the ceiling the broker and paho allow on this machine; the ratio says
what decoding, validation, de-duplication and batched SQL writes cost on top. One and two
service instances (one shared subscription group) are measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

from cloud_trainer.fleet.consumer import ConsumerSettings, FleetConsumer
from cloud_trainer.fleet.metrics import FleetMetrics
from cloud_trainer.fleet.sim import CHANNEL_OF, SimulatedDevice
from cloud_trainer.fleet.store import FleetStore, StoreError, sqlite_url
from cloud_trainer.stack.mosquitto import MosquittoBroker
from cloud_trainer.stack.postgres import PostgresServer
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import DeviceKind, TopicTree, encode


def _payloads(root: str, count: int, devices: int = 20) -> list[tuple[str, bytes]]:
    tree = TopicTree(root)
    sims = [SimulatedDevice(f"cam-{i:02d}", "bench", DeviceKind.CAMERA) for i in range(devices)]
    out = []
    for n in range(count):
        device = sims[n % devices]
        message = device.telemetry() if n % 5 == 0 else device.prediction()
        topic = tree.device("bench", device.device_id, CHANNEL_OF[message.type])
        out.append((topic, encode(message)))
    return out


def _publish(endpoint: BrokerEndpoint, payloads: list[tuple[str, bytes]]) -> None:
    link = MqttLink(endpoint, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}", max_inflight=1000)
    link.start()
    results = [link.publish(topic, payload, qos=1) for topic, payload in payloads]
    for result in results:
        result.wait(60)
    link.stop()


def raw_baseline(endpoint: BrokerEndpoint, count: int) -> float:
    root = f"raw{uuid.uuid4().hex[:6]}"
    payloads = _payloads(root, count)
    done = threading.Event()
    seen = 0

    def on_message(_topic: str, _payload: bytes) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    link = MqttLink(endpoint, client_id=f"bench-raw-{root}", max_inflight=1000)
    link.subscribe(f"{root}/#", on_message)
    link.start()
    time.sleep(0.3)
    started = time.perf_counter()
    _publish(endpoint, payloads)
    if not done.wait(120):
        raise SystemExit(f"raw subscriber got {seen} of {count}")
    elapsed = time.perf_counter() - started
    link.stop()
    return count / elapsed


def fleet_rate(endpoint: BrokerEndpoint, url: str, count: int, instances: int) -> float:
    root = f"fl{uuid.uuid4().hex[:6]}"
    payloads = _payloads(root, count)
    stores = [FleetStore(url) for _ in range(instances)]
    consumers = [
        FleetConsumer(
            endpoint,
            store,
            FleetMetrics(),
            ConsumerSettings(
                root=root,
                group="bench",
                client_id=f"{root}-{i}",
                subscription="shared" if instances > 1 else "plain",
            ),
        )
        for i, store in enumerate(stores)
    ]
    for consumer in consumers:
        consumer.start()
    started = time.perf_counter()
    _publish(endpoint, payloads)
    deadline = time.monotonic() + 300
    while stores[0].counts()["received"] < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"fleet stored {stores[0].counts()['received']} of {count}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    for consumer in consumers:
        consumer.stop()
    for store in stores:
        store.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--postgres",
        help="postgresql://… of an empty database to also measure, or 'private' for a "
        "throwaway local server",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        mq = stack.enter_context(MosquittoBroker(workdir=Path(tmp) / "mq"))
        if args.postgres == "private":
            args.postgres = stack.enter_context(PostgresServer()).url
        endpoint = BrokerEndpoint(mq.host, mq.port)
        n = args.messages
        raw = raw_baseline(endpoint, n)
        print(f"messages: {n} (4 predictions : 1 telemetry, 20 devices, QoS 1)")
        print(f"raw subscriber (count only):           {raw:9.0f} msg/s")
        figures: dict[str, float] = {"raw_msg_s": raw}
        backends = [("sqlite", lambda i: sqlite_url(Path(tmp) / f"fleet-{i}.db"))]
        if args.postgres:
            backends.append(("postgresql", lambda _i: str(args.postgres)))
        for name, make_url in backends:
            for instances in (1, 2):
                url = make_url(instances)
                try:
                    rate = fleet_rate(endpoint, url, n, instances)
                except StoreError as e:
                    print(f"{name}: skipped ({e})")
                    break
                print(
                    f"fleet → {name:10s} {instances} instance(s): {rate:9.0f} msg/s "
                    f"({rate / raw:5.2f} × raw)"
                )
                figures[f"{name}_{instances}_msg_s"] = rate
                figures[f"{name}_{instances}_vs_raw"] = rate / raw
                if name == "postgresql":
                    _clear_postgres(url)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1))


def _clear_postgres(url: str) -> None:
    from sqlalchemy import create_engine

    from cloud_trainer.fleet.store.schema import metadata

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    metadata.drop_all(engine)
    engine.dispose()


if __name__ == "__main__":
    main()
