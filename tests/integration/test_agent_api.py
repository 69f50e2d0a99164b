"""The local API served by a real uvicorn, on a real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from edge_agent.api import ApiServer, create_app
from edge_agent.runtime.agent import EdgeAgent
from tests.integration.agent_fixtures import build_agent, camera_config
from tests.support.onnx_models import blue_frame, red_frame

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[EdgeAgent, str]]:
    agent = build_agent(camera_config(tmp_path, 1), with_source=False)
    app = create_app(agent, token=TOKEN, max_request_bytes=200_000, max_concurrent_predict=1)
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    yield agent, server.url
    server.stop()
    agent.store.close()


def _jpeg(frame) -> bytes:
    ok, data = cv2.imencode(".jpg", frame)
    assert ok
    return data.tobytes()


def test_health_ready_model_metrics(served):
    agent, url = served
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["ready"] is True and ready["broker_connected"] is False
    model = httpx.get(f"{url}/model").json()
    assert model["name"] == "catdog" and model["version"] == 3
    assert model["sha256"] == agent.slot.current.sha256 and model["labels"] == ["cat", "dog"]
    httpx.post(f"{url}/predict", content=_jpeg(red_frame()), headers={"content-type": "image/jpeg"})
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE edge_inference_latency_seconds summary" in metrics.text
    assert 'edge_inference_latency_seconds_count{model="catdog"' in metrics.text
    assert "edge_broker_connected 0" in metrics.text


def test_predict_image_and_clear_errors(served):
    _agent, url = served
    red = httpx.post(
        f"{url}/predict", content=_jpeg(red_frame()), headers={"content-type": "image/jpeg"}
    )
    blue = httpx.post(
        f"{url}/predict", content=_jpeg(blue_frame()), headers={"content-type": "image/jpeg"}
    )
    assert red.status_code == 200 and red.json()["label"] == "cat"
    assert blue.json()["label"] == "dog" and blue.json()["latency_ms"] > 0
    junk = httpx.post(
        f"{url}/predict", content=b"not an image", headers={"content-type": "image/png"}
    )
    assert junk.status_code == 400 and "decodable image" in junk.json()["detail"]
    big = httpx.post(
        f"{url}/predict", content=b"\0" * 300_000, headers={"content-type": "image/jpeg"}
    )
    assert big.status_code == 413
    wrong = httpx.post(f"{url}/predict", content=b"x", headers={"content-type": "text/plain"})
    assert wrong.status_code == 415
    row = httpx.post(f"{url}/predict", json={"features": {"t": 1.0}})
    assert row.status_code == 422 and "no frame for image model" in row.json()["detail"]
    nan = httpx.post(
        f"{url}/predict",
        content=b'{"features": {"t": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422


def test_drift_is_404_until_a_provider_is_set(served):
    agent, url = served
    missing = httpx.get(f"{url}/drift")
    assert missing.status_code == 404 and missing.json()["detail"] == "drift monitor not configured"
    agent.set_drift_provider(lambda: {"raised": ["brightness"]})
    assert httpx.get(f"{url}/drift").json() == {"raised": ["brightness"]}


def test_state_changes_need_the_token(served):
    agent, url = served
    assert httpx.post(f"{url}/commands/ping").status_code == 401
    wrong = httpx.post(f"{url}/commands/ping", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    ok = httpx.post(f"{url}/commands/ping", headers=auth)
    assert ok.status_code == 200 and ok.json()["detail"] == "pong"
    level = httpx.post(f"{url}/commands/set_log_level", headers=auth, json={"level": "NOPE"})
    assert level.status_code == 409 and "NOPE" in level.json()["detail"]
    unknown = httpx.post(f"{url}/commands/format_disk", headers=auth)
    assert unknown.status_code == 422
    assert agent.store.depth == 2  # the acks of ping and set_log_level wait in the outbox
