"""Device agents for the loop: their config files and their processes (``edge-agent run``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.comms.mqtt import BrokerEndpoint
from edge_agent.config.loader import load_config

log = logging.getLogger(__name__)


def device_config(
    *,
    device_id: str,
    site: str,
    kind: str,
    source: dict[str, Any],
    model_name: str,
    model_path: Path,
    model_version: int,
    broker: BrokerEndpoint,
    fleet_public_key: Path,
    data_dir: Path,
    groups: list[str],
    drift: dict[str, Any] | None = None,
    visits: dict[str, Any] | None = None,
    probation_frames: int = 20,
    telemetry_interval_s: float = 2.0,
) -> dict[str, Any]:
    """A device YAML as an operator would write it, for one agent of the local loop."""
    config: dict[str, Any] = {
        "device_id": device_id,
        "site": site,
        "kind": kind,
        "groups": groups,
        "source": source,
        "broker": {"host": broker.host, "port": broker.port},
        "model": {"path": str(model_path), "version": model_version, "name": model_name},
        "limits": {
            "outbox_path": str(data_dir / "outbox.db"),
            "telemetry_interval_s": telemetry_interval_s,
        },
        "api": {"enabled": False},
        "updates": {
            "fleet_public_key": str(fleet_public_key),
            "models_dir": str(data_dir / "models"),
            "probation": {"frames": probation_frames},
        },
    }
    if drift is not None:
        config["drift"] = drift
    if visits is not None:
        config["visits"] = visits
    return config


@dataclass
class AgentProcess:
    """One ``edge-agent run`` in its own process, as on a device."""

    name: str
    config_path: Path
    log_path: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def write(cls, name: str, config: dict[str, Any], folder: Path) -> AgentProcess:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        load_config(path)  # the agent's own validation, before anything starts
        return cls(name, path, folder / f"{name}.log")

    def start(self) -> AgentProcess:
        log_file = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(self.config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log_file.close()
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (the agent flushes its outbox), then SIGKILL if it does not exit."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        return self._proc.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
