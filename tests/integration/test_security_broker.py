"""The generated password file, ACL and TLS files, enforced by a real Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.provision.registry import AuthMethod
from cloud_trainer.stack.mosquitto import free_port
from edge_agent.comms.mqtt import LinkError, MqttLink
from tests.support.secured_broker import (
    Inbox,
    ProvisionedFleet,
    SecuredBroker,
    raw_shared_inbox,
)

pytestmark = pytest.mark.integration

ROOT = "mlops"


@pytest.fixture
def fleet(tmp_path: Path) -> ProvisionedFleet:
    return ProvisionedFleet(tmp_path / "fleet")


@pytest.fixture
def secured(fleet: ProvisionedFleet, tmp_path: Path) -> Iterator[SecuredBroker]:
    broker = SecuredBroker(fleet, tmp_path / "broker").start()
    yield broker
    broker.close()


def connect(endpoint, client_id: str, timeout: float = 5) -> MqttLink:
    link = MqttLink(endpoint, client_id=client_id)
    link.start(timeout=timeout)
    return link


def refused(endpoint, client_id: str) -> None:
    """Connecting fails; MqttLink keeps retrying until its timeout, so keep that short."""
    with pytest.raises(LinkError, match=r"Not authorized|Bad user name|no answer"):
        connect(endpoint, client_id, timeout=2)


def cloud_inbox(secured: SecuredBroker, name: str = "fleet") -> Inbox:
    """The fleet identity reading the whole tree: the observer of what really got through."""
    link = MqttLink(secured.endpoint(name, secured.fleet.service_password(name)), client_id=name)
    inbox = Inbox(link)
    inbox.subscribe(f"{ROOT}/#")
    link.start(timeout=5)
    return inbox


def test_device_cannot_publish_as_another_device_or_a_release(
    fleet: ProvisionedFleet, secured: SecuredBroker
) -> None:
    bundle_a = secured.provision("park", "cam-a")
    secured.provision("park", "cam-b")
    observer = cloud_inbox(secured)
    device_a = connect(secured.device_endpoint(bundle_a, "park.cam-a"), "cam-a")
    try:
        # Mosquitto drops unauthorised MQTT 3.1.1 publishes silently; the marker, sent last on
        # the same session, proves everything before it has been routed.
        device_a.publish(f"{ROOT}/park/cam-b/telemetry", b"forged").wait(5)
        device_a.publish(f"{ROOT}/releases/catdog", b"forged-release", retain=True).wait(5)
        device_a.publish(f"{ROOT}/park/cam-a/cmd", b"self-command").wait(5)
        device_a.publish(f"{ROOT}/park/cam-a/telemetry", b"marker").wait(5)
        assert observer.wait_for(f"{ROOT}/park/cam-a/telemetry")
        topics = [t for t, _ in observer.messages]
        assert f"{ROOT}/park/cam-b/telemetry" not in topics
        assert f"{ROOT}/releases/catdog" not in topics
        assert f"{ROOT}/park/cam-a/cmd" not in topics
    finally:
        device_a.stop()
        observer.link.stop()
    # Nothing retained either: a fresh subscriber to the releases sees no manifest.
    late = cloud_inbox(secured, "cloud")
    try:
        late.link.publish(f"{ROOT}/park/cam-a/cmd", b"marker").wait(5)
        assert late.wait_for(f"{ROOT}/park/cam-a/cmd")
        assert all(t != f"{ROOT}/releases/catdog" for t, _ in late.messages)
    finally:
        late.link.stop()


def test_device_reads_only_its_own_commands_and_the_releases(
    fleet: ProvisionedFleet, secured: SecuredBroker
) -> None:
    bundle_a = secured.provision("park", "cam-a")
    secured.provision("park", "cam-b")
    link = MqttLink(secured.device_endpoint(bundle_a, "park.cam-a"), client_id="cam-a")
    inbox = Inbox(link)
    for topic_filter in (f"{ROOT}/park/cam-b/cmd", f"{ROOT}/#", f"{ROOT}/park/cam-a/cmd"):
        inbox.subscribe(topic_filter)
    link.start(timeout=5)
    cloud = connect(secured.endpoint("cloud", fleet.service_password("cloud")), "cloud")
    try:
        cloud.publish(f"{ROOT}/park/cam-b/cmd", b"for-b").wait(5)
        cloud.publish(f"{ROOT}/park/cam-b/telemetry", b"b-data").wait(5)
        cloud.publish(f"{ROOT}/releases/catdog", b"manifest").wait(5)
        cloud.publish(f"{ROOT}/park/cam-a/cmd", b"for-a").wait(5)
        assert inbox.wait_for(f"{ROOT}/park/cam-a/cmd")
        topics = {t for t, _ in inbox.messages}
        assert f"{ROOT}/releases/catdog" in topics
        assert f"{ROOT}/park/cam-b/cmd" not in topics
        assert f"{ROOT}/park/cam-b/telemetry" not in topics
    finally:
        cloud.stop()
        link.stop()


def test_fleet_service_reads_with_shared_subscriptions_but_cannot_publish(
    fleet: ProvisionedFleet, secured: SecuredBroker
) -> None:
    bundle = secured.provision("park", "cam-a")
    fleet_endpoint = secured.endpoint("fleet", fleet.service_password("fleet"))
    inbox = raw_shared_inbox(fleet_endpoint, f"$share/fleet/{ROOT}/+/+/telemetry", "f1")
    link = connect(fleet_endpoint, "f2")
    device_link = MqttLink(secured.device_endpoint(bundle, "park.cam-a"), client_id="cam-a")
    device_inbox = Inbox(device_link)
    device_inbox.subscribe(f"{ROOT}/park/cam-a/cmd")
    device_inbox.subscribe(f"{ROOT}/releases/+")
    device_link.start(timeout=5)
    cloud = connect(secured.endpoint("cloud", fleet.service_password("cloud")), "cloud")
    try:
        device_link.publish(f"{ROOT}/park/cam-a/telemetry", b"t1").wait(5)
        assert inbox.wait_for(f"{ROOT}/park/cam-a/telemetry")
        link.publish(f"{ROOT}/releases/catdog", b"from-fleet").wait(5)
        link.publish(f"{ROOT}/park/cam-a/cmd", b"from-fleet").wait(5)
        cloud.publish(f"{ROOT}/park/cam-a/cmd", b"from-cloud").wait(5)
        assert device_inbox.wait_for(f"{ROOT}/park/cam-a/cmd")
        assert device_inbox.messages == [(f"{ROOT}/park/cam-a/cmd", b"from-cloud")]
    finally:
        cloud.stop()
        device_link.stop()
        link.stop()
        inbox.stop()


def test_wrong_password_and_unknown_user_are_refused(
    fleet: ProvisionedFleet, secured: SecuredBroker
) -> None:
    bundle = secured.provision("park", "cam-a")
    good = secured.device_endpoint(bundle, "park.cam-a")
    refused(secured.endpoint("park.cam-a", f"{good.password}x"), "wrong")
    refused(secured.endpoint(None, None), "anonymous")
    connect(good, "right").stop()


def test_revoked_and_rotated_credentials_are_refused_after_reload(
    fleet: ProvisionedFleet, secured: SecuredBroker
) -> None:
    bundle_a = secured.provision("park", "cam-a")
    bundle_b = secured.provision("park", "cam-b")
    old_b = secured.device_endpoint(bundle_b, "park.cam-b")
    fleet.provisioner.revoke("park", "cam-a")
    fleet.provisioner.rotate("park", "cam-b", fleet.target("park", "cam-b", secured.address))
    secured.reload()
    refused(secured.device_endpoint(bundle_a, "park.cam-a"), "revoked")
    refused(old_b, "old-b")
    connect(secured.device_endpoint(bundle_b, "park.cam-b"), "new-b").stop()


def test_client_certificate_identity_and_its_revocation(
    fleet: ProvisionedFleet, secured: SecuredBroker
) -> None:
    bundle = secured.provision("park", "cam-c", auth=AuthMethod.CERTIFICATE)
    observer = cloud_inbox(secured)
    device = connect(secured.cert_endpoint(bundle), "cam-c")
    try:
        # The certificate's CN is the username, so the same ACL applies.
        device.publish(f"{ROOT}/park/cam-x/telemetry", b"forged").wait(5)
        device.publish(f"{ROOT}/park/cam-c/telemetry", b"marker").wait(5)
        assert observer.wait_for(f"{ROOT}/park/cam-c/telemetry")
        assert all(t != f"{ROOT}/park/cam-x/telemetry" for t, _ in observer.messages)
    finally:
        device.stop()
        observer.link.stop()
    fleet.provisioner.revoke("park", "cam-c")
    secured.reload()
    refused(secured.cert_endpoint(bundle), "cam-c-revoked")


def test_tls_needs_the_fleet_ca_and_plain_tcp_can_be_off(
    fleet: ProvisionedFleet, secured: SecuredBroker, tmp_path: Path
) -> None:
    bundle = secured.provision("park", "cam-a")
    endpoint = secured.device_endpoint(bundle, "park.cam-a")
    connect(endpoint, "tls-ok").stop()
    # A client trusting another CA refuses the broker's certificate.
    other_ca = ProvisionedFleet(tmp_path / "other").broker_dir / "ca.crt"
    refused(replace(endpoint, ca_file=str(other_ca)), "wrong-ca")
    # Plain MQTT on the TLS port gets no CONNACK: there is no plain listener at all.
    assert plain_connack(endpoint.host, endpoint.port, endpoint.username, endpoint.password) is None


def test_plain_listener_when_enabled_still_needs_credentials(
    fleet: ProvisionedFleet, tmp_path: Path
) -> None:
    plain = free_port()
    broker = SecuredBroker(fleet, tmp_path / "broker", plain_port=plain, mtls=False).start()
    try:
        bundle = broker.provision("park", "cam-a")
        password = (bundle / "mqtt-password").read_text().strip()
        assert plain_connack("127.0.0.1", plain, "park.cam-a", password) == 0
        assert plain_connack("127.0.0.1", plain, "park.cam-a", "nope") not in (None, 0)
    finally:
        broker.close()


def plain_connack(host: str, port: int, username: str | None, password: str | None) -> int | None:
    """The CONNACK reason code a plain-TCP client gets, or None when no MQTT answer comes."""
    result: list[int] = []
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="plain")
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, reason, p: result.append(reason.value)
    try:
        client.connect(host, port, keepalive=5)
    except OSError:
        return None
    for _ in range(30):
        client.loop(timeout=0.1)
        if result:
            break
    client.disconnect()
    return result[0] if result else None
