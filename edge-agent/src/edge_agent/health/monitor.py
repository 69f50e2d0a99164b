"""Sensor health of one station: every hourly reading through every test, faults out.

``SensorHealthMonitor.from_spec(spec, config)`` reads the limits and change models the
model carries (``ModelSpec.sensor_health``); ``observe(at, readings)`` returns the faults
that were raised or cleared by that hour; ``faulty()`` names the sensors judged faulty now.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from edge_agent.health.apparent import (
    RELATION,
    depends_on,
    mismatch,
    regime,
    restoring_offset,
)
from edge_agent.health.checks import ConsistencyBlame, JumpCheck, PendingJump, StuckCheck
from edge_agent.health.config import SensorHealthConfig, SensorTestName
from edge_agent.health.gates import FaultChange, FaultGate
from edge_agent.protocol.bundle import ModelSpec
from edge_agent.protocol.sensors import ChangeModel, SensorBaseline, SensorHealthBaseline

HOUR = timedelta(hours=1)
# A jump undecided (no reading came) this long is dropped: too late to call it a spike.
MAX_PENDING = timedelta(hours=3)
_TAU = 2.0 * math.pi


def _hour_terms(index: int) -> dict[str, float]:
    angle = _TAU * (index % 24) / 24.0
    return {
        "1": 1.0,
        "hour_sin": math.sin(angle),
        "hour_cos": math.cos(angle),
        "hour2_sin": math.sin(2.0 * angle),
        "hour2_cos": math.cos(2.0 * angle),
    }


def _or_zero(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _predict(model: ChangeModel, terms: Mapping[str, float]) -> float:
    total = 0.0
    for term, coef in zip(model.terms, model.coef, strict=True):
        total += coef * terms.get(term, math.nan)
    return total


class SensorHealthMonitor:
    """All tests for the sensors of one baseline; one instance per serving model."""

    def __init__(self, baseline: SensorHealthBaseline, config: SensorHealthConfig) -> None:
        self.baseline = baseline
        self.config = config
        wanted = set(config.sensors) if config.sensors is not None else None
        self.sensors: dict[str, SensorBaseline] = {
            s.name: s for s in baseline.sensors if wanted is None or s.name in wanted
        }
        self.tests: set[SensorTestName] = set(config.tests)
        self.stuck = {n: StuckCheck(s.flat_eps) for n, s in self.sensors.items()}
        jump = config.jump
        self.jumps = {
            n: JumpCheck(jump.allowance, jump.decision, jump.own_confirm)
            for n, s in self.sensors.items()
            if s.own is not None and s.cross is not None
        }
        self.gates: dict[tuple[str, SensorTestName], FaultGate] = {
            (n, t): FaultGate(n, t, config.clear_after_h) for n in self.sensors for t in self.tests
        }
        self.blame = ConsistencyBlame()
        self.consistency_sensors: list[str] = []
        self._history: collections.deque[tuple[int, dict[str, float]]] = collections.deque(maxlen=4)
        self.counters: collections.Counter[str] = collections.Counter()
        self.latest: dict[str, dict[str, float]] = {}

    @classmethod
    def from_spec(cls, spec: ModelSpec, config: SensorHealthConfig) -> SensorHealthMonitor | None:
        """A monitor when the model carries a sensor-health baseline, else None."""
        if spec.sensor_health is None:
            return None
        return cls(spec.sensor_health, config)

    # -- state ----------------------------------------------------------------------------

    def faulty(self) -> list[str]:
        """Sensors with any test raised now, sorted."""
        return sorted({sensor for (sensor, _), gate in self.gates.items() if gate.raised})

    def flags(self) -> list[str]:
        return [f"sensor_fault:{sensor}" for sensor in self.faulty()]

    def snapshot(self) -> dict[str, Any]:
        raised = [
            {"sensor": s, "test": t, "since": g.since.isoformat() if g.since else None}
            for (s, t), g in sorted(self.gates.items())
            if g.raised
        ]
        return {
            "sensors": sorted(self.sensors),
            "tests": sorted(self.tests),
            "faulty": self.faulty(),
            "raised": raised,
            "latest": self.latest,
            "counters": dict(self.counters),
        }

    # -- one hour -------------------------------------------------------------------------

    def observe(
        self, at: datetime, readings: Mapping[str, float], rejected: Collection[str] = ()
    ) -> list[FaultChange]:
        """Test the readings of the hour starting ``at`` (UTC, aware); ``rejected`` names
        sensors whose readings the source refused as physically impossible this hour."""
        index = math.floor(at.timestamp() / 3600.0)
        if self._history and index <= self._history[-1][0]:
            self.counters["out_of_order"] += 1
            return []
        values = {name: float(readings.get(name, math.nan)) for name in self.baseline_names}
        self._history.append((index, values))
        self.counters["hours"] += 1
        back = self._consecutive(index)
        changes = {n: self._delta(n, back, 0) for n in self.baseline_names}
        terms = _hour_terms(index)
        terms.update({f"d:{n}": d for n, d in changes.items()})
        innovations: dict[str, tuple[float, float]] = {}
        stats: dict[str, tuple[float, float, float]] = {}
        for name, sensor in self.sensors.items():
            z_own = z_cross = expected = math.nan
            if sensor.own is not None and sensor.cross is not None:
                # A gap two or three hours back costs only the lag terms (taken as no change).
                lags = {
                    "lag1": _or_zero(self._delta(name, back, 1)),
                    "lag2": _or_zero(self._delta(name, back, 2)),
                }
                own_terms = {**terms, **lags}
                residual_own = changes[name] - _predict(sensor.own, own_terms)
                predicted = _predict(sensor.cross, own_terms)
                z_own = residual_own / sensor.own.sigma
                z_cross = (changes[name] - predicted) / sensor.cross.sigma
                expected = abs(predicted) / sensor.cross.sigma
                innovations[name] = (residual_own, sensor.own.sigma)
            stats[name] = (z_own, z_cross, expected)
            self.latest[name] = {"value": values[name], "z_own": z_own, "z_cross": z_cross}
        out: list[FaultChange | None] = []
        out.extend(self._consistency(values, innovations, at))
        # A sensor the apparent-temperature relation depends on is only blamed for a jump
        # when the relation broke too: otherwise the others moved with it, as weather does.
        watched = self._watched(values)
        for name, sensor in self.sensors.items():
            value = values[name]
            z_own, z_cross, expected = stats[name]
            out.extend(self._range(sensor, value, at, name in rejected))
            out.extend(self._stuck(sensor, value, back, expected, at))
            if name in watched:
                z_own = z_cross = 0.0
            scale = sensor.jump_scale
            out.extend(
                self._jump(sensor, value, back, changes[name], z_own / scale, z_cross / scale, at)
            )
        return [c for c in out if c is not None]

    def _watched(self, values: Mapping[str, float]) -> tuple[str, ...]:
        """Sensors the relation vouches for this hour: it holds and depends on them."""
        if "consistency" not in self.tests or self.baseline.apparent is None:
            return ()
        c = self.latest.get("apparent_temperature_mismatch", {}).get("value", math.nan)
        if not math.isfinite(c) or abs(c) > self.config.consistency.clear_at_c:
            return ()
        return self._candidates(values)

    @property
    def baseline_names(self) -> list[str]:
        return [s.name for s in self.baseline.sensors]

    def _consecutive(self, index: int) -> int:
        """How many hours back the history runs without a gap (0..3)."""
        depth = 0
        for k, (hour, _) in enumerate(reversed(self._history)):
            if hour != index - k:
                break
            depth = k
        return depth

    def _value(self, name: str, back: int, k: int) -> float:
        if k > back:
            return math.nan
        return self._history[-1 - k][1][name]

    def _delta(self, name: str, back: int, k: int) -> float:
        """Change of ``name`` over the hour ending ``k`` hours ago (NaN across a gap)."""
        return self._value(name, back, k) - self._value(name, back, k + 1)

    def _gate(self, sensor: str, test: SensorTestName) -> FaultGate | None:
        return self.gates.get((sensor, test))

    # -- tests ----------------------------------------------------------------------------

    def _range(
        self, sensor: SensorBaseline, value: float, at: datetime, rejected: bool
    ) -> list[FaultChange | None]:
        gate = self._gate(sensor.name, "range")
        if gate is None:
            return []
        margin = self.config.range_margin * (sensor.high - sensor.low)
        low, high = sensor.low - margin, sensor.high + margin
        outside = math.isfinite(value) and not low <= value <= high
        if rejected:
            summary = f"{sensor.name} readings refused by the source as impossible"
        else:
            summary = f"{sensor.name} = {value:.4g} outside [{low:.4g}, {high:.4g}]"
        bound = high if math.isfinite(value) and value > high else low
        return [
            gate.step(
                outside or rejected,
                at,
                value=value if math.isfinite(value) else None,
                score=value if math.isfinite(value) else 0.0,
                threshold=bound,
                summary=summary,
            )
        ]

    def _stuck(
        self, sensor: SensorBaseline, value: float, back: int, expected: float, at: datetime
    ) -> list[FaultChange | None]:
        check = self.stuck[sensor.name]
        if not math.isfinite(value):
            check.reset(at)
            return []
        previous = self._value(sensor.name, back, 1) if back >= 1 else math.nan
        check.update(value, previous if math.isfinite(previous) else None, expected, at)
        gate = self._gate(sensor.name, "stuck")
        if gate is None:
            return []
        margin = self.config.stuck_margin
        run_limit = sensor.flat_run_limit * margin
        score_limit = sensor.flat_score_limit * margin
        too_long = check.run > run_limit
        too_still = check.run >= 2 and sensor.own is not None and check.score > score_limit
        start = (check.start or at) + HOUR
        summary = (
            f"{sensor.name} unchanged at {value:.4g} for {check.run} readings (stuck score "
            f"{check.score:.1f} against {score_limit:.1f}, run limit {run_limit:g})"
        )
        return [
            gate.step(
                too_long or too_still,
                at,
                since=start,
                value=value,
                score=check.score if sensor.own is not None else float(check.run),
                threshold=score_limit if sensor.own is not None else run_limit,
                summary=summary,
            )
        ]

    def _jump(
        self,
        sensor: SensorBaseline,
        value: float,
        back: int,
        change: float,
        z_own: float,
        z_cross: float,
        at: datetime,
    ) -> list[FaultChange | None]:
        check = self.jumps.get(sensor.name)
        if check is None:
            return []
        spike, step = self._gate(sensor.name, "spike"), self._gate(sensor.name, "step")
        out: list[FaultChange | None] = []
        became_step = False
        jumped = 0
        pending = check.pending
        if pending is not None and at - pending.at > MAX_PENDING:
            check.pending = pending = None
        if pending is not None and math.isfinite(value):
            check.pending = None
            check.reset()
            if abs(value - pending.before) < abs(pending.size) / 2:
                self.counters[f"spikes:{sensor.name}"] += 1
            else:
                check.hold(pending, self.config.step_hold_h)
                became_step = True
        else:
            jumped = check.update(z_cross, z_own)
        threshold = check.decision + check.allowance
        if jumped:
            size = z_cross * sensor.jump_scale * sensor.cross.sigma if sensor.cross else change
            if check.jumps_back(size):
                check.step = None
                self.counters[f"steps_back:{sensor.name}"] += 1
                jumped = 0
            else:
                before = self._value(sensor.name, back, 1)
                check.pending = PendingJump(at, size, before)
        summary = (
            f"{sensor.name} changed {change:+.4g} against its prediction by {z_cross:+.1f}σ "
            f"(own history {z_own:+.1f}σ)"
        )
        if spike is not None:
            out.append(
                spike.step(
                    jumped != 0,
                    at,
                    value=value,
                    score=abs(z_cross),
                    threshold=threshold,
                    summary=summary + ": a spike or the start of a step",
                )
            )
        held = check.step
        if held is not None and at >= held.until:
            check.step = held = None
        if step is not None:
            out.append(
                step.step(
                    held is not None,
                    at,
                    since=held.at if held is not None else None,
                    value=value,
                    score=abs(held.size) if held is not None else 0.0,
                    threshold=threshold * sensor.jump_scale * sensor.cross.sigma
                    if sensor.cross
                    else threshold,
                    summary=(
                        f"{sensor.name} jumped {held.size:+.4g} alone and stayed"
                        if held is not None
                        else f"{sensor.name}: step no longer held"
                    ),
                )
            )
        if became_step and spike is not None:
            # After the step is raised, so the sensor never looks healthy in between.
            out.append(spike.clear(at, value, 0.0, 0.0, f"{sensor.name} stayed: a step"))
        return out

    def _consistency(
        self,
        values: Mapping[str, float],
        innovations: dict[str, tuple[float, float]],
        at: datetime,
    ) -> list[FaultChange | None]:
        if "consistency" not in self.tests or self.baseline.apparent is None:
            return []
        self.latest.pop("apparent_temperature_mismatch", None)
        if any(name not in values for name in RELATION):
            return []
        apparent, temperature, humidity, wind = (values[n] for n in RELATION)
        c = mismatch(apparent, temperature, humidity, wind)
        if not math.isfinite(c):
            return []
        levels = self.config.consistency
        if abs(c) <= levels.clear_at_c:
            self.blame.reset()
        elif len(self.consistency_sensors) != 1:  # evidence matters until one is blamed
            self.blame.add(at, self._offsets(values), innovations)
        self.latest["apparent_temperature_mismatch"] = {"value": c}
        blamed = self.consistency_sensors
        if not blamed:
            if abs(c) < levels.raise_at_c:
                return []
            excursion = self._excursion_hours(at)
            flat = {
                s: (self.stuck[s].run, self.stuck[s].score) for s in RELATION if s in self.stuck
            }
            found = self.blame.blame(flat, excursion, self._stuck_now()) or list(
                self._candidates(values)
            )
            blamed = [s for s in found if (s, "consistency") in self.gates]
            if not blamed:
                self.counters["consistency_untested_sensor"] += 1
                return []
            self.consistency_sensors = blamed
        out: list[FaultChange | None] = []
        if abs(c) > levels.clear_at_c:
            out.extend(self._exonerate(values, c, at))
            blamed = self.consistency_sensors
        alone = "moved alone" if len(blamed) == 1 else "cannot be told apart"
        for sensor in blamed:
            gate = self.gates[(sensor, "consistency")]
            active = abs(c) > (levels.clear_at_c if gate.raised else levels.raise_at_c)
            out.append(
                gate.step(
                    active,
                    at,
                    since=self.blame.start if not gate.raised else None,
                    value=values.get(sensor),
                    score=abs(c),
                    threshold=levels.clear_at_c if gate.raised else levels.raise_at_c,
                    summary=(
                        f"apparent temperature {apparent:.2f} °C, computed {apparent - c:.2f} °C "
                        f"from temperature, humidity and wind: {c:+.2f} °C; "
                        f"{', '.join(blamed)} {alone}"
                    ),
                )
            )
        if not any(self.gates[(s, "consistency")].raised for s in blamed):
            self.consistency_sensors = []
        return out

    def _exonerate(
        self, values: Mapping[str, float], c: float, at: datetime
    ) -> list[FaultChange | None]:
        """Later hours may settle who broke the relation (a stuck sensor shows itself within
        two hours); the sensors no longer suspected are cleared."""
        stuck = self._stuck_now()
        if len(stuck) == 1 and not stuck <= set(self.consistency_sensors):
            keep = sorted(stuck)  # the stuck test has since found the culprit
        elif len(self.consistency_sensors) > 1:
            flat = {
                s: (self.stuck[s].run, self.stuck[s].score) for s in RELATION if s in self.stuck
            }
            found = set(self.blame.blame(flat, self._excursion_hours(at), stuck))
            keep = [s for s in self.consistency_sensors if s in found]
        else:
            return []
        if not keep or keep == self.consistency_sensors:
            return []
        out = []
        for sensor in self.consistency_sensors:
            if sensor not in keep and (sensor, "consistency") in self.gates:
                out.append(
                    self.gates[(sensor, "consistency")].clear(
                        at,
                        values.get(sensor),
                        abs(c),
                        self.config.consistency.clear_at_c,
                        f"{sensor} exonerated: {', '.join(keep)} broke the relation",
                    )
                )
        self.consistency_sensors = keep
        return out

    def _stuck_now(self) -> frozenset[str]:
        """Sensors of the relation the stuck test judges stuck now."""
        return frozenset(
            s for s in RELATION if (g := self.gates.get((s, "stuck"))) is not None and g.raised
        )

    def _excursion_hours(self, at: datetime) -> int:
        start = self.blame.start
        return 1 if start is None else int((at - start) / HOUR) + 1

    def _candidates(self, values: Mapping[str, float]) -> tuple[str, ...]:
        return depends_on(regime(values["temperature_c"], values["wind_speed_kmph"]))

    def _offsets(self, values: Mapping[str, float]) -> dict[str, float]:
        """Per sensor of the relation: its reading minus the one that alone would restore
        the relation (NaN when none would)."""
        readings = {n: values[n] for n in RELATION}
        return {n: restoring_offset(n, readings) for n in RELATION if n in self.sensors}
