"""The per-sensor tests' running statistics: unchanged runs, the jump CUSUM, consistency blame.

Each check only keeps numbers; ``SensorHealthMonitor`` turns them into raised/cleared
faults through ``FaultGate``s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


class StuckCheck:
    """Run of unchanged readings and its score: the movement the other sensors and the
    hour made the change model expect (in sigmas), summed over the run. A sensor that sits
    still through a calm night scores little; one that sits still while the others move
    scores fast."""

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.run = 1
        self.score = 0.0
        self.start: datetime | None = None

    def update(self, value: float, previous: float | None, expected: float, at: datetime) -> None:
        same = previous is not None and abs(value - previous) <= self.eps
        if same:
            self.run += 1
            self.score += expected if math.isfinite(expected) else 0.0
        else:
            self.run = 1
            self.score = 0.0
            self.start = at

    def reset(self, at: datetime) -> None:
        self.run, self.score, self.start = 1, 0.0, at


@dataclass
class PendingJump:
    """A jump seen at ``at``: a spike if the next reading comes back, a step if it stays."""

    at: datetime
    size: float
    before: float


@dataclass
class StepHeld:
    at: datetime
    size: float
    until: datetime


class JumpCheck:
    """Two-sided CUSUM on the standardised residual of the sensor's change model; a jump is
    kept only when the sensor's own-history innovation agrees (it jumped, not a partner)."""

    def __init__(self, allowance: float, decision: float, own_confirm: float) -> None:
        self.allowance = allowance
        self.decision = decision
        self.own_confirm = own_confirm
        self.up = 0.0
        self.down = 0.0
        self.pending: PendingJump | None = None
        self.step: StepHeld | None = None

    @property
    def level(self) -> float:
        return max(self.up, self.down)

    def update(self, z_cross: float, z_own: float) -> int:
        """+1 or -1 when a jump up or down is declared this hour, else 0."""
        if not (math.isfinite(z_cross) and math.isfinite(z_own)):
            return 0
        self.up = max(0.0, self.up + z_cross - self.allowance)
        self.down = max(0.0, self.down - z_cross - self.allowance)
        if self.up >= self.decision and z_own >= self.own_confirm:
            self.reset()
            return 1
        if self.down >= self.decision and z_own <= -self.own_confirm:
            self.reset()
            return -1
        return 0

    def reset(self) -> None:
        self.up = self.down = 0.0

    def jumps_back(self, size: float) -> bool:
        """A jump of about the held step's size the other way: the sensor came back."""
        held = self.step
        return held is not None and size * held.size < 0 and 0.5 <= abs(size / held.size) <= 1.5

    def hold(self, jump: PendingJump, hours: int) -> None:
        self.step = StepHeld(jump.at, jump.size, jump.at + timedelta(hours=hours))


# Evidence (twice the log-likelihood ratio) by which the blamed sensor must beat every other
# candidate to be named alone; and the mark of a sensor the relation did not depend on.
DECISIVE = 10.0
# Expected movement (sigmas, summed) a still candidate must have missed to be blamed first.
STILL_SCORE = 2.0
EXCLUDED = 1e6


class ConsistencyBlame:
    """Which sensor broke the apparent-temperature relation.

    Over an excursion (hours since the relation last held), each candidate accumulates the
    log-likelihood ratio of "it alone moved wrongly": the change in mismatch, translated into
    a correction of that sensor through the relation's slope, compared with the sensor's own
    one-hour innovation. The faulty sensor's innovation matches its correction; a healthy
    partner would need a correction its own history does not show. A candidate that has not
    changed at all while the mismatch moved (stuck) is blamed first.
    """

    def __init__(self) -> None:
        self.evidence: dict[str, float] = {}
        self.offsets: dict[str, float] = {}
        self.start: datetime | None = None

    def reset(self) -> None:
        self.evidence.clear()
        self.offsets.clear()
        self.start = None

    def add(
        self,
        at: datetime,
        offsets: dict[str, float],
        innovations: dict[str, tuple[float, float]],
    ) -> None:
        """``offsets``: per candidate, its reading minus the value that alone would restore
        the relation (NaN: none would); ``innovations``: (own innovation, its sigma)."""
        if self.start is None:
            self.start = at
        for sensor, offset in offsets.items():
            innovation, sigma = innovations.get(sensor, (math.nan, math.nan))
            if not (math.isfinite(offset) and math.isfinite(innovation) and sigma > 0):
                self.evidence[sensor] = self.evidence.get(sensor, 0.0) + EXCLUDED
                continue
            # This hour's share of the offset: what the sensor would have had to jump by.
            correction = offset - self.offsets.get(sensor, 0.0)
            self.offsets[sensor] = offset
            gain = ((innovation - correction) ** 2 - innovation**2) / (sigma * sigma)
            self.evidence[sensor] = self.evidence.get(sensor, 0.0) + gain

    def blame(
        self,
        flat: dict[str, tuple[int, float]],
        excursion_hours: int,
        stuck_now: frozenset[str] = frozenset(),
    ) -> list[str]:
        """The sensor(s) to blame: one when the evidence is decisive, else every candidate
        within ``DECISIVE`` of the best (a slow drift in temperature and one in apparent
        temperature look alike for days). ``flat``: per candidate, its run of unchanged
        readings and stuck score; one that sat still through the excursion while its
        change model expected it to move (two unchanged hours at least: one alone is
        common, readings are rounded) is blamed first, and one the stuck test already
        judges stuck (``stuck_now``) before that."""
        if len(stuck_now) == 1:
            return sorted(stuck_now)
        stuck = [
            s
            for s, (run, score) in flat.items()
            if run > max(excursion_hours, 2) and score >= STILL_SCORE
        ]
        if len(stuck) == 1:
            return stuck
        usable = {s: e for s, e in self.evidence.items() if e < EXCLUDED / 2}
        if not usable:
            return []
        best = min(usable.values())
        return sorted((s for s, e in usable.items() if e - best < DECISIVE), key=usable.__getitem__)
