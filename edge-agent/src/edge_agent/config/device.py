"""The device YAML: identity, source, model, broker, limits, local API, drift, updates, visits."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, GetCoreSchemaHandler, field_validator, model_validator
from pydantic_core import core_schema

from edge_agent.config.base import ConfigModel
from edge_agent.drift.config import DriftConfig
from edge_agent.features.image_header import DEFAULT_MAX_MEGAPIXELS, MAX_CONFIGURABLE_MEGAPIXELS
from edge_agent.health.config import SensorHealthConfig
from edge_agent.protocol.messages import DeviceKind, Ident
from edge_agent.protocol.topics import DEFAULT_ROOT
from edge_agent.sources import SourceConfig
from edge_agent.updater.config import UpdaterConfig
from edge_agent.visits.config import VisitsConfig

MIB = 1024 * 1024


class SecretError(ValueError):
    """A secret referenced by the config (environment variable or file) cannot be read."""


def _reject_inline(data: Any, key: str, where: str) -> Any:
    if isinstance(data, dict) and key in data:
        raise ValueError(
            f"inline {key} is not allowed in {where}: use {key}_env (an environment "
            f"variable) or {key}_file (a file readable only by the agent)"
        )
    return data


def read_secret(env: str | None, file: Path | None, what: str) -> str | None:
    """The secret's value, from the environment variable or the file, or None if unset."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise SecretError(f"{what}: environment variable {env} is not set")
        return value
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SecretError(f"{what}: cannot read {file}: {e.strerror or e}") from e
    return None


class TlsConfig(ConfigModel):
    """TLS towards the broker; the device certificate is its identity where the broker asks."""

    ca_file: Path = Field(title="CA file", description="PEM bundle that signs the broker.")
    cert_file: Path | None = Field(
        default=None, title="Client certificate", description="PEM certificate of the device."
    )
    key_file: Path | None = Field(
        default=None, title="Client key", description="PEM private key of the device."
    )


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})$")
# Topic root: levels of letters, digits, '-' and '_' separated by single '/'; a '.' or ' '
# would not survive a broker that maps topics to subjects (NATS), '+', '#', '$' are MQTT's.
_TOPIC_ROOT = re.compile(r"^[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*$")


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:1883``) as (host, port); ValueError saying what is wrong."""
    match = _ENDPOINT.fullmatch(text.strip())
    if match is None:
        if text.count(":") > 1 and not text.startswith("["):
            raise ValueError("write an IPv6 address in brackets, e.g. [::1]:1883")
        raise ValueError("not host:port, e.g. 10.0.0.1:1883 or broker-1.site:8883")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    if match["v6"] is not None:
        try:
            return str(ipaddress.IPv6Address(match["v6"])), port
        except ValueError as e:
            raise ValueError(f"{match['v6']!r} is not an IPv6 address") from e
    host = match["host"]
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or IPv4 address")
    return host, port


class BrokerAddress(str):
    """One ``host:port`` entry of ``broker.endpoints``, checked where it stands in the list."""

    __slots__ = ()

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls._check, core_schema.str_schema())

    @classmethod
    def _check(cls, text: str) -> BrokerAddress:
        parse_endpoint(text)
        return cls(text)


class BrokerConfig(ConfigModel):
    """Where the MQTT broker is and how this device logs in. Passwords by reference only."""

    host: str = Field(default="127.0.0.1", min_length=1, title="Host", description="Broker host.")
    port: int = Field(default=1883, ge=1, le=65535, title="Port", description="Broker port.")
    endpoints: list[BrokerAddress] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        title="Endpoints",
        description=(
            "Nodes of a clustered broker as host:port (IPv6 as [::1]:1883), all with the same "
            "login and TLS. The agent connects to one at a time, the first one first, and "
            "moves to the next when the connection is lost or an attempt fails; the back-off "
            "grows only after a whole round failed. Replaces host and port: leave them out "
            "(or let them repeat the first entry)."
        ),
    )
    username: str | None = Field(
        default=None, title="Username", description="MQTT username (usually the device id)."
    )
    password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        title="Password variable",
        description="Environment variable holding the MQTT password.",
    )
    password_file: Path | None = Field(
        default=None, title="Password file", description="File holding the MQTT password."
    )
    tls: TlsConfig | None = Field(default=None, title="TLS", description="TLS settings.")
    keepalive_s: int = Field(
        default=30, ge=5, le=3600, title="Keepalive (s)", description="MQTT keepalive."
    )
    topic_root: str = Field(
        default=DEFAULT_ROOT,
        min_length=1,
        title="Topic root",
        description="Root of the topic tree, e.g. mlops/{site}/{device}/predictions.",
    )
    max_inflight: int = Field(
        default=100,
        ge=1,
        le=65535,
        title="In-flight window",
        description="QoS 1 messages awaiting PUBACK at once (outbox publishing window).",
    )
    reconnect_max_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        title="Reconnect cap (s)",
        description="Longest wait between reconnection attempts (jittered, doubling).",
    )
    resend_window_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        title="Resend window (s)",
        description=(
            "After a reconnection, messages the broker acknowledged this recently are sent "
            "again: a broker killed before saving them to disk loses nothing (receivers drop "
            "the duplicates by seq); a resend command from the fleet reads the same window. "
            "Keep it above the broker's autosave_interval; 0 turns it off."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        return _reject_inline(data, "password", "broker")

    @field_validator("topic_root")
    @classmethod
    def _topic_root_levels(cls, value: str) -> str:
        if not _TOPIC_ROOT.fullmatch(value):
            raise ValueError(
                "use levels of letters, digits, '-' or '_' separated by '/' (no '.', spaces, "
                "'+', '#', '$' or empty levels), e.g. mlops or mlops/prod"
            )
        return value

    @field_validator("endpoints")
    @classmethod
    def _distinct_endpoints(cls, value: list[BrokerAddress] | None) -> list[BrokerAddress] | None:
        if value is None:
            return None
        seen: dict[tuple[str, int], str] = {}
        for text in value:
            host, port = parse_endpoint(text)
            key = (host.lower(), port)
            if key in seen:
                raise ValueError(f"{text!r} is listed twice (as {seen[key]!r} before)")
            seen[key] = text
        return value

    @model_validator(mode="after")
    def _endpoints_or_host(self) -> BrokerConfig:
        if self.endpoints is None or not {"host", "port"} & self.model_fields_set:
            return self
        first = parse_endpoint(self.endpoints[0])
        if (self.host.lower(), self.port) != (first[0].lower(), first[1]):
            raise ValueError(
                f"host:port {self.host}:{self.port} is not the first of endpoints "
                f"({self.endpoints[0]}): leave host and port out when endpoints are set"
            )
        return self

    def addresses(self) -> list[tuple[str, int]]:
        """The broker nodes to connect to, in order: ``endpoints``, or ``host`` and ``port``."""
        if self.endpoints is None:
            return [(self.host, self.port)]
        return [parse_endpoint(text) for text in self.endpoints]

    @model_validator(mode="after")
    def _one_password_source(self) -> BrokerConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set password_env or password_file, not both")
        return self

    def password(self) -> str | None:
        return read_secret(self.password_env, self.password_file, "broker password")


class ModelConfig(ConfigModel):
    """Which model serves: a fixed ONNX file, or the updater's active version."""

    path: Path | None = Field(
        default=None,
        title="Model file",
        description="ONNX file (with its spec in metadata) served when no update is active.",
    )
    name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        title="Model name",
        description=(
            "Registry name whose releases this device takes (its release topic). "
            "Defaults to the name in the model file's spec."
        ),
    )
    version: int = Field(
        default=0,
        ge=0,
        title="Version",
        description="Registry version of the fixed model file (the updater reports its own).",
    )
    threads: int = Field(
        default=1, ge=1, le=64, title="Threads", description="onnxruntime intra-op threads."
    )
    warm_up: bool = Field(
        default=True,
        title="Warm up",
        description="Run one example input at start so the first real frame is not slow.",
    )


class LimitsConfig(ConfigModel):
    """Resource limits and pacing: outbox disk budget, rates, telemetry interval, memory."""

    outbox_path: Path = Field(
        default=Path("/var/lib/edge-agent/outbox.db"),
        title="Outbox file",
        description="SQLite file holding messages until the broker acknowledges them.",
    )
    outbox_budget_mb: float = Field(
        default=64.0,
        gt=0,
        le=100_000,
        title="Outbox budget (MiB)",
        description="Disk the outbox may use; beyond it the oldest telemetry is dropped "
        "first, then the oldest predictions; drift alerts and events last.",
    )
    outbox_sync: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        title="Outbox sync",
        description="SQLite synchronous mode: NORMAL survives a crash of the agent, FULL also "
        "the last messages before a power cut, at an fsync per commit.",
    )
    outbox_commit_interval_s: float = Field(
        default=0.05,
        ge=0,
        le=10,
        title="Outbox commit interval (s)",
        description="Predictions and telemetry are sent at once; what the broker has not "
        "acknowledged this long after the first of a batch (or once 256 wait) is committed "
        "to the outbox in one transaction, and what it acknowledged is never written. A crash "
        "of the agent loses at most this interval of unacknowledged ones. Events (drift "
        "alerts, update events, command acks) are committed before they are sent, as every "
        "message is with 0.",
    )
    replay_rate: float = Field(
        default=0.0,
        ge=0,
        title="Replay rate (msg/s)",
        description="Cap on backlog replay after an outage; 0 lets live traffic take what "
        "it needs and the backlog the rest of the publishing window.",
    )
    max_predictions_per_s: float | None = Field(
        default=None,
        gt=0,
        title="Prediction rate cap",
        description="Most predictions per second published; extra samples are skipped.",
    )
    telemetry_interval_s: float = Field(
        default=15.0,
        ge=0.1,
        le=3600,
        title="Telemetry interval (s)",
        description="Seconds between telemetry messages.",
    )
    memory_limit_mb: float | None = Field(
        default=None,
        gt=0,
        title="Memory limit (MiB)",
        description="Process RSS above which the status turns 'degraded' and a warning is logged.",
    )
    flush_timeout_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        title="Flush timeout (s)",
        description="At shutdown, how long to try emptying the outbox before exiting.",
    )

    @property
    def outbox_budget_bytes(self) -> int:
        return int(self.outbox_budget_mb * MIB)


class ApiConfig(ConfigModel):
    """The local HTTP API for operators (health, metrics, model, predict, drift)."""

    enabled: bool = Field(default=True, title="Enabled", description="Serve the local API.")
    host: str = Field(
        default="127.0.0.1",
        title="Bind address",
        description="Loopback by default; bind wider only behind a firewall.",
    )
    port: int = Field(default=8080, ge=0, le=65535, title="Port", description="0 picks a port.")
    token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        title="Token variable",
        description="Environment variable with the bearer token for state-changing calls.",
    )
    token_file: Path | None = Field(
        default=None, title="Token file", description="File holding the bearer token."
    )
    max_request_mb: float = Field(
        default=8.0, gt=0, le=256, title="Request cap (MiB)", description="Largest request body."
    )
    max_concurrent_predict: int = Field(
        default=2,
        ge=1,
        le=64,
        title="Concurrent /predict",
        description="Requests served at once; more get 503 with Retry-After.",
    )
    max_image_megapixels: float = Field(
        default=DEFAULT_MAX_MEGAPIXELS,
        gt=0,
        le=MAX_CONFIGURABLE_MEGAPIXELS,
        title="Image cap (MP)",
        description="Largest image /predict decodes, read from its header before decoding "
        "(413 beyond). The default takes a 6000x4000 still camera, or a 4K frame (8.3 MP) "
        "with room to spare.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        return _reject_inline(data, "token", "api")

    def token(self) -> str | None:
        return read_secret(self.token_env, self.token_file, "api token")


class LoggingConfig(ConfigModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", title="Level", description="Log level at start (cmd set_log_level)."
    )
    json_lines: bool = Field(
        default=False, title="JSON lines", description="One JSON object per log line."
    )


class DeviceConfig(ConfigModel):
    """One device: who it is, what it reads, what it runs and where it reports."""

    device_id: Ident = Field(title="Device id", description="Unique id, used in topics.")
    site: Ident = Field(title="Site", description="Site id, used in topics.")
    kind: DeviceKind = Field(title="Kind", description="camera or weather.")
    groups: list[Ident] = Field(
        default_factory=list, title="Groups", description="Rollout groups (e.g. canary)."
    )
    source: SourceConfig = Field(title="Source", description="Where samples come from.")
    model: ModelConfig = Field(default_factory=ModelConfig, title="Model", description="Model.")
    broker: BrokerConfig = Field(
        default_factory=BrokerConfig, title="Broker", description="MQTT broker."
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig, title="Limits", description="Resource limits and pacing."
    )
    api: ApiConfig = Field(default_factory=ApiConfig, title="Local API", description="HTTP API.")
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, title="Logging", description="Log level and format."
    )
    drift: DriftConfig | None = Field(
        default=None, title="Drift", description="Drift monitor; absent = not monitored."
    )
    updates: UpdaterConfig | None = Field(
        default=None, title="Updates", description="Model updates; absent = fixed model."
    )
    sensor_health: SensorHealthConfig = Field(
        default_factory=SensorHealthConfig,
        title="Sensor health",
        description="Tests of the station's own sensors (stuck, spike, range, step, "
        "consistency) against the limits in the model's spec; nothing runs for a model "
        "without them.",
    )
    visits: VisitsConfig = Field(
        default_factory=VisitsConfig,
        title="Visits",
        description="Visits of the camera's subject (start and end events with a snapshot) "
        "and which per-frame predictions are published.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeviceConfig:
        source_type = self.source.type
        if self.kind is DeviceKind.CAMERA and source_type != "camera":
            raise ValueError(f"a camera device needs a camera source, not {source_type!r}")
        if self.kind is DeviceKind.WEATHER and source_type == "camera":
            raise ValueError("a weather device needs a station source, not a camera")
        if self.model.path is None and self.updates is None:
            raise ValueError("set model.path, or an updates section whose models_dir holds one")
        if self.visits.upload:
            capture = self.drift.capture if self.drift is not None else None
            if capture is None or not capture.enabled or capture.upload_url is None:
                raise ValueError(
                    "visits.upload sends snapshots through the drift capture's uploader: "
                    "enable drift.capture and set its upload_url"
                )
        return self
