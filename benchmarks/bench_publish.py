"""Publishing side by side: ``mosquitto_pub -l`` vs a raw paho loop vs the agent's outbox path.

    .venv/bin/python -m benchmarks.bench_publish [--messages 5000] [--rounds 5] [--json OUT]

The same encoded prediction messages go to one private Mosquitto at QoS 0 and QoS 1 by:

- ``mosquitto_pub -l``: the C client reading one message per line from a file (process
  start included, a few milliseconds);
- ``raw paho``: a paho loop publishing the bytes and waiting for the PUBACKs (QoS 1);
- ``agent``: ``OutboxStore.append`` (the seq, and the SQLite commit of what the broker has
  not acknowledged within the agent's default ``outbox_commit_interval_s``) and the
  ``OutboxPublisher`` that sends and deletes on acknowledgement: what every prediction
  goes through.

Rounds interleave the variants in rotating order so a busy neighbour hurts all alike;
figures are medians of the rounds, each rate measured until a subscriber received every
message (QoS 0 may lose some: the count is printed). Ratios are against raw paho.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.config.device import LimitsConfig
from edge_agent.outbox import OutboxPublisher, OutboxStore, Priority
from edge_agent.protocol import PredictionMessage, encode, utc_now
from tests.support.mqtt import Collector

COMMIT_INTERVAL_S = LimitsConfig.model_fields["outbox_commit_interval_s"].default


def prediction(seq: int, stamp_input: bool = False) -> PredictionMessage:
    """The camera prediction every publishing benchmark sends: one realistic size and shape,
    so their message rates compare."""
    return PredictionMessage(
        device_id="cam-01",
        ts=utc_now(),
        seq=seq,
        model_name="catdog",
        model_version=3,
        label="dog",
        confidence=0.9,
        scores={"cat": 0.1, "dog": 0.9},
        latency_ms=4.2,
        input_ts=utc_now() if stamp_input else None,
        input_id=f"frame-{seq:06d}",
    )


def payloads(n: int) -> list[bytes]:
    return [encode(prediction(i)) for i in range(n)]


def mosquitto_pub(port: int, topic: str, qos: int, lines: Path) -> None:
    tool = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
    with lines.open("rb") as stdin:
        subprocess.run(
            [tool, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", str(qos), "-l"],
            stdin=stdin,
            check=True,
            timeout=120,
        )


def raw_paho(port: int, topic: str, qos: int, data: list[bytes]) -> None:
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=qos) for payload in data]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _constant(payload: bytes) -> Callable[[int], bytes]:
    return lambda _seq: payload


def agent_outbox(port: int, topic: str, qos: int, data: list[bytes], db: Path) -> None:
    store = OutboxStore(db, commit_interval_s=COMMIT_INTERVAL_S)
    link = MqttLink(BrokerEndpoint("127.0.0.1", port), client_id=f"agent-{uuid.uuid4().hex[:6]}")
    link.start(timeout=10)
    publisher = OutboxPublisher(store, link)
    publisher.start()
    for payload in data:
        store.append(topic, _constant(payload), Priority.PREDICTION, qos=qos, wait=False)
        publisher.notify()
    deadline = time.monotonic() + 120
    while store.depth and time.monotonic() < deadline:
        time.sleep(0.002)
    publisher.stop()
    link.stop()
    store.close()


def timed(
    endpoint: BrokerEndpoint, topic: str, n: int, send: Callable[[], None]
) -> tuple[float, int]:
    """Messages/s from the first publish to the last arrival at a subscriber; arrivals."""
    with Collector(endpoint, topic) as collector:
        start = time.perf_counter()
        send()
        deadline = time.monotonic() + 30
        while len(collector.messages) < n and time.monotonic() < deadline:
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        arrived = len(collector.messages)
    return arrived / elapsed, arrived


def _bind(send: Callable[[str, int], None], topic: str, qos: int) -> Callable[[], None]:
    return lambda: send(topic, qos)


def run(messages: int, rounds: int) -> dict[str, Any]:
    data = payloads(messages)
    rates: dict[str, list[float]] = {}
    arrived: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as folder, MosquittoBroker() as mq:
        tmp = Path(folder)
        lines = tmp / "lines.txt"
        lines.write_bytes(b"\n".join(data) + b"\n")
        endpoint = BrokerEndpoint(mq.host, mq.port)
        variants: list[tuple[str, Callable[[str, int], None]]] = [
            ("mosquitto_pub", lambda t, q: mosquitto_pub(mq.port, t, q, lines)),
            ("raw_paho", lambda t, q: raw_paho(mq.port, t, q, data)),
            ("agent", lambda t, q: agent_outbox(mq.port, t, q, data, tmp / f"{t[-8:]}.db")),
        ]
        for r in range(rounds):
            order = variants[r % 3 :] + variants[: r % 3]
            for qos in (0, 1):
                for name, send in order:
                    topic = f"bench/publish/{uuid.uuid4().hex[:8]}"
                    rate, got = timed(endpoint, topic, messages, _bind(send, topic, qos))
                    rates.setdefault(f"{name}/qos{qos}", []).append(rate)
                    arrived.setdefault(f"{name}/qos{qos}", []).append(got)
    result: dict[str, Any] = {"messages": messages, "rounds": rounds, "variants": {}}
    for key, values in rates.items():
        level = key.split("/")[1]
        raw = statistics.median(rates[f"raw_paho/{level}"])
        median = statistics.median(values)
        result["variants"][key] = {
            "median_msg_s": median,
            "best_msg_s": max(values),
            "vs_raw_paho": median / raw,
            "min_arrived": min(arrived[key]),
        }
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['messages']} messages per run, median of {result['rounds']} interleaved rounds")
    print(f"{'variant':<22} {'median msg/s':>12} {'best':>9} {'vs raw paho':>11} {'arrived':>8}")
    for key, v in sorted(result["variants"].items(), key=lambda kv: kv[0].split("/")[::-1]):
        print(
            f"{key:<22} {v['median_msg_s']:>12.0f} {v['best_msg_s']:>9.0f} "
            f"{v['vs_raw_paho']:>11.2f} {v['min_arrived']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args.messages, args.rounds)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
