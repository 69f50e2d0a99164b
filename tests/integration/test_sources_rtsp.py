"""Camera source on a real RTSP/H.264 server (GStreamer) that dies, hangs and comes back."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.stack.mosquitto import free_port
from edge_agent.sources import (
    CameraSourceConfig,
    Sample,
    SourceClosed,
    StreamEvent,
    camera,
    open_source,
)
from edge_agent.sources.camera import (
    MAX_ABANDONED_READERS,
    OPTIONS_ENV,
    CameraSource,
    masked_uri,
)
from tests.support.rtsp_server import RtspServer, h264_clip, rtsp_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return h264_clip(tmp_path_factory.mktemp("rtsp"))


@pytest.fixture
def server(clip: Path) -> Iterator[RtspServer]:
    with RtspServer(clip) as srv:
        yield srv


@pytest.fixture
def cameras() -> Iterator[list[CameraSource]]:
    """Sources a test opens; closed even when it fails."""
    opened: list[CameraSource] = []
    yield opened
    for source in opened:
        source.close()


def live_camera(cameras: list[CameraSource], uri: str, **kw: object) -> CameraSource:
    settings: dict[str, object] = {
        "type": "camera",
        "name": "gate",
        "uri": uri,
        "fps": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "timeout_s": 3,
        "stall_timeout_s": 2,
        **kw,
    }
    source = open_source(CameraSourceConfig.model_validate(settings))
    assert isinstance(source, CameraSource) and not source.is_file
    cameras.append(source)
    return source


def read_until(source: CameraSource, done: Callable[[], bool], seconds: float) -> list[Sample]:
    got: list[Sample] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        sample = source.read(0.2)
        if sample is not None:
            got.append(sample)
    return got


def states(events: list[StreamEvent]) -> list[str]:
    return [e.state for e in events]


def reader_threads(source: CameraSource) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"camera-{source.name}-")]


def test_frames_arrive_from_a_real_rtsp_camera(
    server: RtspServer, cameras: list[CameraSource]
) -> None:
    source = live_camera(cameras, server.url())
    assert source.ffmpeg_options() == "rtsp_transport;tcp|probesize;32|flags;low_delay"
    got = read_until(source, lambda: source.counters["samples"] >= 10, 20)
    assert len(got) == 10
    frames = [s.frame for s in got if s.frame is not None]
    assert len(frames) == 10 and all(f.shape == (240, 320, 3) for f in frames)
    assert all(s.ts.tzinfo is not None for s in got)
    assert [s.input_id for s in got] == sorted({s.input_id for s in got})
    assert not np.array_equal(frames[0], frames[1])  # a moving scene, not one frame
    c = source.counters
    # 15 fps sampled to 5: the reader grabs every frame, two in three are skipped.
    assert c["frames_grabbed"] >= 2 * c["samples"]
    assert c["open_failures"] == c["undecodable_frame"] == 0
    assert source.pop_events() == []
    assert len(reader_threads(source)) == 1


def test_without_fast_start_frames_arrive_and_the_options_stay_with_rtsp_opens(
    server: RtspServer, cameras: list[CameraSource]
) -> None:
    source = live_camera(cameras, server.url(), rtsp_fast_start=False)
    assert source.ffmpeg_options() == "rtsp_transport;tcp"
    assert read_until(source, lambda: source.counters["samples"] >= 2, 20)
    if camera._CAPTURE_OPTIONS.operator_value is None:
        assert OPTIONS_ENV not in os.environ  # other code opening a video meets the defaults
    http = CameraSourceConfig(type="camera", uri=f"http://127.0.0.1:{server.port}/cam.avi")
    assert CameraSource(http).ffmpeg_options() is None


def test_a_killed_camera_is_lost_then_restored(
    server: RtspServer, cameras: list[CameraSource]
) -> None:
    source = live_camera(cameras, server.url())
    c = source.counters
    before = read_until(source, lambda: c["samples"] >= 3, 20)
    assert len(before) == 3
    server.kill()
    read_until(source, lambda: c["stream_lost"] >= 1, 20)
    lost = source.pop_events()
    assert states(lost) == ["lost"] and c["stream_ends"] >= 1
    assert lost[0].source == "gate" and lost[0].at.tzinfo is not None
    assert lost[0].down_s is None
    # While it is down, reconnects fail (counted, one event for the whole outage).
    assert read_until(source, lambda: c["reconnect_failures"] >= 3, 20) == []
    assert source.pop_events() == []
    server.start()
    again = read_until(source, lambda: c["stream_restored"] >= 1 and c["samples"] >= 5, 20)
    assert again and again[0].input_id > before[-1].input_id
    restored = source.pop_events()
    assert states(restored) == ["restored"]
    assert restored[0].down_s is not None and restored[0].down_s > 0
    assert c["reconnects"] == 1 and c["stream_frozen"] == 0
    assert source._backoff.failures == 0


def test_a_frozen_camera_is_noticed_and_recovers_after_it_resumes(
    server: RtspServer, cameras: list[CameraSource]
) -> None:
    source = live_camera(cameras, server.url())
    c = source.counters
    assert len(read_until(source, lambda: c["samples"] >= 3, 20)) == 3
    server.freeze()
    slowest = 0.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and c["stream_frozen"] == 0:
        started = time.monotonic()
        assert source.read(0.2) is None or c["stream_frozen"] == 0
        slowest = max(slowest, time.monotonic() - started)
    frozen = source.pop_events()
    assert states(frozen) == ["frozen"]
    assert c["readers_abandoned"] >= 1 and c["stream_lost"] == 0
    assert slowest < 1.0  # read() keeps its timeout while OpenCV hangs in the reader
    # Stalled readers are capped: never more than the cap plus the live one.
    read_until(source, lambda: False, 3)
    assert len(reader_threads(source)) <= MAX_ABANDONED_READERS + 1
    server.thaw()
    again = read_until(source, lambda: c["stream_restored"] >= 1 and c["samples"] >= 4, 20)
    assert again
    restored = source.pop_events()
    assert states(restored) == ["restored"]
    assert restored[0].down_s is not None and restored[0].down_s >= 2  # the stall timeout
    source.close()
    # Every reader, stalled ones included, ends once OpenCV returns (timeout_s = 3 s).
    deadline = time.monotonic() + 10
    while reader_threads(source) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reader_threads(source) == []


def test_credentials_never_reach_logs_counters_or_events(
    server: RtspServer, cameras: list[CameraSource], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = live_camera(cameras, server.url("user:s3cret"))
    c = source.counters
    assert read_until(source, lambda: c["samples"] >= 2, 20)  # the server ignores the login
    server.kill()
    read_until(source, lambda: c["reconnect_failures"] >= 1, 20)
    server.start()
    read_until(source, lambda: c["stream_restored"] >= 1, 20)
    events = source.pop_events()
    assert states(events) == ["lost", "restored"]
    assert all("user:***@" in e.detail for e in events)
    assert "user:***@127.0.0.1" in caplog.text  # the logs name the camera, masked
    assert "s3cret" not in caplog.text
    assert not [r for r in caplog.records if "s3cret" in r.getMessage()]
    assert not [name for name in c if "s3cret" in name]
    assert not [e for e in events if "s3cret" in repr(e)]
    assert masked_uri("rtsp://user:s3@cret@cam:554/x?a=b@c") == "rtsp://user:***@cam:554/x?a=b@c"


def test_a_camera_set_to_close_ends_when_its_stream_stops(
    server: RtspServer, cameras: list[CameraSource]
) -> None:
    source = live_camera(cameras, server.url(), on_end="close")
    assert read_until(source, lambda: source.counters["samples"] >= 2, 20)
    server.kill()
    deadline = time.monotonic() + 20
    with pytest.raises(SourceClosed, match="stopped sending"):  # noqa: PT012 - read until it ends
        while time.monotonic() < deadline:
            source.read(0.2)
    assert states(source.pop_events()) == ["lost"]
    with pytest.raises(SourceClosed):
        source.read(0.1)


def test_a_camera_that_never_answers_counts_open_failures_without_events(
    cameras: list[CameraSource],
) -> None:
    source = live_camera(cameras, f"rtsp://127.0.0.1:{free_port()}/cam")  # nothing listens
    read_until(source, lambda: source.counters["open_failures"] >= 2, 10)
    assert source.counters["open_failures"] >= 2
    assert source.counters["samples"] == 0
    assert source.pop_events() == []  # nothing was lost: it never came up
