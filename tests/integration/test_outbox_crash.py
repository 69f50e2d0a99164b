"""kill -9 of a process writing to the outbox and publishing: nothing committed is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.outbox import OutboxStore
from tests.support.mqtt import Collector

pytestmark = pytest.mark.integration

CHILD = """
import json, sys
from pathlib import Path
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.outbox import OutboxPublisher, OutboxStore, Priority
store = OutboxStore(Path(sys.argv[1]))
link = MqttLink(BrokerEndpoint("127.0.0.1", int(sys.argv[2])))
link.start()
publisher = OutboxPublisher(store, link)
publisher.start()
i = 0
while True:
    seq = store.append(
        "crash/test", lambda s: json.dumps({"seq": s, "i": i}).encode(), Priority.PREDICTION
    )
    publisher.notify()
    print(seq, flush=True)
    i += 1
"""


def test_kill_9_loses_nothing_committed_and_seq_stays_monotonic(
    tmp_path: Path, mosquitto: MosquittoBroker
):
    db = tmp_path / "outbox.db"
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    with Collector(endpoint, "crash/test") as collector:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(mosquitto.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        committed: list[int] = []
        while len(committed) < 3000:
            line = child.stdout.readline()
            assert line, "child ended early"
            committed.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        store = OutboxStore(db)
        queued = {row.seq for row in store.fetch(-1, 1_000_000)}
        received = collector.wait_for_seqs(set(committed) - queued, timeout=30)
    # Every append that returned is either still queued or reached the broker.
    missing = [s for s in committed if s not in queued and s not in received]
    assert missing == []
    assert received, "the publisher delivered part of the stream before the kill"
    assert store.next_seq > max(committed)
    assert committed == sorted(committed)
