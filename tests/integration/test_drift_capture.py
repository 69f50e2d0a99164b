"""Sample capture: bounded on disk, triggered by low confidence and drift, uploaded over
HTTP (multipart POST with a bearer token) to a real server started by the test."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, File, Form, Header, HTTPException, UploadFile

from edge_agent.drift.capture import CaptureStore
from edge_agent.drift.config import CaptureConfig
from edge_agent.drift.upload import SampleUploader, UploadAuthError, UploadError
from edge_agent.sources.sample import Sample
from tests.support.drift import Prediction

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"
T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def sample_server() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []
    app = FastAPI()

    @app.post("/api/samples")
    async def upload(
        file: Annotated[UploadFile, File()],
        device_id: Annotated[str, Form()],
        sha256: Annotated[str, Form()],
        reason: Annotated[str, Form()],
        label: Annotated[str, Form()],
        metadata: Annotated[str, Form()],
        authorization: Annotated[str, Header()] = "",
    ) -> dict:
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(status_code=401, detail="bad token")
        body = await file.read()
        received.append(
            {
                "device_id": device_id,
                "sha256": sha256,
                "reason": reason,
                "label": label,
                "metadata": json.loads(metadata),
                "filename": file.filename,
                "content_type": file.content_type,
                "body": body,
            }
        )
        return {"stored": True}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}/api/samples", received
    server.should_exit = True
    thread.join(timeout=10)


def _frame(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert frame is not None
    return frame


def test_capture_keeps_a_bounded_folder_and_evicts_the_oldest(
    tmp_path: Path, shared_data: Path
) -> None:
    photos = sorted((shared_data / "pets" / "dog").glob("*.jpg"))[:12]
    config = CaptureConfig(enabled=True, max_files=5, max_bytes=10**9, low_confidence_below=0.6)
    store = CaptureStore(config, tmp_path / "cap")
    for k, photo in enumerate(photos):
        sample = Sample(T0 + timedelta(seconds=k), photo.name, frame=_frame(photo))
        store.consider(sample, Prediction("dog", 0.4), [], "catdog", 2)
    assert store.files == 5 and store.counters["evicted"] == 7
    kept = [json.loads(p.meta_path.read_text())["input_id"] for p in store.pending()]
    assert kept == [p.name for p in photos[-5:]]
    # Confident predictions outside drift are not kept; drift keeps one in `drift_every`.
    for k in range(20):
        sample = Sample(T0 + timedelta(minutes=k), f"calm{k}", frame=_frame(photos[0]))
        store.consider(sample, Prediction("dog", 0.95), [], "catdog", 2)
    assert store.counters["drift"] == 0
    for k in range(20):
        sample = Sample(T0 + timedelta(hours=k), f"drift{k}", frame=_frame(photos[0]))
        store.consider(sample, Prediction("dog", 0.95), ["features"], "catdog", 2)
    assert store.counters["drift"] == 20 // config.drift_every
    # A restart finds the samples again; a byte budget under two frames then keeps one.
    budget = store.pending()[-1].size + 100
    small = CaptureStore(config.model_copy(update={"max_bytes": budget}), tmp_path / "cap")
    assert small.files == store.files == 5 and small.bytes == store.bytes
    small.consider(Sample(T0, "late", frame=_frame(photos[0])), Prediction("dog", 0.1), [], "c", 1)
    assert small.files == 1 and small.bytes <= budget
    assert json.loads(small.pending()[0].meta_path.read_text())["input_id"] == "late"


def test_captures_per_hour_are_bounded_whatever_the_reason(
    tmp_path: Path, shared_data: Path
) -> None:
    """A camera whose model is unsure of every frame must not write a file per frame."""
    frame = _frame(sorted((shared_data / "pets" / "cat").glob("*.jpg"))[0])
    config = CaptureConfig(enabled=True, max_per_hour=4, random_sample_rate=0.0)
    store = CaptureStore(config, tmp_path / "cap")
    for k in range(30):
        sample = Sample(T0 + timedelta(seconds=k), f"f{k}", frame=frame)
        store.consider(sample, Prediction("cat", 0.3), ["features"], "catdog", 2)
    assert store.files == 4 and store.counters["low_confidence"] == 4
    assert store.counters["rate_limited"] == 26
    unbounded = CaptureStore(config.model_copy(update={"max_per_hour": 0}), tmp_path / "all")
    for k in range(30):
        sample = Sample(T0 + timedelta(seconds=k), f"f{k}", frame=frame)
        unbounded.consider(sample, Prediction("cat", 0.3), [], "catdog", 2)
    assert unbounded.files == 30 and unbounded.counters["rate_limited"] == 0


def test_upload_sends_multipart_with_token_and_forgets_only_accepted(
    tmp_path: Path, sample_server: tuple[str, list[dict]], shared_data: Path
) -> None:
    url, received = sample_server
    photo = sorted((shared_data / "pets" / "cat").glob("*.jpg"))[3]
    config = CaptureConfig(enabled=True, upload_url=url, token_env=None)
    store = CaptureStore(config, tmp_path / "cap")
    store.consider(
        Sample(T0, photo.name, frame=_frame(photo)), Prediction("cat", 0.3), [], "catdog", 7
    )
    features = {"pressure_mb": 1012.5, "humidity": float("nan")}
    store.consider(
        Sample(T0, "row-1", features=features, observed_label="rain"),
        Prediction("rain", 0.5),
        [],
        "weather",
        3,
    )
    assert store.files == 2

    with pytest.raises(UploadAuthError, match="HTTP 401"):
        SampleUploader(store, "cam-1", token="wrong").upload_pending()
    assert store.files == 2 and received == []

    uploader = SampleUploader(store, "cam-1", token=TOKEN)
    assert uploader.upload_pending() == 2
    assert store.files == 0 and not list((tmp_path / "cap").iterdir())
    jpeg, row = received
    assert jpeg["device_id"] == "cam-1" and jpeg["content_type"] == "image/jpeg"
    assert jpeg["reason"] == "low_confidence" and jpeg["label"] == "cat"
    decoded = cv2.imdecode(np.frombuffer(jpeg["body"], np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == _frame(photo).shape
    assert jpeg["sha256"] == hashlib.sha256(jpeg["body"]).hexdigest()
    assert jpeg["metadata"]["model_version"] == 7
    assert row["content_type"] == "application/json"
    assert json.loads(row["body"])["features"] == {"pressure_mb": 1012.5}
    assert row["metadata"]["observed_label"] == "rain"


def test_upload_failures_keep_samples_and_name_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    config = CaptureConfig(
        enabled=True, upload_url=f"http://127.0.0.1:{dead}/api/samples", upload_timeout_s=2
    )
    store = CaptureStore(config, tmp_path / "cap")
    store.consider(Sample(T0, "r", features={"a": 1.0}), Prediction("x", 0.1), [], "m", 1)
    monkeypatch.delenv("EDGE_AGENT_CAPTURE_TOKEN", raising=False)
    with pytest.raises(UploadAuthError, match="EDGE_AGENT_CAPTURE_TOKEN"):
        SampleUploader(store, "d").upload_pending()
    monkeypatch.setenv("EDGE_AGENT_CAPTURE_TOKEN", TOKEN)
    with pytest.raises(UploadError, match="failed"):
        SampleUploader(store, "d").upload_pending()
    assert store.files == 1
    # Unwritable folder: capture reports and carries on instead of breaking inference.
    (tmp_path / "cap").chmod(0o500)
    try:
        kept = store.consider(
            Sample(T0, "r2", features={"a": 1.0}), Prediction("x", 0.1), [], "m", 1
        )
    finally:
        (tmp_path / "cap").chmod(0o700)
    if os.geteuid() != 0:  # root ignores directory permissions
        assert kept is None and store.counters["failed"] == 1
