"""Fixtures for the updater tests: fleet keys, real ONNX versions, artefact servers, a publisher."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloud_trainer.release.artefacts import ArtefactServer, file_digest
from cloud_trainer.release.publisher import (
    ReleaseChannel,
    ReleaseTarget,
    build_manifest,
    read_spec,
)
from edge_agent.comms.mqtt import BrokerEndpoint, MqttLink
from edge_agent.protocol import ReleaseManifest, SigningKey, TopicTree
from edge_agent.updater.boot import ProvisionedModel
from edge_agent.updater.config import UpdaterConfig
from tests.integration.updater_device import Device
from tests.support.onnx_models import image_classifier

_roots = itertools.count()


def catdog_manifest(
    server: ArtefactServer, path: Path, version: int, target: ReleaseTarget | None = None
) -> ReleaseManifest:
    """An unsigned catdog release of ``path``, its file served by ``server`` under a name
    that tells versions and variants apart in the server's folder."""
    sha, size, url = server.publish_file(path, f"catdog-v{version}-{path.stem}.onnx")
    return build_manifest(
        model="catdog",
        version=version,
        sha256=sha,
        size=size,
        url=url,
        spec=read_spec(path),
        target=target or ReleaseTarget(),
        publisher="cloud",
    )


@dataclass
class Fleet:
    """One test's release world: a topic root, keys, an artefact server and a publisher."""

    root: str
    tree: TopicTree
    key: SigningKey
    public_key: Path
    server: ArtefactServer
    link: MqttLink
    channel: ReleaseChannel
    endpoint: BrokerEndpoint
    models: Path

    def model(self, name: str, **options: Any) -> Path:
        path = self.models / f"{name}.onnx"
        image_classifier(path, **options)
        return path

    def manifest(
        self, path: Path, version: int, target: ReleaseTarget | None = None, **changes: Any
    ) -> ReleaseManifest:
        manifest = catdog_manifest(self.server, path, version, target)
        return manifest.model_copy(update=changes) if changes else manifest

    def publish(self, path: Path, version: int, **changes: Any) -> ReleaseManifest:
        return self.channel.publish(self.manifest(path, version, **changes))

    def config(self, workdir: Path, **overrides: Any) -> UpdaterConfig:
        data: dict[str, Any] = {
            "fleet_public_key": self.public_key,
            "models_dir": workdir / "models",
            "disk_budget_mb": 64,
            "max_model_mb": 16,
            "download": {"timeout_s": 5, "attempts": 2, "backoff_s": 0.05},
            "smoke": {"samples": 4, "latency_budget_factor": 0.02},
            "probation": {"frames": 20, "min_samples_to_fail": 5},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return UpdaterConfig.model_validate(data)

    def device(self, workdir: Path, v1: Path, **overrides: Any) -> Device:
        groups = overrides.pop("groups", ())
        device_id = overrides.pop("device_id", "cam-01")
        config = self.config(workdir, **overrides)
        return Device(
            config,
            self.endpoint,
            self.root,
            device_id=device_id,
            groups=tuple(groups),
            provisioned=ProvisionedModel(v1, 1),
        ).start()


def make_fleet(endpoint: BrokerEndpoint, tmp_path: Path) -> Iterator[Fleet]:
    root = f"upd{next(_roots)}-{tmp_path.name[-12:].lower().replace('_', '-')}"
    key = SigningKey.generate()
    key.save(tmp_path / "keys" / "fleet.key", tmp_path / "keys" / "fleet.pub")
    server = ArtefactServer(tmp_path / "artefacts").start()
    link = MqttLink(endpoint, client_id=f"publisher-{root}")
    link.start()
    tree = TopicTree(root)
    fleet = Fleet(
        root,
        tree,
        key,
        tmp_path / "keys" / "fleet.pub",
        server,
        link,
        ReleaseChannel(link, tree, key),
        endpoint,
        tmp_path / "src-models",
    )
    yield fleet
    link.stop()
    server.stop()


@pytest.fixture
def fleet(broker_endpoint: BrokerEndpoint, tmp_path: Path) -> Iterator[Fleet]:
    yield from make_fleet(broker_endpoint, tmp_path)


class FaultyFileServer:
    """Serves one file with honest Range support, misbehaving on purpose.

    ``truncate_first`` requests end after half the body (the connection just closes);
    with ``gate`` set, the first request sends half and then waits for the gate.
    """

    def __init__(self, path: Path, truncate_first: int = 0, gate: threading.Event | None = None):
        self.data = path.read_bytes()
        self.sha, _ = file_digest(path)
        self.truncate_first = truncate_first
        self.gate = gate
        self.requests: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/model.onnx"

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        wanted = handler.headers.get("Range")
        self.requests.append(wanted)
        start = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
        body = self.data[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("ETag", f'"{self.sha}"')
        handler.send_header("Content-Length", str(len(body)))
        if start:
            handler.send_header(
                "Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
            )
        handler.end_headers()
        number = len(self.requests)
        half = len(body) // 2
        if number <= self.truncate_first:
            handler.wfile.write(body[:half])
            handler.wfile.flush()
            handler.close_connection = True
            return
        if self.gate is not None and number == 1:
            handler.wfile.write(body[:half])
            handler.wfile.flush()
            self.gate.wait(30)
            handler.wfile.write(body[half:])
            return
        handler.wfile.write(body)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
