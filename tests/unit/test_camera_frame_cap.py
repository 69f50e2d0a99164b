"""The camera's pixel cap on real AVI files: a stream of frames over it is never read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.sources import CameraSourceConfig, open_source
from edge_agent.sources.camera import CameraSource
from tests.support.media import generated_frames, write_video


def _camera(video: Path, **kw: object) -> CameraSource:
    config = CameraSourceConfig.model_validate(
        {"type": "camera", "uri": str(video), "pace": "fast", "on_end": "close", **kw}
    )
    source = open_source(config)
    assert isinstance(source, CameraSource)
    return source


def test_a_stream_over_the_cap_is_not_opened_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = write_video(tmp_path / "big.avi", generated_frames(5, (640, 480)), fps=10)
    source = _camera(video, max_megapixels=0.2, reconnect_min_s=0.05)
    with caplog.at_level(logging.ERROR, logger="edge_agent.sources.camera"):
        assert source.read(0.3) is None
    source.close()
    assert source.counters["oversized_stream"] >= 1
    assert source.counters["samples"] == 0 and source.counters["frames_grabbed"] == 0
    assert "sends 640x480 frames (0.3 MP), over max_megapixels 0.2" in caplog.text


def test_frames_within_the_cap_flow(tmp_path: Path) -> None:
    video = write_video(tmp_path / "ok.avi", generated_frames(5, (640, 480)), fps=10)
    source = _camera(video, max_megapixels=0.31)
    sample = source.read(2.0)
    source.close()
    assert sample is not None and sample.frame is not None
    assert sample.frame.shape == (480, 640, 3)
    assert source.counters["oversized_stream"] == 0


def test_the_default_cap_takes_a_4k_camera_twice_over() -> None:
    config = CameraSourceConfig.model_validate({"type": "camera", "uri": 0})
    assert config.max_megapixels * 1e6 >= 2 * 3840 * 2160
