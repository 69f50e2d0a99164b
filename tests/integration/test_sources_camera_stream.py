"""Camera source on a network stream (HTTP over loopback) that drops and comes back."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.sources import CameraSourceConfig, Sample, open_source
from edge_agent.sources.camera import CameraSource
from tests.support.media import moving_frames, write_video

pytestmark = pytest.mark.integration


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class VideoServer:
    """Serves one folder over HTTP on a fixed loopback port; can be stopped and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(self.folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VideoServer]:
    write_video(tmp_path / "cam.avi", moving_frames(20), fps=10)
    srv = VideoServer(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def read_until(source: CameraSource, done: Callable[[], bool], seconds: float) -> list[Sample]:
    got: list[Sample] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        sample = source.read(0.1)
        if sample is not None:
            got.append(sample)
    return got


def test_stream_drop_reconnects_with_backoff(server: VideoServer) -> None:
    config = CameraSourceConfig(
        type="camera",
        uri=f"http://127.0.0.1:{server.port}/cam.avi",
        fps=120,
        on_end="reconnect",
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        timeout_s=2,
    )
    source = open_source(config)
    assert isinstance(source, CameraSource) and not source.is_file
    c = source.counters
    first = read_until(source, lambda: c["stream_ends"] >= 1, 10)
    assert first and c["frames_grabbed"] >= 20  # the whole file, maybe a reopened start
    assert c["samples"] + c["rate_skipped"] + c["motion_skipped"] == c["frames_grabbed"]
    server.stop()  # the camera drops off the network
    read_until(source, lambda: c["reconnect_failures"] >= 3, 10)
    assert c["reconnect_failures"] >= 3
    assert source._backoff.ceiling() <= 0.2
    before = c["reconnects"]
    seen = c["samples"]
    server.start()  # and comes back on the same address
    again = read_until(source, lambda: c["reconnects"] > before and c["samples"] > seen, 10)
    assert c["reconnects"] == before + 1 and again
    assert again[0].input_id > first[-1].input_id  # ids keep counting across reconnects
    assert source._backoff.failures == 0
    source.close()
