"""``broker.endpoints``: parsing and refusal in the config, and the link's rotation order."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from edge_agent.comms.mqtt import BrokerEndpoint, EndpointRotation, MqttLink
from edge_agent.config.device import BrokerConfig, DeviceConfig, parse_endpoint
from edge_agent.config.loader import ConfigError, load_config
from edge_agent.runtime.agent import broker_endpoint, broker_endpoints

DEVICE: dict[str, Any] = {
    "device_id": "cam-01",
    "site": "park",
    "kind": "camera",
    "source": {"type": "camera", "uri": "rtsp://cam.local/stream"},
    "model": {"path": "/var/lib/edge-agent/models/catdog.onnx"},
}


def _broker_error(**broker: Any) -> str:
    with pytest.raises(ValidationError) as info:
        BrokerConfig.model_validate(broker)
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:1883", ("10.0.0.1", 1883)),
        ("broker-3.site:8883", ("broker-3.site", 8883)),
        ("[::1]:1883", ("::1", 1883)),
        ("[2001:db8::0:1]:8883", ("2001:db8::1", 8883)),
    ],
)
def test_endpoint_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1", "not host:port"),
        ("10.0.0.1:", "not host:port"),
        ("10.0.0.1:0", "port 0 is out of range"),
        ("10.0.0.1:65536", "port 65536 is out of range"),
        ("::1:1883", "IPv6 address in brackets"),
        ("[::zz]:1883", "is not an IPv6 address"),
        ("bad host:1883", "not a host name"),
        ("-lead.site:1883", "not a host name"),
    ],
)
def test_malformed_endpoints_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(text)
    assert message in _broker_error(endpoints=["10.0.0.9:1883", text])


def test_endpoints_replace_host_and_port() -> None:
    config = BrokerConfig(endpoints=["10.0.0.1:1883", "[::1]:8883"])
    assert config.addresses() == [("10.0.0.1", 1883), ("::1", 8883)]
    assert BrokerConfig(host="b.site", port=8883).addresses() == [("b.site", 8883)]
    # host and port may repeat the first endpoint (a site file that names it), nothing else
    same = BrokerConfig(host="10.0.0.1", port=1883, endpoints=["10.0.0.1:1883", "10.0.0.2:1883"])
    assert same.addresses()[0] == ("10.0.0.1", 1883)
    assert "leave host and port out" in _broker_error(
        host="10.0.0.7", endpoints=["10.0.0.1:1883", "10.0.0.2:1883"]
    )
    assert "leave host and port out" in _broker_error(port=8883, endpoints=["10.0.0.1:1883"])


def test_empty_and_duplicate_endpoints_are_refused() -> None:
    assert "at least 1 item" in _broker_error(endpoints=[])
    assert "listed twice" in _broker_error(endpoints=["b.site:1883", "B.SITE:1883"])
    assert "listed twice" in _broker_error(endpoints=["[::1]:1883", "[0::1]:1883"])
    BrokerConfig(endpoints=["b.site:1883", "b.site:1884"])  # same host, other port: fine


@pytest.mark.parametrize("root", ["ml.ops", "ml ops", "ml+ops", "ml#", "mlops/", "a//b", "$SYS"])
def test_topic_root_refuses_what_a_broker_cannot_carry(root: str) -> None:
    assert "letters, digits" in _broker_error(topic_root=root)


def test_topic_root_may_have_levels() -> None:
    assert BrokerConfig(topic_root="mlops/prod").topic_root == "mlops/prod"


def test_validate_config_reports_each_bad_entry_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    device = {**DEVICE, "broker": {"endpoints": ["10.0.0.1:1883", "10.0.0.2:99999", "x y:1"]}}
    path.write_text(yaml.safe_dump(device, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = path.read_text().splitlines()
    port_line = next(n for n, line in enumerate(lines, 1) if "99999" in line)
    found = {(i.path, i.line, i.message) for i in info.value.issues}
    assert found == {
        ("broker.endpoints[1]", port_line, "port 99999 is out of range 1-65535"),
        ("broker.endpoints[2]", port_line + 1, "'x y' is not a host name or IPv4 address"),
    }


def test_a_dot_in_the_device_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump({**DEVICE, "device_id": "cam.01"}, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [issue] = info.value.issues
    assert (issue.path, issue.line, issue.value) == ("device_id", 1, "'cam.01'")
    assert "should match pattern" in issue.message


def test_agent_endpoints_share_the_login() -> None:
    config = DeviceConfig.model_validate(
        {**DEVICE, "broker": {"endpoints": ["10.0.0.1:1883", "[::1]:1884"], "username": "u"}}
    )
    endpoints = broker_endpoints(config)
    assert [e.address for e in endpoints] == ["10.0.0.1:1883", "[::1]:1884"]
    assert {e.username for e in endpoints} == {"u"}
    assert broker_endpoint(config) == endpoints[0]


def test_a_link_refuses_endpoints_with_different_logins() -> None:
    with pytest.raises(ValueError, match="share credentials"):
        MqttLink([BrokerEndpoint("a", 1, username="x"), BrokerEndpoint("b", 1, username="y")])
    with pytest.raises(ValueError, match="at least one"):
        MqttLink([])
    link = MqttLink(BrokerEndpoint("a", 1))  # one endpoint, as every caller passes it
    assert link.endpoint == BrokerEndpoint("a", 1) and link.current_endpoint is None


def _rotation(n: int) -> EndpointRotation:
    endpoints = [BrokerEndpoint(f"n{i}", 1883) for i in range(n)]
    return EndpointRotation(endpoints, min_s=1.0, max_s=8.0, hop_s=0.2, rng=random.Random(1))


def test_rotation_hops_quickly_and_backs_off_per_failed_round() -> None:
    rotation = _rotation(3)
    order, delays = [], []
    for _ in range(9):  # three whole rounds fail
        order.append(rotation.next_endpoint().host)
        delays.append(rotation.delay())
    assert order == ["n0", "n1", "n2"] * 3
    hops = [d for i, d in enumerate(delays) if i % 3 != 2]
    assert all(0.1 <= d <= 0.2 for d in hops)
    rounds = [delays[2], delays[5], delays[8]]  # back-off doubles per round, jittered
    assert 0.5 <= rounds[0] <= 1.0 and 1.0 <= rounds[1] <= 2.0 and 2.0 <= rounds[2] <= 4.0


def test_rotation_after_a_lost_connection_goes_to_the_next_node() -> None:
    rotation = _rotation(3)
    for _ in range(4):  # a failed round, then n0 again, which connects
        rotation.next_endpoint()
        rotation.delay()
    assert rotation.next_endpoint().host == "n1"
    rotation.connected()
    assert rotation.current.host == "n1"
    assert 0.5 <= rotation.delay() <= 1.0  # the base delay, the back-off was reset
    assert rotation.next_endpoint().host == "n2"
    assert rotation.delay() <= 0.2  # n2 failed: hop on
    assert rotation.next_endpoint().host == "n0"


def test_rotation_of_one_endpoint_is_the_plain_back_off() -> None:
    rotation = _rotation(1)
    delays = []
    for _ in range(5):
        assert rotation.next_endpoint().host == "n0"
        delays.append(rotation.delay())
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
