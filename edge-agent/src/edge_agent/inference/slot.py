"""The serving slot: one engine at a time, swapped atomically while predictions run."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from edge_agent.inference.engine import InferenceEngine, Prediction
from edge_agent.sources.sample import Sample

log = logging.getLogger(__name__)


class ModelSlot:
    """Holds the serving engine; ``swap`` never fails or drops a call in flight.

    A call takes the engine current when it starts and finishes on it, so after a swap the
    old session keeps serving the calls it already had. ``drain`` tells the updater when the
    old engine is idle, so it can be released (or kept for a rollback).
    """

    def __init__(self, engine: InferenceEngine, stats_every: int = 1) -> None:
        self._engine = engine
        self._lock = threading.Condition()
        self._in_flight: Counter[int] = Counter()
        # Drift statistics on one call in ``stats_every``: they cost a camera ~0.7 ms a frame.
        self.stats_every = stats_every
        self._calls = 0

    @property
    def current(self) -> InferenceEngine:
        return self._engine

    def predict(
        self, sample: Sample, *, with_stats: bool = True
    ) -> tuple[Prediction, InferenceEngine]:
        """Predict on the engine current at the start of the call; return which one served."""
        with self._lock:
            engine = self._engine
            self._in_flight[id(engine)] += 1
            if with_stats and self.stats_every > 1:
                with_stats = self._calls % self.stats_every == 0
            self._calls += 1
        try:
            return engine.predict(sample, with_stats=with_stats), engine
        finally:
            with self._lock:
                self._in_flight[id(engine)] -= 1
                if self._in_flight[id(engine)] <= 0:
                    del self._in_flight[id(engine)]
                    self._lock.notify_all()

    def swap(self, new: InferenceEngine, *, warm: bool = True) -> InferenceEngine:
        """Make ``new`` serve every call from now on; return the engine it replaced.

        An engine that has never run is first run once on an example input, here on the
        caller's thread and before the switch: onnxruntime allocates on a session's first
        run, and that must not land on the first frame the new model serves.
        """
        if warm and new is not self._engine and new.latency.count == 0:
            try:
                warm_ms = new.warm_up()
            except Exception:  # onnxruntime's errors share no base class; swap anyway
                log.warning("model slot: warming %r failed; switching cold", new, exc_info=True)
            else:
                log.debug("model slot: warmed %r in %.1f ms before the switch", new, warm_ms)
        with self._lock:
            old, self._engine = self._engine, new
        log.info("model slot: %r replaced by %r", old, new)
        return old

    def in_flight(self, engine: InferenceEngine) -> int:
        with self._lock:
            return self._in_flight[id(engine)]

    def drain(self, engine: InferenceEngine, timeout: float) -> bool:
        """Wait until no call runs on ``engine``; False when calls are still running."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight[id(engine)] <= 0, timeout)
