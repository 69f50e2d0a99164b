"""Turning detector scores into alerts: hysteresis, confirmations and a cooldown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.protocol.messages import DriftAlert, DriftWindow, FeatureDrift

log = logging.getLogger(__name__)

AlertState = Literal["raised", "cleared"]
Severity = Literal["info", "warning", "critical"]

# A payload names at most this many scores (the wire allows 256; people read the top few).
MAX_PAYLOAD_FEATURES = 32


class Evaluation:
    """One test of a detector's window: its scores and where they stand against the levels.

    ``over`` means at least one score reached its raise level; ``under`` means every score
    is back at or below its clear level. Both false is the dead band between the levels.
    The wire-ready details (scores, offending features, summary) are built on first use:
    most tests change nothing, and building them for every sample would cost more than
    the test itself.
    """

    def __init__(
        self,
        over: bool,
        under: bool,
        details: Callable[[], tuple[list[FeatureDrift], list[FeatureDrift], str, DriftWindow]],
        severity: Severity = "warning",
    ) -> None:
        self.over = over
        self.under = under
        self.severity: Severity = severity
        self._details = details
        self._built: tuple[list[FeatureDrift], list[FeatureDrift], str, DriftWindow] | None = None

    @classmethod
    def of(
        cls,
        scores: list[FeatureDrift],
        over: bool,
        under: bool,
        window: DriftWindow,
        offending: list[FeatureDrift] | None = None,
        summary: str = "",
        severity: Severity = "warning",
    ) -> Evaluation:
        built = (scores, offending or [], summary, window)
        return cls(over, under, lambda: built, severity)

    def _get(self) -> tuple[list[FeatureDrift], list[FeatureDrift], str, DriftWindow]:
        if self._built is None:
            self._built = self._details()
        return self._built

    @property
    def scores(self) -> list[FeatureDrift]:
        return self._get()[0]

    @property
    def offending(self) -> list[FeatureDrift]:
        """Scores past their raise level, strongest first; what a raise alert talks about."""
        return self._get()[1]

    @property
    def summary(self) -> str:
        return self._get()[2]

    @property
    def window(self) -> DriftWindow:
        return self._get()[3]


class DriftVerdict(BaseModel):
    """A detector changed state; becomes a wire ``DriftAlert`` once the runtime stamps it."""

    model_config = ConfigDict(frozen=True)

    detector: str
    state: AlertState
    severity: Severity
    model_name: str
    model_version: int
    window: DriftWindow
    features: list[FeatureDrift]
    summary: str

    def to_message(self, device_id: str, seq: int, ts: datetime) -> DriftAlert:
        return DriftAlert(
            device_id=device_id,
            seq=seq,
            ts=ts,
            model_name=self.model_name,
            model_version=self.model_version,
            state=self.state,
            detector=self.detector,
            severity=self.severity,
            window=self.window,
            features=self.features[:MAX_PAYLOAD_FEATURES],
            summary=self.summary[:1024],
        )


class AlertGate:
    """Raised/cleared state of one detector.

    A raise needs ``confirm`` consecutive tests over the raise level; a clear needs a test
    under the clear level; and no state change comes sooner than ``cooldown_s`` (in sample
    time, so a replay behaves like the live stream) after the previous one. A long drifted
    stream therefore yields one raise, and one clear when it recovers, never a storm.
    """

    def __init__(self, detector: str, confirm: int, cooldown_s: float) -> None:
        self.detector = detector
        self.confirm = confirm
        self.cooldown_s = cooldown_s
        self.raised = False
        self._streak = 0
        self._last_change: float | None = None
        self.raised_at: datetime | None = None
        self.suppressed = 0

    def _cool(self, now: float) -> bool:
        return self._last_change is None or now - self._last_change >= self.cooldown_s

    def step(self, evaluation: Evaluation, ts: datetime) -> AlertState | None:
        now = ts.timestamp()
        if not self.raised:
            self._streak = self._streak + 1 if evaluation.over else 0
            if self._streak < self.confirm:
                return None
            if not self._cool(now):
                self.suppressed += 1
                return None
            self.raised = True
            self.raised_at = ts
            self._last_change = now
            self._streak = 0
            log.info("drift raised by %s: %s", self.detector, evaluation.summary)
            return "raised"
        if evaluation.under and self._cool(now):
            self.raised = False
            self.raised_at = None
            self._last_change = now
            log.info("drift cleared by %s: %s", self.detector, evaluation.summary)
            return "cleared"
        return None


def rank(scores: list[FeatureDrift]) -> list[FeatureDrift]:
    """Strongest first, by how far each score is past its own threshold."""

    def strength(s: FeatureDrift) -> float:
        if s.threshold == 0:
            return s.score
        if s.metric in ("accuracy", "f1"):
            return s.threshold / max(s.score, 1e-9)
        return s.score / s.threshold

    return sorted(scores, key=strength, reverse=True)
