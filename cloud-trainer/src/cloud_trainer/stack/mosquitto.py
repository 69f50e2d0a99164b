"""Runs a private Mosquitto broker on a free loopback port, for the embedded stack and tests."""

from __future__ import annotations

import logging
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cloud_trainer.stack import process

log = logging.getLogger(__name__)

# Broker limits, shared with the rendered production config (provision.broker_config).
# A wire message is at most 256 KiB (protocol.codec.MAX_PAYLOAD_BYTES) plus its topic.
MAX_PACKET_BYTES = 512 * 1024
# Per client: a fleet consumer away for a while keeps this much queued for it.
MAX_QUEUED_MESSAGES = 100_000
MAX_QUEUED_BYTES = 256 * 1024 * 1024
# Mosquitto writes its queues to disk this often; devices re-send what the broker
# acknowledged within their resend window (30 s), which must stay above it.
AUTOSAVE_INTERVAL_S = 10

_SEARCH = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


class BrokerUnavailable(RuntimeError):
    """Mosquitto is not installed or did not start."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or BrokerUnavailable saying how to install it."""
    return process.find_binary(
        "mosquitto", _SEARCH, BrokerUnavailable, "apt-get install mosquitto mosquitto-clients"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class MosquittoBroker(process.Service):
    """A Mosquitto process with its own config in a temporary directory.

    Anonymous by default; pass ``extra_config`` lines (password_file, acl_file, TLS
    listeners) for the secured stack. The queue and size limits are the constants above,
    which the rendered production config (``provision.broker_config``) uses too: a slow or
    absent persistent subscriber keeps up to 100,000 messages, and a packet over
    ``max_packet_bytes`` ends its sender's connection before the broker reads it.
    """

    host: str = "127.0.0.1"
    port: int = 0
    allow_anonymous: bool = True
    extra_config: list[str] = field(default_factory=list)
    persistence: bool = False
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    max_packet_bytes: int = MAX_PACKET_BYTES  # 0: no limit (to test clients' own limits)
    workdir: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    @property
    def config_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mosquitto.log"

    def _write_config(self) -> None:
        assert self.workdir is not None
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {MAX_QUEUED_BYTES}",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
        ]
        if self.max_packet_bytes:
            lines.append(f"max_packet_size {self.max_packet_bytes}")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            ]
        lines += self.extra_config
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        binary = find_mosquitto()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mosquitto-")
            self.workdir = Path(self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        self._write_config()
        proc = self._proc = process.spawn([binary, "-c", str(self.config_path)], self.log_path)

        def exited() -> None:
            if proc.poll() is not None:
                raise BrokerUnavailable(
                    f"mosquitto exited with code {proc.returncode}: {self.tail_log()}"
                )

        if process.wait_until(
            lambda: process.port_open(self.host, self.port), timeout, check=exited, interval=0.05
        ):
            log.info("mosquitto listening on %s:%s", self.host, self.port)
            return self
        self.stop()
        raise BrokerUnavailable(
            f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s"
        )

    def tail_log(self, lines: int = 20) -> str:
        return process.tail_log(self.log_path, lines)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Terminate the broker (kill it if it does not stop within 5 s)."""
        process.stop_process(self._proc, 5)
        self._proc = None

    def kill(self) -> None:
        """Kill -9, as a power cut or a crash would."""
        process.kill_process(self._proc, 5)
        self._proc = None

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start again on the same port and config (after ``stop`` or ``kill``)."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
