"""The agent against a real Mosquitto: predictions, telemetry, status, commands, outages."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import (
    Command,
    PredictionMessage,
    TelemetryMessage,
    decode_message,
    encode,
    utc_now,
)
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.support.mqtt import Collector

pytestmark = pytest.mark.integration
ROOT_FILTER = "mlops/park/cam-01/#"


def _by_topic(messages, suffix):
    return [json.loads(p) for t, p in messages if t.endswith(suffix)]


def _prediction(i: int) -> PredictionMessage:
    """A prediction for the agent to publish (it sets the device id and the seq)."""
    return PredictionMessage(
        device_id="x",
        ts=utc_now(),
        seq=0,
        model_name="catdog",
        model_version=1,
        label="cat",
        confidence=0.9,
        latency_ms=1.0,
        input_id=f"f{i}",
    )


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_video_to_predictions_read_by_mosquitto_sub(tmp_path: Path, mosquitto: MosquittoBroker):
    config = camera_config(tmp_path, mosquitto.port, frames=20)
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto.port),
            "-q",
            "1",
            "-v",
            "-t",
            "mlops/park/cam-01/predictions",
            "-t",
            "mlops/park/cam-01/status",
            "-C",
            "21",
            "-W",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # mosquitto_sub has subscribed
    agent = build_agent(config)
    agent.start(connect_timeout=10)
    try:
        out, _ = sub.communicate(timeout=40)
    finally:
        assert agent.stop() is True
    lines = [line.split(" ", 1) for line in out.strip().splitlines()]
    predictions = [json.loads(p) for t, p in lines if t.endswith("/predictions")]
    statuses = [json.loads(p) for t, p in lines if t.endswith("/status")]
    assert len(predictions) == 20
    assert statuses[0]["state"] == "online" and statuses[0]["model_name"] == "catdog"
    seqs = [p["seq"] for p in predictions]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    first = predictions[0]
    assert first["model_name"] == "catdog" and first["model_version"] == 3
    assert first["label"] in ("cat", "dog") and 0 <= first["confidence"] <= 1
    assert first["latency_ms"] > 0 and first["input_id"]
    assert agent.store.depth == 0


def test_telemetry_status_will_and_commands(tmp_path: Path, mosquitto: MosquittoBroker):
    config = camera_config(tmp_path, mosquitto.port, frames=5)
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    with Collector(endpoint, ROOT_FILTER) as collector:
        agent = build_agent(config)
        agent.start(connect_timeout=10)
        try:
            assert _wait(lambda: _by_topic(collector.messages, "/telemetry"))
            cloud = MqttLink(endpoint, client_id="cloud-test")
            cloud.start()
            for cmd_id, action, args in [
                ("c1", "ping", {}),
                ("c2", "set_log_level", {"level": "LOUD"}),
                ("c3", "rollback", {}),
            ]:
                command = Command(
                    device_id="cam-01",
                    ts=utc_now(),
                    seq=1,
                    cmd_id=cmd_id,
                    action=action,
                    args=args,
                    issued_by="cloud",
                )
                cloud.publish("mlops/park/cam-01/cmd", encode(command)).wait(5)
            cloud.publish("mlops/park/cam-01/cmd", b"{not json").wait(5)
            cloud.stop()
            assert _wait(lambda: len(_by_topic(collector.messages, "/cmd/ack")) == 3)
        finally:
            agent.stop()
        assert _wait(lambda: _by_topic(collector.messages, "/status")[-1]["state"] == "offline")
    acks = {a["cmd_id"]: a for a in _by_topic(collector.messages, "/cmd/ack")}
    assert acks["c1"]["result"] == "done" and acks["c1"]["detail"] == "pong"
    assert acks["c2"]["result"] == "rejected" and "LOUD" in acks["c2"]["detail"]
    assert acks["c3"]["result"] == "rejected" and "no handler" in acks["c3"]["detail"]
    assert agent.counters["bad_commands"] == 1
    telemetry = decode_message(next(p for t, p in collector.messages if t.endswith("/telemetry")))
    assert isinstance(telemetry, TelemetryMessage)
    assert telemetry.rss_bytes > 0 and 0 <= telemetry.cpu_percent <= 100
    assert telemetry.model_name == "catdog"


def test_last_will_says_offline_when_agent_dies(tmp_path: Path, mosquitto: MosquittoBroker):
    config = camera_config(tmp_path, mosquitto.port, frames=3)
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    agent = build_agent(config, with_source=False)
    agent.start(connect_timeout=10)
    with Collector(endpoint, "mlops/park/cam-01/status") as collector:
        assert _wait(lambda: bool(collector.messages))
        assert json.loads(collector.messages[-1][1])["state"] == "online"
        # Drop the TCP connection without DISCONNECT, as a crash does: the broker sends the will.
        sock = agent.link._client.socket()
        assert sock is not None
        sock.close()
        assert _wait(lambda: json.loads(collector.messages[-1][1])["state"] == "offline")
    agent.supervisor.stop(1)


def test_broker_outage_no_loss_no_duplicate_order_kept(tmp_path: Path, private_broker):
    config = camera_config(tmp_path, private_broker.port, frames=10)
    endpoint = BrokerEndpoint(private_broker.host, private_broker.port)
    agent = build_agent(config, with_source=False)
    agent.start(connect_timeout=10)
    from edge_agent.sources import Sample
    from tests.support.onnx_models import red_frame

    def send(n, start):
        return [
            agent.handle_sample(Sample(ts=utc_now(), input_id=f"f{start + i}", frame=red_frame()))
            for i in range(n)
        ]

    received: list[tuple[str, bytes]] = []
    with Collector(endpoint, "mlops/park/cam-01/predictions") as collector:
        sent = send(50, 0)
        assert _wait(lambda: len(collector.messages) >= 50)
        received += collector.messages
    private_broker.stop()
    assert _wait(lambda: not agent.link.connected.is_set())
    sent += send(200, 50)  # queued on disk during the outage
    assert agent.store.depth >= 200
    private_broker.restart()
    with Collector(endpoint, "mlops/park/cam-01/predictions") as collector:
        assert _wait(lambda: agent.link.connected.is_set(), 30)
        sent += send(50, 250)  # live traffic while the backlog replays
        assert _wait(lambda: agent.store.depth == 0, 30)
        time.sleep(0.3)
        received += collector.messages
    agent.stop()
    seqs = [json.loads(p)["seq"] for _t, p in received]
    unique = sorted(set(seqs))
    assert unique == sorted(s for s in sent if s is not None)  # nothing lost
    assert len(sent) == 300
    ids = {json.loads(p)["seq"]: json.loads(p)["input_id"] for _t, p in received}
    assert [ids[s] for s in unique] == [f"f{i}" for i in range(300)]  # order kept by seq


def test_events_commit_at_once_predictions_in_a_batch_all_go_out_in_order(
    tmp_path: Path, mosquitto: MosquittoBroker
):
    from edge_agent.protocol import CommandAck

    config = camera_config(tmp_path, mosquitto.port, frames=2, outbox_commit_interval_s=0.05)
    # Its own device id: the retained status it leaves must not meet other tests' cam-01.
    agent = build_agent(config.model_copy(update={"device_id": "cam-02"}), with_source=False)

    queued = [agent.publish_event(_prediction(i)) for i in range(3)]
    predictions = [s for s in queued if s is not None]
    assert len(predictions) == 3
    assert agent.store.durable_seq < predictions[0]  # batched: not yet acknowledged
    ack = CommandAck(device_id="x", ts=utc_now(), seq=0, cmd_id="c1", result="done")
    event = agent.publish_event(ack)
    assert event is not None and agent.store.durable_seq == event  # with all before it
    late = agent.publish_event(_prediction(3))  # committed by the publisher's loop
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)
    with Collector(endpoint, "mlops/park/cam-02/#") as collector:
        agent.start(connect_timeout=10)
        assert _wait(lambda: agent.store.depth == 0)
        assert collector.wait_until(
            lambda m: sum(1 for t, _p in m if not t.endswith("/status")) >= 5
        )
        messages = [(t, json.loads(p)) for t, p in collector.messages]
    agent.stop()
    sent = [(p["type"], p["seq"]) for t, p in messages if not t.endswith("/status")]
    assert sent[:5] == [
        *(("prediction", s) for s in predictions),
        ("cmd_ack", event),
        ("prediction", late),
    ]
    assert all(p["device_id"] == "cam-02" for _t, p in messages)


def test_resend_command_sends_again_what_the_broker_acknowledged_lately(
    tmp_path: Path, mosquitto: MosquittoBroker
):
    """``resend``: for a clustered broker that acknowledged messages it then lost (a stream
    leader moved), the fleet asks; the device sends its resend window again, same seqs."""
    config = camera_config(tmp_path, mosquitto.port, frames=2, outbox_commit_interval_s=0.05)
    agent = build_agent(config.model_copy(update={"device_id": "cam-04"}), with_source=False)
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port)

    def predictions(topic_messages: list[tuple[str, bytes]]) -> list[int]:
        return [int(json.loads(p)["seq"]) for t, p in topic_messages if t.endswith("/predictions")]

    def command(cmd_id: str, args: dict[str, object]) -> bytes:
        return encode(
            Command(
                device_id="cam-04",
                ts=utc_now(),
                seq=1,
                cmd_id=cmd_id,
                action="resend",
                args=args,
                issued_by="fleet",
            )
        )

    with Collector(endpoint, "mlops/park/cam-04/#") as collector:
        agent.start(connect_timeout=10)
        try:
            queued = [agent.publish_event(_prediction(i)) for i in range(4)]
            sent = [seq for seq in queued if seq is not None]
            assert len(sent) == 4
            assert _wait(lambda: sorted(predictions(collector.messages)) == sorted(sent))
            assert _wait(lambda: agent.publisher.stats.acked >= 4)
            cloud = MqttLink(endpoint, client_id="cloud-resend")
            cloud.start()
            try:
                topic = "mlops/park/cam-04/cmd"
                cloud.publish(topic, command("r1", {"within_s": "soon"})).wait(5)
                cloud.publish(topic, command("r2", {})).wait(5)
            finally:
                cloud.stop()
            assert _wait(lambda: len(_by_topic(collector.messages, "/cmd/ack")) >= 2)
            assert _wait(lambda: len(predictions(collector.messages)) >= 8)
        finally:
            agent.stop()
    acks = {a["cmd_id"]: a for a in _by_topic(collector.messages, "/cmd/ack")}
    assert acks["r1"]["result"] == "rejected" and "within_s" in acks["r1"]["detail"]
    assert acks["r2"]["result"] == "done" and "re-sending up to" in acks["r2"]["detail"]
    seen = predictions(collector.messages)
    # Every prediction twice, under its own seq: receivers drop the second by seq.
    assert sorted(seen) == sorted(sent * 2), seen
    assert agent.publisher.stats.resent >= 4
