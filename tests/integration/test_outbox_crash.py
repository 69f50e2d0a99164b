"""kill -9 of a process writing to the outbox and publishing: nothing acknowledged is lost.

Two writers: one that commits every row before it is sent (events, and everything with
``outbox_commit_interval_s: 0``), and one that batches, as predictions and telemetry go: rows
are sent at once and count as queued when committed or acknowledged by the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.outbox import OutboxStore
from tests.support.mqtt import Collector

pytestmark = pytest.mark.integration

# argv: outbox path, broker port, topic, commit interval (0: commit each row before sending).
# Prints each seq once the outbox counts it as queued: at once after a committing append, and
# for batched rows once committed or acknowledged by the broker (durable_seq).
CHILD = """
import json, sys
from collections import deque
from pathlib import Path
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.outbox import OutboxPublisher, OutboxStore, Priority
interval = float(sys.argv[4])
store = OutboxStore(Path(sys.argv[1]), commit_interval_s=interval)
link = MqttLink(BrokerEndpoint("127.0.0.1", int(sys.argv[2])))
link.start()
publisher = OutboxPublisher(store, link)
publisher.start()
waiting = deque()
i = 0
while True:
    waiting.append(store.append(
        sys.argv[3], lambda s: json.dumps({"seq": s, "i": i}).encode(), Priority.PREDICTION,
        wait=interval == 0,
    ))
    publisher.notify()
    while waiting and waiting[0] <= store.durable_seq:
        print(waiting.popleft(), flush=True)
    i += 1
"""


@dataclass
class Crash:
    acknowledged: list[int]  # seqs the child was told were queued, in the order it was told
    queued: set[int]  # rows in the outbox file after the kill
    received: set[int]  # acknowledged seqs the broker delivered
    arrived: list[int]  # every seq the subscriber got, in arrival order
    next_seq: int  # the reopened outbox's next seq


def kill_mid_stream(
    tmp_path: Path, mosquitto: MosquittoBroker, topic: str, commit_interval_s: float
) -> Crash:
    """Run the child until 3,000 rows are acknowledged, kill -9 it, and read what is left."""
    db = tmp_path / "outbox.db"
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    args = [str(db), str(mosquitto.port), topic, str(commit_interval_s)]
    with Collector(endpoint, topic) as collector:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        acknowledged: list[int] = []
        while len(acknowledged) < 3000:
            line = child.stdout.readline()
            assert line, "child ended early"
            acknowledged.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        store = OutboxStore(db)
        queued = {row.seq for row in store.fetch(-1, 1_000_000)}
        received = collector.wait_for_seqs(set(acknowledged) - queued, timeout=30)
        arrived = [json.loads(p)["seq"] for _t, p in collector.messages]
    return Crash(acknowledged, queued, received, arrived, store.next_seq)


def assert_nothing_acknowledged_lost(crash: Crash) -> None:
    # Every row counted as queued is either still in the outbox or reached the broker.
    missing = [s for s in crash.acknowledged if s not in crash.queued | crash.received]
    assert missing == []
    assert crash.acknowledged == sorted(set(crash.acknowledged))
    assert crash.next_seq > max(crash.acknowledged), "a seq the broker may have seen is reused"


def test_kill_9_loses_nothing_committed_and_seq_stays_monotonic(
    tmp_path: Path, mosquitto: MosquittoBroker
):
    crash = kill_mid_stream(tmp_path, mosquitto, "crash/test", commit_interval_s=0)
    assert_nothing_acknowledged_lost(crash)
    assert crash.received, "the publisher delivered part of the stream before the kill"


def test_kill_9_of_a_batching_writer_loses_nothing_it_acknowledged_and_keeps_order(
    tmp_path: Path, mosquitto: MosquittoBroker
):
    crash = kill_mid_stream(tmp_path, mosquitto, "crash/batched", commit_interval_s=0.05)
    assert_nothing_acknowledged_lost(crash)
    assert crash.arrived == sorted(crash.arrived), "rows reach the broker in seq order"
