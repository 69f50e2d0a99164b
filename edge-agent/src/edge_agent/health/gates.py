"""Raised/cleared state of one test on one sensor, and the change it reports on the wire."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from edge_agent.health.config import SensorTestName
from edge_agent.protocol.messages import SensorFault

log = logging.getLogger(__name__)

FaultState = Literal["raised", "cleared"]


@dataclass(frozen=True, slots=True)
class FaultChange:
    """A test changed its verdict on a sensor; becomes a wire ``SensorFault`` once stamped."""

    sensor: str
    test: SensorTestName
    state: FaultState
    since: datetime
    observed_at: datetime
    value: float | None
    score: float
    threshold: float
    summary: str

    def to_message(
        self,
        device_id: str,
        seq: int,
        ts: datetime,
        model_name: str | None = None,
        model_version: int | None = None,
    ) -> SensorFault:
        return SensorFault(
            device_id=device_id,
            seq=seq,
            ts=ts,
            sensor=self.sensor,
            test=self.test,
            state=self.state,
            since=self.since,
            observed_at=self.observed_at,
            value=self.value,
            score=self.score,
            threshold=self.threshold,
            model_name=model_name,
            model_version=model_version,
            summary=self.summary[:1024],
        )


class FaultGate:
    """A test raises at once when its condition holds, and clears after ``clear_after``
    consecutive readings without it: a stuck sensor that moves once is not trusted again
    until it has kept moving for a while."""

    def __init__(self, sensor: str, test: SensorTestName, clear_after: int) -> None:
        self.sensor = sensor
        self.test: SensorTestName = test
        self.clear_after = clear_after
        self.raised = False
        self.since: datetime | None = None
        self.quiet = 0

    def step(
        self,
        active: bool,
        at: datetime,
        *,
        since: datetime | None = None,
        value: float | None = None,
        score: float = 0.0,
        threshold: float = 0.0,
        summary: str = "",
    ) -> FaultChange | None:
        if active:
            self.quiet = 0
            if self.raised:
                return None
            self.raised = True
            self.since = since or at
            log.info("sensor %s: %s raised: %s", self.sensor, self.test, summary)
            return self._change("raised", at, value, score, threshold, summary)
        if not self.raised:
            return None
        self.quiet += 1
        if self.quiet < self.clear_after:
            return None
        return self.clear(at, value, score, threshold, summary)

    def clear(
        self, at: datetime, value: float | None, score: float, threshold: float, summary: str
    ) -> FaultChange | None:
        if not self.raised:
            return None
        change = self._change("cleared", at, value, score, threshold, summary)
        self.raised = False
        self.since = None
        self.quiet = 0
        log.info("sensor %s: %s cleared: %s", self.sensor, self.test, summary)
        return change

    def _change(
        self,
        state: FaultState,
        at: datetime,
        value: float | None,
        score: float,
        threshold: float,
        summary: str,
    ) -> FaultChange:
        return FaultChange(
            sensor=self.sensor,
            test=self.test,
            state=state,
            since=self.since or at,
            observed_at=at,
            value=value,
            score=score,
            threshold=threshold,
            summary=summary,
        )
