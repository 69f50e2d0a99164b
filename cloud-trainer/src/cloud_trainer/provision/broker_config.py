"""Renders mosquitto.conf for the secured broker: auth, ACL and TLS listeners, no plain TCP."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_trainer.provision.acl import HEALTH_TOPIC
from cloud_trainer.stack.mosquitto import (
    AUTOSAVE_INTERVAL_S,
    MAX_PACKET_BYTES,
    MAX_QUEUED_BYTES,
    MAX_QUEUED_MESSAGES,
)

PASSWD_NAME = "passwd"  # noqa: S105 - a file name
ACL_NAME = "acl"
CA_NAME = "ca.crt"
SERVER_CERT_NAME = "server.crt"
SERVER_KEY_NAME = "server.key"
CRL_NAME = "crl.pem"
HEALTH_PASSWORD_NAME = "health.password"  # noqa: S105 - a file name


@dataclass(frozen=True)
class BrokerLayout:
    """Where the broker finds its files and which ports it opens.

    ``secrets_dir`` holds what ``cloud-trainer broker init`` writes (password file, ACL,
    CA, server certificate, CRL); the compose stack mounts it read-only.
    """

    secrets_dir: str
    data_dir: str | None = None
    tls_port: int = 8883
    mtls_port: int | None = 8884
    bind: str | None = None

    def file(self, name: str) -> str:
        return f"{self.secrets_dir.rstrip('/')}/{name}"


def auth_lines(layout: BrokerLayout) -> list[str]:
    """Global settings: no anonymous clients, the password file and the ACL."""
    return [
        "allow_anonymous false",
        f"password_file {layout.file(PASSWD_NAME)}",
        f"acl_file {layout.file(ACL_NAME)}",
    ]


def tls_lines(layout: BrokerLayout, client_certificates: bool) -> list[str]:
    """Settings of the listener declared just before them (mosquitto applies them to it)."""
    lines = [
        f"cafile {layout.file(CA_NAME)}",
        f"certfile {layout.file(SERVER_CERT_NAME)}",
        f"keyfile {layout.file(SERVER_KEY_NAME)}",
    ]
    if client_certificates:
        lines += [
            f"crlfile {layout.file(CRL_NAME)}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
    return lines


def _listener(port: int, bind: str | None) -> str:
    return f"listener {port}" + (f" {bind}" if bind else "")


def render_mosquitto_conf(layout: BrokerLayout) -> str:
    """The whole config file: TLS with passwords, and mTLS where the CN is the username."""
    lines = [
        "# Mosquitto for the edge-mlops stack, rendered by cloud_trainer.provision.broker_config.",
        "# Authenticated, ACL-checked, TLS only: there is no plain-TCP listener.",
        "per_listener_settings false",
        *auth_lines(layout),
        # Sized on purpose: a fleet consumer's persistent session keeps up to 100,000
        # messages / 256 MiB while it is away; a packet over 512 KiB (a wire message is at
        # most 256 KiB) ends its sender's connection before the broker reads it.
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        "max_inflight_messages 100",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages true",
    ]
    if layout.data_dir:
        lines += [
            "persistence true",
            f"persistence_location {layout.data_dir.rstrip('/')}/",
            # Queues reach the disk this often; devices re-send what was acknowledged
            # within their resend window (30 s) after a broker restart.
            f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        ]
    lines += [
        "",
        "# Devices and services with a username and password.",
        _listener(layout.tls_port, layout.bind),
        *tls_lines(layout, client_certificates=False),
    ]
    if layout.mtls_port is not None:
        lines += [
            "",
            "# Devices with a client certificate signed by the fleet CA.",
            _listener(layout.mtls_port, layout.bind),
            *tls_lines(layout, client_certificates=True),
        ]
    return "\n".join(lines) + "\n"


def healthcheck_shell(layout: BrokerLayout, host: str = "localhost") -> str:
    """The broker's health check: the health identity reads a retained ``$SYS`` topic over TLS.

    In a compose file every ``$`` must be doubled (``compose_escape``).
    """
    return (
        f"mosquitto_sub -h {host} -p {layout.tls_port} --cafile {layout.file(CA_NAME)} "
        f'-u health -P "$(cat {layout.file(HEALTH_PASSWORD_NAME)})" '
        f"-t '{HEALTH_TOPIC}' -C 1 -W 5"
    )


def compose_escape(text: str) -> str:
    return text.replace("$", "$$")
