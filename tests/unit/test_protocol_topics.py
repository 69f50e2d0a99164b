"""The topic tree: build, parse back, refuse what could escape a device's own subtree."""

import pytest

from edge_agent.protocol import Channel, ProtocolError, TopicTree


def test_device_topics_round_trip() -> None:
    tree = TopicTree("mlops")
    for channel in Channel:
        topic = tree.device("port-turku", "ws-01", channel)
        address = tree.parse(topic)
        assert (address.site, address.device, address.channel) == ("port-turku", "ws-01", channel)
        assert not address.is_release


def test_release_topic_round_trip() -> None:
    tree = TopicTree("acme/mlops")
    topic = tree.release("weather")
    assert topic == "acme/mlops/releases/weather"
    address = tree.parse(topic)
    assert address.is_release and address.model == "weather" and address.channel is None


def test_filters() -> None:
    tree = TopicTree()
    assert tree.fleet_filter(Channel.TELEMETRY) == "mlops/+/+/telemetry"
    assert tree.fleet_filter(Channel.CMD_ACK, site="park") == "mlops/park/+/cmd/ack"
    assert tree.all_releases() == "mlops/releases/+"


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "UPPER", "-lead", "x" * 64, "$sys", "a b"])
def test_identifiers_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(ProtocolError, match="invalid device id"):
        TopicTree().device("site", bad, Channel.STATUS)


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("other/site/dev/status", "not under root"),
        ("mlops/site/dev", "too few levels"),
        ("mlops/site/dev/bogus", "unknown channel"),
        ("mlops/site/dev/cmd/nack", "unknown channel"),
        ("mlops/Site/dev/status", "invalid site id"),
        ("mlops/releases/Bad+", "invalid model name"),
    ],
)
def test_parse_names_the_problem(topic: str, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        TopicTree().parse(topic)


@pytest.mark.parametrize("root", ["", "a//b", "+", "a/#", "$SYS"])
def test_bad_roots_refused(root: str) -> None:
    with pytest.raises(ProtocolError, match="invalid topic root"):
        TopicTree(root)
