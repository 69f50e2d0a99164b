"""Settings of the fleet service (pydantic): database, broker, HTTP, limits, retention, policy."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.config.base import ConfigModel
from edge_agent.config.device import BrokerAddress, parse_endpoint
from edge_agent.protocol import check_ident

MiB = 1024 * 1024


class FleetSettings(ConfigModel):
    """Everything ``cloud-trainer fleet serve`` needs; defaults suit one box."""

    database_url: str = Field(
        default="sqlite:///fleet.db",
        title="Database URL",
        description="sqlite:///path.db (default) or postgresql://user@host/db.",
    )
    broker_host: str = Field(default="127.0.0.1", title="Broker host", description="MQTT broker.")
    broker_port: int = Field(default=1883, ge=1, le=65535, title="Broker port", description="")
    broker_endpoints: list[BrokerAddress] = Field(
        default_factory=list,
        max_length=16,
        title="More broker nodes",
        description=(
            "Further nodes of a clustered broker as host:port, same login and TLS: the "
            "service's MQTT session (commands, releases) moves to the next when its node dies."
        ),
    )
    broker_username: str | None = Field(
        default=None, title="Broker username", description="The fleet identity (e.g. 'fleet')."
    )
    broker_password_file: Path | None = Field(
        default=None,
        title="Broker password file",
        description="File holding the broker password (never the password itself).",
    )
    broker_password_env: str | None = Field(
        default=None,
        title="Broker password variable",
        description="Environment variable holding the broker password.",
    )
    broker_ca_file: Path | None = Field(
        default=None,
        title="Broker CA",
        description="CA certificate (PEM): when set, the broker is reached over TLS.",
    )
    root: str = Field(default="mlops", title="Topic root", description="Root of the topic tree.")
    group: str = Field(
        default="fleet",
        title="Shared subscription group",
        description="Instances in one group split the device messages between them.",
    )
    instance: str = Field(
        default="a",
        title="Instance name",
        description=(
            "Names this instance's broker session (client id fleet-{root}-{group}-{instance}). "
            "Keep it the same across restarts, so the broker keeps what arrives meanwhile; "
            "two instances running at once need different names."
        ),
    )
    subscription: Literal["plain", "shared"] = Field(
        default="plain",
        title="Subscription",
        description=(
            "plain: one instance on a persistent session; nothing is lost across broker or "
            "service restarts. shared: $share/{group}/... splits the load between instances, "
            "but Mosquitto does not restore shared subscriptions after its own restart, so "
            "what devices send before the instances re-subscribe is lost."
        ),
    )
    source: Literal["mqtt", "jetstream"] = Field(
        default="mqtt",
        title="Device message source",
        description=(
            "mqtt: device channels over the MQTT subscription above. jetstream: from a "
            "replicated JetStream stream that every instance shares (a NATS cluster); MQTT "
            "then carries only releases and rollout records."
        ),
    )
    nats_urls: list[str] = Field(
        default_factory=list,
        title="NATS servers",
        description="nats://host:port of the cluster's nodes (source: jetstream).",
    )
    jetstream_stream: str = Field(
        default="FLEET", title="JetStream stream", description="Created or updated on start."
    )
    jetstream_replicas: int | None = Field(
        default=None, ge=1, le=5, title="Stream replicas", description="Default min(3, nodes)."
    )
    jetstream_max_age_s: float = Field(
        default=7 * 86400.0, gt=0, title="Stream max age", description="Oldest kept message."
    )
    jetstream_max_bytes: int = Field(
        default=1024**3, gt=0, title="Stream max bytes", description="Oldest dropped past it."
    )
    jetstream_resend_on_leader_move: bool = Field(
        default=True,
        title="Resend on leader move",
        description=(
            "When the stream's leader moves, ask the devices heard from lately to resend "
            "what their broker acknowledged meanwhile (NATS acknowledges MQTT before storing)."
        ),
    )
    jetstream_ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        title="Stream ack wait",
        description="Unacknowledged this long (a dead instance), a message goes to another.",
    )
    http_host: str = Field(default="127.0.0.1", title="HTTP host", description="Bind address.")
    http_port: int = Field(default=8080, ge=0, le=65535, title="HTTP port", description="")
    api_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        title="API tokens",
        description="Name → bearer token; the name is recorded as who changed what.",
    )
    viewer_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        title="Viewer tokens",
        description="Name → bearer token that may read everything but change nothing.",
    )
    samples_dir: Path = Field(
        default=Path("fleet-samples"),
        title="Samples folder",
        description="Where uploaded samples are stored, one folder per device.",
    )
    max_sample_bytes: int = Field(
        default=8 * MiB, gt=0, title="Sample size cap", description="Largest sample file."
    )
    max_json_bytes: int = Field(
        default=64 * 1024, gt=0, title="JSON body cap", description="Largest JSON request body."
    )
    devices_cache_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        title="Device listing cache",
        description=(
            "GET /api/devices answers the same query from memory for this long unless this "
            "instance stored something since (other instances' writes show within it); 0: "
            "every request reads the database."
        ),
    )
    max_concurrent_requests: int = Field(
        default=32,
        ge=1,
        title="Concurrent requests",
        description="Beyond this, requests get 503 with Retry-After instead of queueing.",
    )
    offline_after_s: float = Field(
        default=120.0, gt=0, title="Offline after", description="Silence that means offline."
    )
    bucket_s: float = Field(
        default=60.0, gt=0, title="Prediction bucket", description="Summary bucket width."
    )
    telemetry_retention_s: float = Field(default=14 * 86400.0, gt=0, title="Telemetry kept")
    predictions_retention_s: float = Field(default=90 * 86400.0, gt=0, title="Summaries kept")
    policy_file: Path | None = Field(
        default=None, title="Policy file", description="YAML rules; default: notify only."
    )
    release_signing_key: Path | None = Field(
        default=None, title="Release signing key", description="Lets operators promote/roll back."
    )
    release_public_keys: list[Path] = Field(
        default_factory=list,
        title="Release keys",
        description="PEM public keys; when set, unsigned or mis-signed manifests are refused.",
    )

    @field_validator("group")
    @classmethod
    def _group_is_ident(cls, value: str) -> str:
        return check_ident(value, "shared subscription group")

    @field_validator("instance")
    @classmethod
    def _instance_is_ident(cls, value: str) -> str:
        return check_ident(value, "instance name")

    @field_validator("nats_urls")
    @classmethod
    def _nats_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("nats://", "tls://")) or len(url.split("://", 1)[1]) == 0:
                raise ValueError(f"NATS server {url!r} must be a nats://host:port URL")
        return value

    @model_validator(mode="after")
    def _jetstream_has_servers(self) -> FleetSettings:
        if self.source == "jetstream" and not self.nats_urls:
            raise ValueError("source jetstream needs nats_urls (--nats nats://host:4222,...)")
        return self

    def broker_endpoint(self) -> BrokerEndpoint:
        """Where and as whom to connect; the password is read from its file or variable."""
        password = None
        if self.broker_password_file is not None:
            try:
                password = self.broker_password_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(f"cannot read broker password file: {e}") from e
        elif self.broker_password_env is not None:
            password = os.environ.get(self.broker_password_env)
            if password is None:
                raise ValueError(f"broker password variable {self.broker_password_env} is not set")
        return BrokerEndpoint(
            self.broker_host,
            self.broker_port,
            username=self.broker_username,
            password=password,
            ca_file=str(self.broker_ca_file) if self.broker_ca_file is not None else None,
        )

    def broker_nodes(self) -> list[BrokerEndpoint]:
        """``broker_endpoint()`` first, then each of ``broker_endpoints`` it does not repeat."""
        first = self.broker_endpoint()
        nodes = [first]
        for address in self.broker_endpoints:
            host, port = parse_endpoint(address)
            if (host, port) not in {(n.host, n.port) for n in nodes}:
                nodes.append(
                    BrokerEndpoint(
                        host,
                        port,
                        username=first.username,
                        password=first.password,
                        ca_file=first.ca_file,
                    )
                )
        return nodes

    def token_holder(self, presented: str) -> tuple[str, Literal["operator", "viewer"]] | None:
        """Name and role of the token presented; every token is compared, in constant time."""
        found: tuple[str, Literal["operator", "viewer"]] | None = None
        viewer = _token_match(self.viewer_tokens, presented)
        if viewer is not None:
            found = (viewer, "viewer")
        operator = self.token_owner(presented)
        if operator is not None:
            found = (operator, "operator")
        return found

    def token_owner(self, presented: str) -> str | None:
        """The operator name of the token presented, compared in constant time; None if unknown."""
        return _token_match(self.api_tokens, presented)


def _token_match(tokens: dict[str, SecretStr], presented: str) -> str | None:
    """Hashes first so the comparison takes as long whatever the lengths; no early exit."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for name, token in tokens.items():
        expected = hashlib.sha256(token.get_secret_value().encode()).digest()
        if hmac.compare_digest(digest, expected):
            found = name
    return found


def parse_tokens(text: str) -> dict[str, SecretStr]:
    """``name=token`` pairs separated by commas or new lines (the FLEET_API_TOKENS format)."""
    tokens: dict[str, SecretStr] = {}
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, token = item.partition("=")
        if not sep or not name.strip() or len(token.strip()) < 16:
            raise ValueError(
                f"token entry {name.strip() or '?'!r}: use name=token with a token of at "
                "least 16 characters"
            )
        tokens[name.strip()] = SecretStr(token.strip())
    return tokens


def new_token() -> str:
    return secrets.token_urlsafe(24)
