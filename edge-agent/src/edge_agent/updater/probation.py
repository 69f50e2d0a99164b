"""Probation: judging a freshly activated model on live inputs (errors, NaN, latency, shadow)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from edge_agent.updater.config import ProbationConfig

MAX_LATENCIES = 4096


class Outcome(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str | None = None
    calls: int = 0


class ProbationMonitor:
    """Counts what the new model does on live calls and decides when it has earned its place.

    Fed from the frame thread (``record``); the updater's worker waits on ``wait``. Rates
    are only judged after enough calls (``min_samples_to_fail``, or ``frames`` when fewer),
    except a zero NaN tolerance, which fails on the first NaN.
    """

    def __init__(
        self, config: ProbationConfig, latency_budget_ms: float, started: float | None = None
    ) -> None:
        self.config = config
        self.latency_limit_ms = latency_budget_ms * config.latency_budget_factor
        self.started = time.monotonic() if started is None else started
        self.calls = 0
        self.errors = 0
        self.nans = 0
        self.compared = 0
        self.disagreed = 0
        self._latencies: list[float] = []
        self._aborted: str | None = None
        self._cond = threading.Condition()
        self.compares = config.mode == "shadow" or config.shadow

    def record(
        self,
        *,
        error: bool = False,
        nan: bool = False,
        latency_ms: float | None = None,
        agreed: bool | None = None,
    ) -> None:
        """One live call on the model under probation (``agreed``: shadow labels matched)."""
        with self._cond:
            self.calls += 1
            self.errors += int(error)
            self.nans += int(nan)
            keep = latency_ms is not None and math.isfinite(latency_ms)
            if keep and latency_ms is not None and len(self._latencies) < MAX_LATENCIES:
                self._latencies.append(latency_ms)
            if agreed is not None:
                self.compared += 1
                self.disagreed += int(not agreed)
            self._cond.notify_all()

    def abort(self, reason: str) -> None:
        """End probation with a failure now (an operator's rollback, a shutdown)."""
        with self._cond:
            self._aborted = reason
            self._cond.notify_all()

    def verdict(self, now: float | None = None) -> Verdict:
        with self._cond:
            return self._verdict(time.monotonic() if now is None else now)

    def wait(self, timeout: float) -> Verdict:
        """Block until the verdict is no longer pending, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                verdict = self._verdict(now)
                if verdict.outcome is not Outcome.PENDING or now >= deadline:
                    return verdict
                self._cond.wait(min(deadline - now, 0.1))

    def _verdict(self, now: float) -> Verdict:
        cfg = self.config
        n = self.calls
        if self._aborted is not None:
            return Verdict(Outcome.FAILED, self._aborted, n)
        if cfg.max_nan_rate == 0 and self.nans:
            return Verdict(
                Outcome.FAILED, f"non-finite output on {self.nans} of {n} live inputs", n
            )
        judge_after = min(cfg.min_samples_to_fail, cfg.frames)
        if n >= judge_after:
            failure = self._rate_failure(n)
            if failure is not None:
                return Verdict(Outcome.FAILED, failure, n)
        elapsed = now - self.started
        if n >= cfg.frames and elapsed >= cfg.seconds:
            return Verdict(Outcome.PASSED, f"{n} live inputs in {elapsed:.1f} s", n)
        if elapsed >= cfg.timeout_s:
            reason = f"probation timed out with {n} of {cfg.frames} live inputs"
            if cfg.on_timeout == "commit":
                return Verdict(Outcome.PASSED, reason, n)
            return Verdict(Outcome.FAILED, reason, n)
        return Verdict(Outcome.PENDING, None, n)

    def _rate_failure(self, n: int) -> str | None:
        cfg = self.config
        if self.nans / n > cfg.max_nan_rate:
            return f"NaN rate {self.nans}/{n} exceeds {cfg.max_nan_rate:.2%}"
        if self.errors / n > cfg.max_error_rate:
            return f"error rate {self.errors}/{n} exceeds {cfg.max_error_rate:.2%}"
        if len(self._latencies) >= min(cfg.min_samples_to_fail, cfg.frames):
            p95 = float(np.percentile(self._latencies, 95))
            if p95 > self.latency_limit_ms:
                return f"live p95 latency {p95:.1f} ms exceeds {self.latency_limit_ms:.1f} ms"
        if self.compares and self.compared >= min(cfg.min_samples_to_fail, cfg.frames):
            rate = self.disagreed / self.compared
            if rate > cfg.max_disagreement:
                return (
                    f"disagrees with the serving model on {self.disagreed}/{self.compared} "
                    f"live inputs (limit {cfg.max_disagreement:.0%})"
                )
        return None
