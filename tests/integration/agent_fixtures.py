"""Builds a real agent for tests: a tiny ONNX camera or rain model, its input, an outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.config.device import DeviceConfig
from edge_agent.inference import InferenceEngine
from edge_agent.runtime.agent import EdgeAgent
from edge_agent.sources import open_source
from tests.support.media import generated_frames, write_video
from tests.support.onnx_models import image_classifier, weather_classifier
from tests.support.weather_csv import START, station_rows, write_csv


def _device(
    tmp: Path,
    port: int,
    identity: dict[str, Any],
    source: dict[str, Any],
    model: Path,
    version: int,
    limits: dict[str, Any],
) -> DeviceConfig:
    """A device config with the tests' common broker, outbox, telemetry and API settings."""
    return DeviceConfig.model_validate(
        {
            **identity,
            "source": source,
            "model": {"path": str(model), "version": version},
            "broker": {"host": "127.0.0.1", "port": port},
            "limits": {
                "outbox_path": str(tmp / "outbox.db"),
                "telemetry_interval_s": 0.5,
                "flush_timeout_s": 10,
                **limits,
            },
            "api": {"port": 0},
        }
    )


def camera_config(tmp: Path, port: int, frames: int = 30, **limits: Any) -> DeviceConfig:
    model = tmp / "catdog.onnx"
    if not model.exists():
        image_classifier(model)
    video = write_video(tmp / "gate.avi", generated_frames(frames), fps=10.0)
    source = {"type": "camera", "uri": str(video), "pace": "fast", "fps": 120, "on_end": "close"}
    identity = {"device_id": "cam-01", "site": "park", "kind": "camera"}
    return _device(tmp, port, identity, source, model, 3, limits)


def station_config(
    tmp: Path, port: int, hours: int = 48, speed: float | None = None
) -> DeviceConfig:
    """A weather station replaying ``hours`` synthetic hourly rows (``speed``: see csv_replay)."""
    model = tmp / "rain4h.onnx"
    if not model.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        weather_classifier(model)
    csv_path = write_csv(tmp / "station.csv", station_rows(START, hours))
    # order 'file' streams the rows, as a live station's source does.
    source = {"type": "csv_replay", "path": str(csv_path), "speed": speed, "order": "file"}
    identity = {"device_id": "ws-01", "site": "port", "kind": "weather"}
    return _device(tmp, port, identity, source, model, 5, {})


def build_agent(config: DeviceConfig, with_source: bool = True) -> EdgeAgent:
    assert config.model.path is not None
    engine = InferenceEngine.load(config.model.path)
    agent = EdgeAgent(config, engine, None)
    if with_source:
        agent.source = open_source(config.source, mqtt=agent.link)
    return agent
