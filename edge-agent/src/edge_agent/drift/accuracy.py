"""Online quality of a forecaster that later observes the truth (the weather station).

A forecast made at ``t`` for ``t + horizon`` waits in a bounded buffer until a sample
carrying the observed condition for that time arrives; the joined pairs give real
accuracy and macro-F1, and their errors feed the streaming change detectors.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from edge_agent.drift.alerts import Evaluation, rank
from edge_agent.drift.config import LowerHysteresis, StreamingConfig
from edge_agent.drift.detectors import Detector, window_bounds
from edge_agent.drift.inputs import PredictionLike, SampleLike
from edge_agent.drift.seasons import month_weights
from edge_agent.drift.streaming import Adwin, Direction, PageHinkley
from edge_agent.protocol.bundle import MONTHS
from edge_agent.protocol.messages import DriftWindow, FeatureDrift, LabelledAccuracy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    predicted: int
    observed: int
    target_ts: float


class ForecastJoin:
    """Pairs each forecast with the observation at its target time (within a tolerance)."""

    def __init__(
        self,
        labels: Sequence[str],
        horizon_s: float,
        tolerance_s: float,
        max_pending: int,
        positive_label: str | None = None,
    ) -> None:
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.horizon_s = horizon_s
        self.tolerance_s = tolerance_s
        self.positive = positive_label
        self._pending: deque[tuple[float, int]] = deque(maxlen=max_pending)
        self.counters: Counter[str] = Counter()
        self.joined: list[Outcome] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def observed_index(self, observed: str) -> int | None:
        """The label an observation counts as; a binary model maps other conditions to
        the non-positive label (e.g. ``snow`` and ``clear`` are ``no_rain``)."""
        i = self.index.get(observed)
        if i is not None:
            return i
        if self.positive is not None and len(self.labels) == 2:
            return 1 - self.index[self.positive]
        return None

    def update(self, sample: SampleLike, prediction: PredictionLike) -> list[Outcome]:
        now = sample.ts.timestamp()
        self.joined = []
        while self._pending and self._pending[0][0] < now - self.tolerance_s:
            self._pending.popleft()
            self.counters["forecast_unobserved"] += 1
        observed = sample.observed_label
        if observed is not None and self._pending:
            target, predicted = self._pending[0]
            if abs(target - now) <= self.tolerance_s:
                obs = self.observed_index(observed)
                self._pending.popleft()
                if obs is None:
                    self.counters["observation_unknown_label"] += 1
                else:
                    self.joined.append(Outcome(predicted, obs, target))
                    self.counters["joined"] += 1
        label = self.index.get(prediction.label)
        if label is None:
            self.counters["forecast_unknown_label"] += 1
        else:
            if len(self._pending) == self._pending.maxlen:
                self.counters["forecast_dropped"] += 1
            target = now + self.horizon_s
            if self._pending and target <= self._pending[-1][0]:
                self.counters["forecast_out_of_order"] += 1
            else:
                self._pending.append((target, label))
        return self.joined


def macro_f1(predicted: np.ndarray, observed: np.ndarray, classes: int) -> float:
    """Mean F1 over the classes present in either the forecasts or the observations."""
    f1s = []
    for c in range(classes):
        tp = float(np.sum((predicted == c) & (observed == c)))
        fp = float(np.sum((predicted == c) & (observed != c)))
        fn = float(np.sum((predicted != c) & (observed == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def labelled_accuracy(outcomes: Sequence[Outcome], classes: int) -> LabelledAccuracy | None:
    """Accuracy and macro-F1 of joined forecasts, for telemetry; None when there are none."""
    if not outcomes:
        return None
    predicted = np.fromiter((o.predicted for o in outcomes), dtype=np.int64)
    observed = np.fromiter((o.observed for o in outcomes), dtype=np.int64)
    accuracy = float(np.mean(predicted == observed))
    f1 = macro_f1(predicted, observed, classes)
    if not (np.isfinite(accuracy) and np.isfinite(f1)):
        return None
    return LabelledAccuracy(accuracy=accuracy, macro_f1=f1, n=len(outcomes))


class AccuracyDetector(Detector):
    """Accuracy and macro-F1 over the last ``size`` joined forecasts."""

    def __init__(
        self,
        join: ForecastJoin,
        accuracy: LowerHysteresis,
        f1: LowerHysteresis,
        size: int,
        min_samples: int,
        step: int,
    ) -> None:
        super().__init__("accuracy")
        self.join = join
        self.levels = {"accuracy": accuracy, "f1": f1}
        self.min_samples = min_samples
        self.step = step
        self._outcomes: deque[Outcome] = deque(maxlen=size)
        self._since = 0

    def update(self, sample: SampleLike, prediction: PredictionLike) -> Evaluation | None:
        self._outcomes.extend(self.join.joined)
        self._since += len(self.join.joined)
        if (
            len(self._outcomes) < self.min_samples
            or self._since < self.step
            or not self.join.joined
        ):
            return None
        self._since = 0
        predicted = np.fromiter((o.predicted for o in self._outcomes), dtype=np.int64)
        observed = np.fromiter((o.observed for o in self._outcomes), dtype=np.int64)
        values = {
            "accuracy": float(np.mean(predicted == observed)),
            "f1": macro_f1(predicted, observed, len(self.join.labels)),
        }
        scores = [
            FeatureDrift(
                name=f"forecast_{metric}",
                metric="accuracy" if metric == "accuracy" else "f1",
                score=value,
                threshold=self.levels[metric].raise_below,
                current=value,
            )
            for metric, value in values.items()
        ]
        over = any(
            s.score < self.levels[m].raise_below for s, m in zip(scores, values, strict=True)
        )
        under = all(
            s.score > self.levels[m].clear_above for s, m in zip(scores, values, strict=True)
        )
        first = self._outcomes[0].target_ts
        last = self._outcomes[-1].target_ts
        window = DriftWindow(start=_utc(first), end=_utc(last), n=len(self._outcomes))
        offending = [
            s for s, m in zip(scores, values, strict=True) if s.score < self.levels[m].raise_below
        ]
        summary = (
            f"online accuracy {values['accuracy']:.3f}, macro-F1 {values['f1']:.3f} "
            f"over {len(self._outcomes)} forecasts joined with observations"
        )
        return Evaluation.of(scores, over, under, window, rank(offending), summary)

    def detail(self) -> dict[str, float]:
        out = {name: float(v) for name, v in self.join.counters.items()}
        out["pending"] = float(self.join.pending)
        return out


class ErrorRateDetector(Detector):
    """Page-Hinkley and ADWIN on the 0/1 error stream of joined forecasts.

    Raised while either test last saw the error rate go up; cleared once a test sees it
    come down. The tests restart after each change, so the state is what carries it.
    With a per-month ``expected`` error rate the tests watch the excess over the season's
    rate, so a forecaster that is simply worse in spring is not called drifting.
    """

    def __init__(
        self,
        join: ForecastJoin,
        config: StreamingConfig,
        expected: Sequence[float] | None = None,
    ) -> None:
        super().__init__("errors")
        self.join = join
        self.expected = np.asarray(expected, dtype=np.float64) if expected else None
        if self.expected is not None and self.expected.size != MONTHS:
            raise ValueError(f"expected error rate needs {MONTHS} months")
        self.page_hinkley = PageHinkley(
            config.page_hinkley_delta, config.page_hinkley_lambda, config.min_samples
        )
        self.adwin = Adwin(config.adwin_delta, config.adwin_max_window, config.adwin_clock)
        self.min_samples = config.min_samples
        self.seen = 0
        self.high = False
        self.errors = 0

    def update(self, sample: SampleLike, prediction: PredictionLike) -> Evaluation | None:
        if not self.join.joined:
            return None
        changes: list[tuple[str, Direction]] = []
        for outcome in self.join.joined:
            error = float(outcome.predicted != outcome.observed)
            self.seen += 1
            self.errors += int(error)
            if self.expected is not None:
                error -= float(month_weights([outcome.target_ts]) @ self.expected)
            ph = self.page_hinkley.update(error)
            if ph is not None:
                changes.append(("page_hinkley", ph))
            ad = self.adwin.update(error) if self.seen >= self.min_samples else None
            if ad is not None:
                changes.append(("adwin", ad))
        if not changes:
            return None
        self.high = changes[-1][1] == "up"
        scores = [
            FeatureDrift(
                name="error_rate",
                metric="page_hinkley",
                score=self.page_hinkley.up_statistic,
                threshold=self.page_hinkley.threshold,
                current=self.page_hinkley.mean if self.page_hinkley.n else None,
            ),
            FeatureDrift(
                name="error_rate",
                metric="adwin",
                score=float(self.adwin.width),
                threshold=float(self.adwin.delta),
                baseline=self.adwin.last_cut[0] if self.adwin.last_cut else None,
                current=self.adwin.last_cut[1] if self.adwin.last_cut else None,
            ),
        ]
        which = ", ".join(f"{name} {direction}" for name, direction in changes)
        summary = f"error-rate change ({which}) after {self.seen} joined forecasts"
        window = window_bounds(sample.ts, self.adwin.width)
        return Evaluation.of(
            scores, self.high, not self.high, window, scores if self.high else [], summary
        )

    def detail(self) -> dict[str, float]:
        return {
            "page_hinkley_up": self.page_hinkley.up_statistic,
            "page_hinkley_down": self.page_hinkley.down_statistic,
            "adwin_width": float(self.adwin.width),
            "adwin_mean": self.adwin.mean,
            "error_rate": self.errors / self.seen if self.seen else 0.0,
        }


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
