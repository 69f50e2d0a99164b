"""The fleet service's MQTT session over the nodes of a clustered broker."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from cloud_trainer.fleet.cli import _flags, host_ports, register
from cloud_trainer.fleet.settings import FleetSettings


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fleet", "serve", *argv])


def test_broker_flag_takes_the_nodes_of_one_broker_first_first() -> None:
    flags = _flags(_serve_args("--broker", "10.0.0.1:1883,10.0.0.2:1884,[fd00::3]:1883"))
    assert (flags["broker_host"], flags["broker_port"]) == ("10.0.0.1", 1883)
    assert flags["broker_endpoints"] == ["10.0.0.2:1884", "[fd00::3]:1883"]
    settings = FleetSettings(**flags)
    nodes = [(n.host, n.port) for n in settings.broker_nodes()]
    assert nodes == [("10.0.0.1", 1883), ("10.0.0.2", 1884), ("fd00::3", 1883)]


def test_one_broker_stays_one_node() -> None:
    flags = _flags(_serve_args("--broker", "broker.site:8883"))
    assert "broker_endpoints" not in flags
    assert [(n.host, n.port) for n in FleetSettings(**flags).broker_nodes()] == [
        ("broker.site", 8883)
    ]


def test_nodes_share_the_login_and_repeats_are_dropped(tmp_path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    settings = FleetSettings(
        broker_host="10.0.0.1",
        broker_port=1883,
        broker_username="fleet",
        broker_password_file=password,
        broker_endpoints=["10.0.0.1:1883", "10.0.0.2:1883"],
    )
    nodes = settings.broker_nodes()
    assert [(n.host, n.port) for n in nodes] == [("10.0.0.1", 1883), ("10.0.0.2", 1883)]
    assert {(n.username, n.password) for n in nodes} == {("fleet", "s3cret")}


@pytest.mark.parametrize("text", ["10.0.0.1:1883,", "a:1,,b:2", "10.0.0.1", "a:99999"])
def test_broker_flag_refuses_what_is_not_a_list_of_host_port(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        host_ports(text)


def test_settings_name_the_bad_node() -> None:
    with pytest.raises(ValidationError) as e:
        FleetSettings(broker_endpoints=["10.0.0.2:1883", "::1:1883"])
    assert "broker_endpoints.1" in str(e.value) and "brackets" in str(e.value)
