"""The fleet service reaches a secured broker (TLS, its own identity) from its config file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from cloud_trainer.fleet.cli import _config_file
from cloud_trainer.fleet.service import FleetService
from cloud_trainer.fleet.settings import FleetSettings
from cloud_trainer.provision import broker_config as files
from edge_agent.comms.mqtt import MqttLink
from edge_agent.protocol import Channel, TopicTree, encode
from tests.support.samples import sample_messages
from tests.support.secured_broker import ProvisionedFleet, SecuredBroker

pytestmark = pytest.mark.integration


def test_fleet_service_ingests_over_tls_with_its_own_identity(tmp_path: Path) -> None:
    fleet = ProvisionedFleet(tmp_path / "fleet")
    secured = SecuredBroker(fleet, tmp_path / "broker", mtls=False).start()
    try:
        bundle = secured.provision("park", "cam-a")
        config = tmp_path / "fleet.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "database_url": f"sqlite:///{tmp_path / 'fleet.db'}",
                    "broker_host": "127.0.0.1",
                    "broker_port": secured.broker.port,
                    "broker_username": "fleet",
                    "broker_password_file": str(fleet.provisioner.state.service_password("fleet")),
                    "broker_ca_file": str(fleet.broker_dir / files.CA_NAME),
                    "http_port": 0,
                }
            )
        )
        settings = FleetSettings(**_config_file(config))
        endpoint = settings.broker_endpoint()
        assert endpoint.password == fleet.service_password("fleet")
        assert endpoint.password not in repr(endpoint)
        service = FleetService(settings).start()
        device = MqttLink(secured.device_endpoint(bundle, "park.cam-a"), client_id="cam-a")
        device.start(timeout=5)
        try:
            telemetry = sample_messages("cam-a")[1]
            topic = TopicTree().device("park", "cam-a", Channel.TELEMETRY)
            assert device.publish(topic, encode(telemetry)).wait(5)
            deadline = time.monotonic() + 10
            while service.store.device("cam-a") is None:
                assert time.monotonic() < deadline, "telemetry never reached the fleet store"
                time.sleep(0.1)
            assert service.store.device("cam-a")["site"] == "park"  # type: ignore[index]
        finally:
            device.stop()
            service.stop()
    finally:
        secured.close()


def test_missing_password_variable_is_a_clear_error(tmp_path: Path) -> None:
    settings = FleetSettings(broker_username="fleet", broker_password_env="NO_SUCH_VAR_XYZ")
    with pytest.raises(ValueError, match="NO_SUCH_VAR_XYZ is not set"):
        settings.broker_endpoint()
