"""Builds a real agent for tests: a tiny ONNX camera model, a video file, a broker, an outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.config.device import DeviceConfig
from edge_agent.inference import InferenceEngine
from edge_agent.runtime.agent import EdgeAgent
from edge_agent.sources import open_source
from tests.support.media import generated_frames, write_video
from tests.support.onnx_models import image_classifier


def camera_config(tmp: Path, port: int, frames: int = 30, **limits: Any) -> DeviceConfig:
    model = tmp / "catdog.onnx"
    if not model.exists():
        image_classifier(model)
    video = write_video(tmp / "gate.avi", generated_frames(frames), fps=10.0)
    return DeviceConfig.model_validate(
        {
            "device_id": "cam-01",
            "site": "park",
            "kind": "camera",
            "source": {
                "type": "camera",
                "uri": str(video),
                "pace": "fast",
                "fps": 120,
                "on_end": "close",
            },
            "model": {"path": str(model), "version": 3},
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


def build_agent(config: DeviceConfig, with_source: bool = True) -> EdgeAgent:
    assert config.model.path is not None
    engine = InferenceEngine.load(config.model.path)
    agent = EdgeAgent(config, engine, None)
    if with_source:
        agent.source = open_source(config.source, mqtt=agent.link)
    return agent
