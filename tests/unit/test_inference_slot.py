"""ModelSlot hot swaps under concurrent predictions; LatencyStats stays bounded and correct."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.inference import InferenceEngine, LatencyStats, ModelSlot, Prediction
from edge_agent.sources import Sample
from tests.support.onnx_models import image_classifier, red_frame

SAMPLE = Sample(ts=datetime(2026, 11, 28, tzinfo=UTC), input_id="frame-1", frame=red_frame())


def test_swap_under_concurrent_predictions_loses_no_call(tmp_path: Path) -> None:
    # Version A calls a red frame "cat"; version B's dog bias makes it "dog".
    image_classifier(tmp_path / "a.onnx")
    image_classifier(tmp_path / "b.onnx", bias=20.0)
    a = InferenceEngine.load(tmp_path / "a.onnx")
    b = InferenceEngine.load(tmp_path / "b.onnx")
    expected = {id(a): "cat", id(b): "dog"}
    slot = ModelSlot(a)
    stop = threading.Event()
    attempts = [0] * 4

    def worker(k: int) -> list[tuple[Prediction, InferenceEngine]]:
        out = []
        while not stop.is_set():
            attempts[k] += 1
            out.append(slot.predict(SAMPLE))
        return out

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(worker, k) for k in range(4)]
        for _ in range(60):  # swap back and forth while the workers predict
            old = slot.swap(b if slot.current is a else a)
            assert old is not slot.current
            time.sleep(0.002)
        stop.set()
        results = [r for f in futures for r in f.result()]
    assert len(results) == sum(attempts) > 60  # every call returned a prediction
    for prediction, engine in results:
        assert prediction.label == expected[id(engine)]
    served = {id(engine) for _p, engine in results}
    assert served == {id(a), id(b)}
    assert slot.in_flight(a) == 0 and slot.in_flight(b) == 0


def test_call_in_flight_finishes_on_the_old_engine(tmp_path: Path) -> None:
    image_classifier(tmp_path / "slow.onnx", slow_matmuls=30)
    image_classifier(tmp_path / "new.onnx", bias=20.0)
    old = InferenceEngine.load(tmp_path / "slow.onnx")
    new = InferenceEngine.load(tmp_path / "new.onnx")
    slot = ModelSlot(old)
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(slot.predict, SAMPLE)
        deadline = time.monotonic() + 5
        while slot.in_flight(old) == 0 and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert slot.in_flight(old) == 1
        assert slot.swap(new) is old
        assert slot.current is new
        assert slot.predict(SAMPLE)[1] is new  # new calls go to the new engine at once
        prediction, served_by = future.result()
    assert served_by is old and prediction.label == "cat"
    assert slot.drain(old, timeout=5.0)
    assert slot.in_flight(old) == 0


def test_latency_stats_percentiles_and_rate() -> None:
    stats = LatencyStats(capacity=100, window_s=10.0)
    assert stats.snapshot().count == 0
    for i in range(200):
        stats.record(float(i % 100 + 1), at=1000.0 + i * 0.05)  # 20 calls/s for 10 s
    snap = stats.snapshot(now=1010.0)
    assert snap.count == 200
    # The ring holds the last 100 calls: latencies 1..100 ms.
    assert snap.p50_ms == pytest.approx(50.5)
    assert snap.p95_ms == pytest.approx(95.05)
    assert snap.fps == pytest.approx(20.0, rel=0.02)


def test_latency_rate_of_a_young_process_is_not_diluted() -> None:
    stats = LatencyStats(capacity=1000, window_s=10.0)
    for i in range(10):
        stats.record(5.0, at=100.0 + i * 0.1)  # 10 calls/s for 1 s
    assert stats.snapshot(now=101.0).fps == pytest.approx(10.0)
    assert stats.snapshot(now=200.0).fps == 0.0  # nothing in the last window


def test_image_statistics_on_one_call_in_stats_every(tmp_path: Path) -> None:
    image_classifier(tmp_path / "a.onnx")
    slot = ModelSlot(InferenceEngine.load(tmp_path / "a.onnx"), stats_every=3)
    with_stats = [bool(slot.predict(SAMPLE)[0].input_stats) for _ in range(9)]
    assert with_stats == [True, False, False] * 3
    assert not slot.predict(SAMPLE, with_stats=False)[0].input_stats
    every_call = ModelSlot(slot.current)
    assert all(every_call.predict(SAMPLE)[0].input_stats for _ in range(3))


def test_swap_warms_an_engine_that_never_ran_before_switching(tmp_path: Path) -> None:
    image_classifier(tmp_path / "a.onnx")
    image_classifier(tmp_path / "b.onnx", bias=20.0)
    old = InferenceEngine.load(tmp_path / "a.onnx")
    new = InferenceEngine.load(tmp_path / "b.onnx")
    slot = ModelSlot(old)
    serving_while_warmed: list[InferenceEngine] = []
    real_warm_up = new.warm_up

    def warm_up() -> float:  # the real warm-up, noting which engine served meanwhile
        serving_while_warmed.append(slot.current)
        return real_warm_up()

    new.warm_up = warm_up  # type: ignore[method-assign]
    assert slot.swap(new) is old
    assert serving_while_warmed == [old]  # warmed on this thread, before the switch
    assert slot.predict(SAMPLE)[1] is new
    # An engine that has served (or passed a smoke test) is not run again; nor on request.
    slot.swap(old)
    slot.swap(new)
    fresh = InferenceEngine.load(tmp_path / "b.onnx")
    fresh.warm_up = warm_up  # type: ignore[method-assign]
    slot.swap(fresh, warm=False)
    assert serving_while_warmed == [old]
