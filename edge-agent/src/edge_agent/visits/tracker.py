"""Turning a stream of per-frame answers into visits: pure logic, no I/O, no clock of its own.

Every decision uses the frames' capture times, so replaying a file gives the same visits;
``tick`` lets the caller end a visit when frames stop coming (a lost stream).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

EndedBy = Literal["quiet", "shutdown"]


def random_visit_id(started_at: datetime) -> str:
    """Sortable by start time, unique across restarts and replays of the same file."""
    return f"{started_at:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Visit:
    """A visit as it stands at one change: begun (``ended_at`` None) or over.

    ``best`` is whatever the caller passed with the most confident subject frame (the
    frame itself, for the snapshot); the tracker only holds the reference.
    """

    visit_id: str
    model_name: str
    model_version: int
    label: str
    confidence: float
    started_at: datetime
    subject_frames: int
    frames: int
    label_frames: dict[str, int]
    best_at: datetime
    best: object = field(default=None, compare=False, repr=False)
    ended_at: datetime | None = None
    ended_by: EndedBy | None = None

    @property
    def phase(self) -> Literal["start", "end"]:
        return "start" if self.ended_at is None else "end"


@dataclass(slots=True)
class _Run:
    """Consecutive subject frames: a candidate visit until ``min_frames``, then the visit."""

    first_at: datetime
    last_at: datetime
    model_name: str
    model_version: int
    subject_frames: int = 0
    frames: int = 0
    frames_at_last: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    confidence_sums: dict[str, float] = field(default_factory=dict)
    best_confidence: float = -1.0
    best_at: datetime | None = None
    best: object = None
    visit_id: str | None = None

    def add_subject(self, ts: datetime, label: str, confidence: float, payload: object) -> bool:
        self.frames += 1
        self.subject_frames += 1
        self.frames_at_last = self.frames
        self.last_at = ts
        self.counts[label] += 1
        self.confidence_sums[label] = self.confidence_sums.get(label, 0.0) + confidence
        if confidence > self.best_confidence:  # ties keep the earlier frame
            self.best_confidence, self.best_at, self.best = confidence, ts, payload
            return True
        return False

    def majority(self) -> str:
        return min(self.counts, key=lambda k: (-self.counts[k], -self.confidence_sums[k], k))

    def summary(self, ended_at: datetime | None, ended_by: EndedBy | None) -> Visit:
        assert self.visit_id is not None and self.best_at is not None
        return Visit(
            visit_id=self.visit_id,
            model_name=self.model_name,
            model_version=self.model_version,
            label=self.majority(),
            confidence=min(1.0, max(0.0, self.best_confidence)),
            started_at=self.first_at,
            subject_frames=self.subject_frames,
            frames=self.frames_at_last,
            label_frames=dict(sorted(self.counts.items())),
            best_at=self.best_at,
            best=self.best if ended_at is not None else None,
            ended_at=ended_at,
            ended_by=ended_by,
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """What one frame changed: visits begun or ended (in order), and whether the frame is
    the best of the current run so far (the caller may want to note it)."""

    changes: list[Visit]
    best: bool


@dataclass
class VisitCounts:
    frames: int = 0
    absent_frames: int = 0
    started: int = 0
    ended: int = 0


class VisitTracker:
    """Starts a visit after ``min_frames`` consecutive subject frames, ends it ``quiet_s``
    after the last one. Not thread-safe: the caller serialises ``observe``/``tick``/``flush``.
    """

    def __init__(
        self,
        min_frames: int,
        quiet_s: float,
        new_id: Callable[[datetime], str] = random_visit_id,
    ) -> None:
        if min_frames < 1 or quiet_s <= 0:
            raise ValueError("min_frames must be at least 1 and quiet_s positive")
        self.min_frames = min_frames
        self.quiet_s = quiet_s
        self._new_id = new_id
        self._run: _Run | None = None
        self._last_at: datetime | None = None
        self.counts = VisitCounts()

    @property
    def open_visit(self) -> Visit | None:
        run = self._run
        return None if run is None or run.visit_id is None else run.summary(None, None)

    def _gap_over(self, since: datetime, ts: datetime) -> bool:
        gap = (ts - since).total_seconds()
        return gap < 0 or gap >= self.quiet_s

    def _close(self, ended_by: EndedBy) -> list[Visit]:
        run, self._run = self._run, None
        if run is None or run.visit_id is None:
            return []
        self.counts.ended += 1
        return [run.summary(run.last_at, ended_by)]

    def observe(
        self,
        ts: datetime,
        label: str,
        confidence: float,
        subject: bool,
        model_name: str,
        model_version: int,
        payload: object = None,
    ) -> Observation:
        """Take one frame's answer; ``subject`` is False for the model's absent label."""
        self.counts.frames += 1
        changes: list[Visit] = []
        if self._last_at is not None and ts < self._last_at:
            changes += self._close("quiet")  # time went back (a replay looped): a new scene
        self._last_at = ts
        run = self._run
        if run is not None and self._gap_over(run.last_at, ts):
            changes += self._close("quiet")
            run = self._run = None
        if not subject:
            self.counts.absent_frames += 1
            if run is not None and run.visit_id is None:
                self._run = None  # a candidate needs consecutive subject frames
            elif run is not None:
                run.frames += 1
            return Observation(changes, False)
        if run is None:
            run = self._run = _Run(ts, ts, model_name, model_version)
        best = run.add_subject(ts, label, confidence, payload)
        if run.visit_id is None and run.subject_frames >= self.min_frames:
            run.visit_id = self._new_id(run.first_at)
            self.counts.started += 1
            changes.append(run.summary(None, None))
        return Observation(changes, best)

    def tick(self, now: datetime) -> list[Visit]:
        """End the open visit if ``now`` (the capture clock, extrapolated by the caller) is
        ``quiet_s`` past its last subject frame; drop a stale candidate."""
        run = self._run
        if run is None or (now - run.last_at).total_seconds() < self.quiet_s:
            return []
        return self._close("quiet")

    def flush(self) -> list[Visit]:
        """End the open visit now (the agent is stopping); a candidate is dropped."""
        return self._close("shutdown")
