"""Every message type and a signed release cross a real Mosquitto with paho-mqtt 2.x."""

from __future__ import annotations

import subprocess
import time

import pytest

from cloud_trainer.stack.mosquitto import MosquittoBroker
from edge_agent.comms.mqtt import BrokerEndpoint, LinkError, MqttLink, Will
from edge_agent.protocol import (
    Channel,
    ProtocolError,
    SigningKey,
    StatusMessage,
    TopicTree,
    decode_manifest,
    decode_message,
    encode,
    safe_decode,
    verify_manifest,
)
from tests.support.mqtt import Collector
from tests.support.samples import T0, sample_manifest, sample_messages

pytestmark = pytest.mark.integration

CHANNEL_OF = {
    "status": Channel.STATUS,
    "telemetry": Channel.TELEMETRY,
    "prediction": Channel.PREDICTIONS,
    "drift": Channel.DRIFT,
    "event": Channel.EVENTS,
    "cmd": Channel.CMD,
    "cmd_ack": Channel.CMD_ACK,
    "sensor_fault": Channel.SENSOR_FAULTS,
    "visit": Channel.EVENTS,
    "stream": Channel.EVENTS,
}


def test_every_message_type_through_real_broker(broker_endpoint: BrokerEndpoint) -> None:
    tree = TopicTree("it1")
    sent = sample_messages("cam-01")
    with Collector(broker_endpoint, "it1/#") as collector:
        sender = MqttLink(broker_endpoint, client_id="it1-sender")
        sender.start()
        for message in sent:
            topic = tree.device("park", "cam-01", CHANNEL_OF[message.type])  # type: ignore[attr-defined]
            assert sender.publish(topic, encode(message), qos=1).wait(5)
        sender.stop()
        received = collector.wait_for(len(sent))
    assert len(received) == len(sent)
    for (topic, payload), original in zip(received, sent, strict=True):
        address = tree.parse(topic)
        assert address.device == "cam-01"
        assert address.channel is CHANNEL_OF[original.type]  # type: ignore[attr-defined]
        assert decode_message(payload) == original


def test_signed_release_retained_and_verified(broker_endpoint: BrokerEndpoint) -> None:
    tree = TopicTree("it2")
    key = SigningKey.generate()
    signed = key.sign(sample_manifest())
    cloud = MqttLink(broker_endpoint, client_id="it2-cloud")
    cloud.start()
    assert cloud.publish(tree.release("catdog"), encode(signed), retain=True).wait(5)
    cloud.stop()
    # A device that connects later still gets the retained manifest.
    with Collector(broker_endpoint, tree.all_releases()) as late_device:
        ((topic, payload),) = late_device.wait_for(1)
    assert tree.parse(topic).model == "catdog"
    manifest = decode_manifest(payload)
    verify_manifest(manifest, key.public_key)


def test_malformed_payload_does_not_kill_the_network_thread(
    broker_endpoint: BrokerEndpoint,
) -> None:
    tree = TopicTree("it3")
    topic = tree.device("park", "cam-02", Channel.TELEMETRY)
    results: list[object] = []
    listener = MqttLink(broker_endpoint, client_id="it3-listener")
    listener.subscribe(topic, lambda _t, p: results.append(safe_decode(p)))
    listener.start()
    # Garbage straight from a real MQTT client, then a valid message after it.
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            broker_endpoint.host,
            "-p",
            str(broker_endpoint.port),
            "-t",
            topic,
            "-q",
            "1",
            "-m",
            '{"schema_version": 1, "type": "telemetry", "cpu',
        ],
        check=True,
        timeout=10,
    )
    good = sample_messages("cam-02")[1]
    sender = MqttLink(broker_endpoint, client_id="it3-sender")
    sender.start()
    sender.publish(topic, encode(good)).wait(5)
    sender.stop()
    deadline_ok = _wait(lambda: len(results) >= 2)
    listener.stop()
    assert deadline_ok, results
    assert isinstance(results[0], ProtocolError) and "not valid JSON" in str(results[0])
    assert results[1] == good


def test_last_will_marks_device_offline(mosquitto: MosquittoBroker) -> None:
    endpoint = BrokerEndpoint(mosquitto.host, mosquitto.port, keepalive_s=1)
    tree = TopicTree("it4")
    topic = tree.device("park", "cam-03", Channel.STATUS)
    offline = StatusMessage(device_id="cam-03", ts=T0, seq=0, state="offline", site="park")
    online = StatusMessage(device_id="cam-03", ts=T0, seq=1, state="online", site="park")
    # A real client process that dies without DISCONNECT: the broker sends its Will.
    proc = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            endpoint.host,
            "-p",
            str(endpoint.port),
            "-t",
            "it4/none",
            "-k",
            "5",
            "--will-topic",
            topic,
            "--will-payload",
            encode(offline).decode(),
            "--will-qos",
            "1",
            "--will-retain",
            "-i",
            "it4-device",
        ],
    )
    with Collector(endpoint, topic) as watcher:
        device = MqttLink(endpoint, client_id="it4-online", will=Will(topic, encode(offline)))
        device.start()
        device.publish(topic, encode(online), retain=True).wait(5)
        device.stop()
        watcher.wait_for(1)
        time.sleep(0.5)  # let mosquitto_sub finish connecting
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        messages = watcher.wait_for(2, timeout=10)
    states = [decode_message(p).state for _t, p in messages]  # type: ignore[union-attr]
    assert states[:2] == ["online", "offline"]


def test_unreachable_broker_is_a_clear_error() -> None:
    link = MqttLink(BrokerEndpoint("127.0.0.1", 1), client_id="nowhere")
    with pytest.raises(LinkError, match=r"127\.0\.0\.1:1 not reached"):
        link.start(timeout=1.5)


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
