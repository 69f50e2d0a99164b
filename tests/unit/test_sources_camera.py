"""Camera source on real AVI files written with OpenCV: sampling, motion, corruption, reconnects."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.sources import CameraSourceConfig, Sample, SourceClosed, open_source
from edge_agent.sources.camera import CameraSource, masked_uri
from tests.support.media import (
    corrupt_video_frames,
    moving_frames,
    pet_frames,
    still_frames,
    write_video,
)


def camera(uri: str | int | Path, **kw: object) -> CameraSource:
    target = str(uri) if isinstance(uri, Path) else uri
    config = CameraSourceConfig.model_validate({"type": "camera", "uri": target, **kw})
    source = open_source(config)
    assert isinstance(source, CameraSource)
    return source


def drain(source: CameraSource, limit: int = 1000) -> list[Sample]:
    """Every sample until the source closes; fails if it never does."""
    out: list[Sample] = []
    for _ in range(limit):
        try:
            sample = source.read(1.0)
        except SourceClosed:
            return out
        if sample is not None:
            out.append(sample)
    raise AssertionError(f"source still open after {limit} reads")


def frame_of(sample: Sample) -> np.ndarray:
    assert sample.frame is not None
    return sample.frame


@pytest.fixture
def pet_video(tmp_path: Path, shared_data: Path) -> Path:
    return write_video(tmp_path / "pets.avi", pet_frames(shared_data, 40), fps=10)


def test_file_is_sampled_to_the_configured_rate(pet_video: Path) -> None:
    source = camera(pet_video, fps=2.5, pace="fast", on_end="close")
    samples = drain(source)
    # 40 frames at 10 fps = 4 s of video; 2.5 samples/s take every 4th frame.
    assert len(samples) == 10
    assert source.counters["rate_skipped"] == 30
    assert source.counters["frames_grabbed"] == 40
    assert [s.input_id for s in samples] == [f"frame-{1 + 4 * i:06d}" for i in range(10)]
    for s in samples:
        assert s.frame is not None and s.frame.shape == (120, 160, 3) and s.frame.dtype == np.uint8
        assert s.ts.tzinfo is not None
    # Consecutive samples are different photos, not one frame repeated.
    assert not np.array_equal(frame_of(samples[0]), frame_of(samples[1]))


def test_realtime_pace_follows_the_file_clock(tmp_path: Path) -> None:
    video = write_video(tmp_path / "m.avi", moving_frames(8), fps=10)
    source = camera(video, fps=10, pace="realtime", on_end="close")
    start = time.monotonic()
    samples = drain(source)
    elapsed = time.monotonic() - start
    assert len(samples) == 8
    # The last frame sits at 0.7 s of media time: a real-time replay cannot be quicker.
    assert elapsed >= 0.65


def test_motion_gate_skips_still_scene(tmp_path: Path) -> None:
    frames = still_frames(12) + moving_frames(10)
    video = write_video(tmp_path / "still_then_moving.avi", frames, fps=10)
    source = camera(
        video,
        fps=10,
        pace="fast",
        on_end="close",
        motion={"enabled": True, "max_still_s": None},
    )
    samples = drain(source)
    # The first still frame passes (nothing to compare with); its 11 copies are skipped.
    assert source.counters["motion_skipped"] == 11
    assert len(samples) == 1 + 10
    assert samples[0].input_id == "frame-000001"


def test_motion_gate_lets_a_still_scene_through_periodically(tmp_path: Path) -> None:
    video = write_video(tmp_path / "still.avi", still_frames(30), fps=10)
    source = camera(
        video, fps=10, pace="fast", on_end="close", motion={"enabled": True, "max_still_s": 1.0}
    )
    samples = drain(source)
    # 3 s of a still scene with a 1 s heartbeat: frames at 0, 1 and 2 s.
    assert [s.input_id for s in samples] == ["frame-000001", "frame-000011", "frame-000021"]
    assert source.counters["motion_skipped"] == 27


def test_undecodable_frames_are_counted_never_returned(tmp_path: Path, shared_data: Path) -> None:
    video = write_video(tmp_path / "bad.avi", pet_frames(shared_data, 20), fps=10)
    corrupt_video_frames(video, [4, 9, 15])
    source = camera(video, fps=10, pace="fast", on_end="close")
    samples = drain(source)
    assert source.counters["undecodable_frame"] == 3
    assert len(samples) == 17
    assert all(s.frame is not None and s.frame.mean() > 0 for s in samples)


def test_loop_replays_file_without_reconnecting(tmp_path: Path) -> None:
    video = write_video(tmp_path / "loop.avi", moving_frames(5), fps=10)
    source = camera(video, fps=10, pace="fast", on_end="loop")
    got = [s for s in (source.read(1.0) for _ in range(12)) if s is not None]
    assert len(got) == 12
    assert source.counters["loops"] == 2
    assert source.counters["reconnects"] == 0
    assert np.array_equal(frame_of(got[0]), frame_of(got[5]))
    assert len({s.input_id for s in got}) == 12  # ids keep counting across loops
    source.close()
    with pytest.raises(SourceClosed):
        source.read(0.1)


def test_reconnects_with_capped_backoff_when_file_disappears(tmp_path: Path) -> None:
    frames = moving_frames(6)
    video = write_video(tmp_path / "cam.avi", frames, fps=10)
    source = camera(
        video, fps=10, pace="fast", on_end="reconnect", reconnect_min_s=0.05, reconnect_max_s=0.2
    )
    first = [source.read(1.0) for _ in range(6)]
    assert all(s is not None for s in first)
    video.unlink()  # the camera goes away
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert source.read(0.1) is None
    assert source.counters["stream_ends"] == 1
    assert source.counters["reconnect_failures"] >= 4
    assert source._backoff.ceiling() == pytest.approx(0.2)  # capped
    assert 0.1 <= source._backoff.last_delay_s <= 0.2  # jittered below the cap
    write_video(video, frames, fps=10)  # and comes back
    back = None
    for _ in range(20):
        back = source.read(0.2)
        if back is not None:
            break
    assert back is not None and back.frame is not None
    assert source.counters["reconnects"] == 1
    assert source._backoff.failures == 0
    source.close()


def test_missing_file_at_start_is_counted_not_raised(tmp_path: Path) -> None:
    source = camera(tmp_path / "nothing.avi", on_end="close", reconnect_min_s=0.05)
    assert source.read(0.2) is None
    assert source.counters["open_failures"] >= 1


def test_credentials_never_reach_logs() -> None:
    assert masked_uri("rtsp://admin:s3cret@10.0.0.5:554/stream1") == (
        "rtsp://admin:***@10.0.0.5:554/stream1"
    )
    assert masked_uri(0) == "0"
