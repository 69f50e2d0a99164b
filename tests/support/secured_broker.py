"""A real Mosquitto running on the files `cloud-trainer broker init` / `device provision` write."""

from __future__ import annotations

import os
import pwd
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.provision import broker_config as files
from cloud_trainer.provision.broker_config import BrokerLayout, auth_lines, tls_lines
from cloud_trainer.provision.bundle import BrokerAddress
from cloud_trainer.provision.provisioner import BundleTarget, DeviceRequest, Provisioner
from cloud_trainer.provision.registry import AuthMethod, DeviceKind
from cloud_trainer.stack.mosquitto import MosquittoBroker, free_port
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import SigningKey


def broker_user_lines() -> list[str]:
    """Keep mosquitto as the current user: run as root it would drop to 'mosquitto' and lose
    access to the 0640/0600 files the provisioner writes in the test's temp folder."""
    return [f"user {pwd.getpwuid(os.getuid()).pw_name}"]


@dataclass
class ProvisionedFleet:
    """A provisioning state folder with a CA, the service identities and a fleet key."""

    root: Path
    topic_root: str = "mlops"
    provisioner: Provisioner = field(init=False)
    fleet_key_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.provisioner = Provisioner(self.root / "state", self.topic_root)
        self.provisioner.init_broker(["127.0.0.1"])
        self.fleet_key_path = self.root / "fleet-public.pem"
        SigningKey.generate().save(self.root / "fleet.key", self.fleet_key_path)

    @property
    def broker_dir(self) -> Path:
        return self.provisioner.state.broker

    def service_password(self, name: str) -> str:
        return self.provisioner.state.service_password(name).read_text().strip()

    def target(self, site: str, device: str, broker: BrokerAddress) -> BundleTarget:
        return BundleTarget(self.root / "bundles" / f"{site}.{device}", broker, self.fleet_key_path)

    def provision(
        self,
        site: str,
        device: str,
        broker: BrokerAddress,
        auth: AuthMethod = AuthMethod.PASSWORD,
    ) -> Path:
        request = DeviceRequest(site, device, DeviceKind.CAMERA, auth=auth)
        target = self.target(site, device, broker)
        self.provisioner.provision(request, target)
        return target.out_dir


@dataclass
class SecuredBroker:
    """Mosquitto with the generated password file, ACL and TLS; optional mTLS and plain ports."""

    fleet: ProvisionedFleet
    workdir: Path
    plain_port: int | None = None
    mtls: bool = True
    broker: MosquittoBroker = field(init=False)
    mtls_port: int = 0

    def start(self) -> SecuredBroker:
        layout = BrokerLayout(str(self.fleet.broker_dir), None)
        extra = [*auth_lines(layout)[1:], *broker_user_lines()]
        extra.append(f"pid_file {self.workdir / 'mosquitto.pid'}")
        # The broker's own listener (written first by MosquittoBroker) becomes the TLS one.
        extra += tls_lines(layout, client_certificates=False)
        if self.mtls:
            self.mtls_port = free_port()
            extra += [f"listener {self.mtls_port} 127.0.0.1"]
            extra += tls_lines(layout, client_certificates=True)
        if self.plain_port is not None:
            extra += [f"listener {self.plain_port} 127.0.0.1"]
        self.broker = MosquittoBroker(
            workdir=self.workdir, allow_anonymous=False, extra_config=extra
        )
        self.broker.start()
        return self

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.broker.port, self.mtls_port, self.fleet.topic_root)

    def provision(self, site: str, device: str, auth: AuthMethod = AuthMethod.PASSWORD) -> Path:
        """Provision a device and reload the broker, as an operator would."""
        bundle = self.fleet.provision(site, device, self.address, auth)
        self.reload()
        return bundle

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the password file, ACL and CRL, as after a revocation."""
        pid = int((self.workdir / "mosquitto.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.5)

    def endpoint(self, username: str | None, password: str | None) -> BrokerEndpoint:
        return BrokerEndpoint(
            "127.0.0.1",
            self.broker.port,
            username=username,
            password=password,
            ca_file=str(self.fleet.broker_dir / files.CA_NAME),
        )

    def device_endpoint(self, bundle: Path, username: str) -> BrokerEndpoint:
        password = (bundle / "mqtt-password").read_text().strip()
        return BrokerEndpoint(
            "127.0.0.1",
            self.broker.port,
            username=username,
            password=password,
            ca_file=str(bundle / "ca.crt"),
        )

    def cert_endpoint(self, bundle: Path) -> BrokerEndpoint:
        return BrokerEndpoint(
            "127.0.0.1",
            self.mtls_port,
            ca_file=str(bundle / "ca.crt"),
            cert_file=str(bundle / "client.crt"),
            key_file=str(bundle / "client.key"),
        )

    def close(self) -> None:
        self.broker.close()


@dataclass
class Inbox:
    """Everything one authenticated client receives, for asserting what did (not) arrive."""

    link: MqttLink
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    raw: paho.Client | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def subscribe(self, topic_filter: str) -> None:
        self.link.subscribe(topic_filter, self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append((topic, payload))
            self._cond.notify_all()

    def wait_for(self, predicate_topic: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(t == predicate_topic for t, _ in self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self) -> None:
        self.link.stop()
        if self.raw is not None:
            self.raw.disconnect()
            self.raw.loop_stop()


def raw_shared_inbox(endpoint: BrokerEndpoint, shared_filter: str, client_id: str) -> Inbox:
    """An Inbox fed by a plain paho client subscribed to ``$share/...``: MqttLink matches
    handlers against the filter as written, which no topic matches with its share prefix."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(endpoint.username, endpoint.password)
    client.tls_set(ca_certs=endpoint.ca_file)
    inbox = Inbox(MqttLink(endpoint, client_id=f"{client_id}-unused"))
    subscribed = threading.Event()
    client.on_connect = lambda c, u, f, r, p: c.subscribe(shared_filter, qos=1)
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    client.on_message = lambda c, u, msg: inbox._on_message(msg.topic, bytes(msg.payload))
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    if not subscribed.wait(5):
        raise AssertionError(f"no SUBACK for {shared_filter}")
    inbox.raw = client
    return inbox
