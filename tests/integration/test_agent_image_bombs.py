"""Decompression bombs posted to the real agent API: refused from the header, fast, no memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx
import psutil
import pytest

from edge_agent.api import ApiServer, create_app
from edge_agent.runtime.agent import EdgeAgent
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.support.image_bombs import bmp_bomb, gif_bomb, jpeg_bomb, png_bomb, webp_bomb
from tests.support.onnx_models import red_frame

pytestmark = pytest.mark.integration
RSS_BUDGET = 50 * 2**20


@pytest.fixture(scope="module")
def png_30k() -> bytes:
    """The reported bomb: an 876 KB PNG of 30000x30000 (2.7 GB once decoded as BGR)."""
    return png_bomb(30000, 30000)


def _serve(tmp: Path, max_image_megapixels: float | None = None) -> tuple[ApiServer, EdgeAgent]:
    config = camera_config(tmp, 1)
    if max_image_megapixels is not None:
        api = config.api.model_copy(update={"max_image_megapixels": max_image_megapixels})
        config = config.model_copy(update={"api": api})
    agent = build_agent(config, with_source=False)
    # The production body cap (8 MiB) and the image cap from the agent's config.
    server = ApiServer(create_app(agent, token=None), "127.0.0.1", 0)
    server.start()
    return server, agent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    server, agent = _serve(tmp_path)
    yield server.url
    server.stop()
    agent.store.close()


def _peak_rss_during(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, int, float]:
    """The response, the RSS growth at its peak (sampled every 2 ms), and the time taken."""
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        response = call()
    finally:
        took = time.perf_counter() - started
        done.set()
        sampler.join()
    return response, peak - before, took


def _post(url: str, body: bytes, content_type: str) -> Callable[[], httpx.Response]:
    return lambda: httpx.post(
        f"{url}/predict", content=body, headers={"content-type": content_type}, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "make", "content_type"),
    [
        ("jpeg", jpeg_bomb, "image/jpeg"),
        ("gif", gif_bomb, "image/gif"),
        ("webp", webp_bomb, "image/webp"),
        ("bmp", bmp_bomb, "application/octet-stream"),
    ],
)
def test_small_files_claiming_huge_frames_are_refused(
    served: str, name: str, make: Callable[[int, int], bytes], content_type: str
) -> None:
    size = 16000 if name == "webp" else 30000  # a VP8L side tops out at 16384
    body = make(size, size)
    response, grew, took = _peak_rss_during(_post(served, body, content_type))
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert f"{name} image of {size}x{size} px" in detail
    assert "exceeds the limit of 24.0 MP" in detail
    assert took < 2.0 and grew < RSS_BUDGET, (took, grew)


def test_the_reported_png_bomb_is_refused_fast_without_memory(served: str, png_30k: bytes) -> None:
    assert 800_000 < len(png_30k) < 900_000  # fits the 8 MiB body cap: only pixels catch it
    response, grew, took = _peak_rss_during(_post(served, png_30k, "image/png"))
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == (
        "png image of 30000x30000 px (900.0 MP) exceeds the limit of 24.0 MP: send a smaller image"
    )
    assert took < 2.0 and grew < RSS_BUDGET, (took, grew)
    # The agent still serves real images afterwards.
    ok, jpeg = cv2.imencode(".jpg", red_frame())
    assert ok
    after = httpx.post(
        f"{served}/predict", content=jpeg.tobytes(), headers={"content-type": "image/jpeg"}
    )
    assert after.status_code == 200 and after.json()["label"] == "cat"


def test_the_cap_comes_from_the_agent_config(tmp_path: Path) -> None:
    server, agent = _serve(tmp_path, max_image_megapixels=0.2)
    try:
        big = cv2.imencode(".png", cv2.resize(red_frame(), (640, 480)))[1].tobytes()
        small = cv2.imencode(".png", cv2.resize(red_frame(), (400, 400)))[1].tobytes()
        refused = httpx.post(
            f"{server.url}/predict", content=big, headers={"content-type": "image/png"}
        )
        assert refused.status_code == 413
        assert "640x480 px (0.3 MP) exceeds the limit of 0.2 MP" in refused.json()["detail"]
        served = httpx.post(
            f"{server.url}/predict", content=small, headers={"content-type": "image/png"}
        )
        assert served.status_code == 200
    finally:
        server.stop()
        agent.store.close()


def test_unknown_formats_are_refused_before_decoding(served: str) -> None:
    tiff = cv2.imencode(".tiff", red_frame())[1].tobytes()
    refused = httpx.post(
        f"{served}/predict", content=tiff, headers={"content-type": "application/octet-stream"}
    )
    assert refused.status_code == 400
    assert "tiff images are not accepted" in refused.json()["detail"]
    ppm = b"P6\n30000 30000\n255\n" + bytes(64)
    refused = httpx.post(
        f"{served}/predict", content=ppm, headers={"content-type": "application/octet-stream"}
    )
    assert refused.status_code == 400
    assert "not a decodable image" in refused.json()["detail"]
