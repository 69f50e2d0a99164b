"""The files and devices a device config names that must exist before the agent starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.config.device import DeviceConfig
from edge_agent.sources import CameraSourceConfig, CsvReplaySourceConfig, SerialSourceConfig

PathKind = Literal["file", "directory", "device"]


@dataclass(frozen=True, slots=True)
class RequiredPath:
    """``loc`` is the key path in the YAML; relative paths resolve against the working
    directory, as the agent resolves them when it runs."""

    loc: tuple[str, ...]
    path: Path
    kind: PathKind


def _camera_kind(uri: str) -> PathKind | None:
    if "://" in uri:
        return None  # a stream URL: reachable or not, only `edge-agent doctor` can tell
    return "device" if uri.startswith("/dev/") else "file"


def required_paths(config: DeviceConfig) -> list[RequiredPath]:
    """Paths the agent reads but never creates (outbox, captures and staging it creates)."""
    found: list[RequiredPath] = []

    def need(loc: tuple[str, ...], path: Path | None, kind: PathKind = "file") -> None:
        if path is not None:
            found.append(RequiredPath(loc, path, kind))

    need(("model", "path"), config.model.path)
    source = config.source
    if isinstance(source, CameraSourceConfig) and isinstance(source.uri, str):
        kind = _camera_kind(source.uri)
        if kind is not None:
            need(("source", "uri"), Path(source.uri), kind)
    elif isinstance(source, CsvReplaySourceConfig):
        need(("source", "path"), source.path)
    elif isinstance(source, SerialSourceConfig):
        need(("source", "device"), source.device, "device")
    broker = config.broker
    need(("broker", "password_file"), broker.password_file)
    if broker.tls is not None:
        need(("broker", "tls", "ca_file"), broker.tls.ca_file)
        need(("broker", "tls", "cert_file"), broker.tls.cert_file)
        need(("broker", "tls", "key_file"), broker.tls.key_file)
    if config.api.enabled:
        need(("api", "token_file"), config.api.token_file)
    if config.drift is not None and config.drift.enabled and config.drift.capture.enabled:
        need(("drift", "capture", "token_file"), config.drift.capture.token_file)
    updates = config.updates
    if updates is not None and updates.enabled:
        need(("updates", "fleet_public_key"), updates.fleet_public_key)
        if config.model.path is None:  # then the models directory is the only model source
            need(("updates", "models_dir"), updates.models_dir, "directory")
    return found


def path_problem(required: RequiredPath) -> str | None:
    """Why ``required`` is unusable, or None when it is there and of the right kind."""
    path = required.path
    # The value column shows the path as written; a relative one is resolved for the reader.
    where = "" if path.is_absolute() else f" (looked for {Path.cwd() / path})"
    try:
        exists = path.exists()
        is_dir = path.is_dir()
    except OSError as e:  # a parent without search permission, a name too long
        return f"cannot check it: {e.strerror or e}{where}"
    if not exists:
        return f"no such {required.kind}{where}"
    if required.kind == "directory" and not is_dir:
        return f"not a directory{where}"
    if required.kind != "directory" and is_dir:
        return f"a directory, not a {required.kind}{where}"
    return None
