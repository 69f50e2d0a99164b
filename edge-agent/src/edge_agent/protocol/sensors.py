"""The station's sensor-health baseline, shipped in the model spec (``ModelSpec.sensor_health``).

Per sensor: the range its history spans, how long it ever stayed unchanged, and two small
linear models of its next-hour change fitted on the training history; plus the apparent
temperature relation between sensors. The device tells a broken instrument from weather
with them (``edge_agent.health``); ``edge_agent.health.baseline`` builds them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.protocol.messages import Name, WireModel

# Terms a change model may use. ``lag1``/``lag2``: the sensor's own change one and two hours
# earlier; ``hour_*``: the time of day (UTC) as one and two harmonics; ``d:<sensor>``: another
# sensor's change over the same hour.
OWN_TERMS = ("1", "lag1", "lag2", "hour_sin", "hour_cos", "hour2_sin", "hour2_cos")
_OTHER_TERM = re.compile(r"^d:[a-z0-9_]{1,64}$")


class ChangeModel(WireModel):
    """Predicts a sensor's change over one hour as ``Σ coef × term``; ``sigma`` is the robust
    spread (1.4826 × MAD) of what it leaves unexplained on the training history."""

    terms: list[Name] = Field(min_length=1, max_length=32)
    coef: list[float] = Field(min_length=1, max_length=32)
    sigma: float = Field(gt=0, description="Robust standard deviation of the residual.")

    @model_validator(mode="after")
    def _shape(self) -> ChangeModel:
        if len(self.terms) != len(self.coef):
            raise ValueError("a change model needs one coefficient per term")
        unknown = [t for t in self.terms if t not in OWN_TERMS and not _OTHER_TERM.match(t)]
        if unknown:
            raise ValueError(f"unknown change-model terms {unknown}")
        return self

    def others(self) -> list[str]:
        """Sensors whose same-hour change this model reads."""
        return [t[2:] for t in self.terms if t.startswith("d:")]


class SensorBaseline(WireModel):
    """One sensor (a reading field such as ``pressure_mb``) as its training history saw it."""

    name: Name
    std: float = Field(ge=0, description="Whole-period standard deviation of the readings.")
    low: float = Field(description="Lowest reading in the history (the device widens it).")
    high: float = Field(description="Highest reading in the history (the device widens it).")
    flat_eps: float = Field(
        ge=0, description="A change at most this large counts as no change (stuck test)."
    )
    flat_run_limit: int = Field(
        ge=2,
        description="Unchanged readings in a row that the history exceeds at most about once "
        "a year (stuck test).",
    )
    flat_score_limit: float = Field(
        ge=0,
        description="Stuck score (the movement the change model expected, in sigmas, summed "
        "over a run of unchanged readings) the history exceeds at most about once a year.",
    )
    jump_scale: float = Field(
        default=1.0,
        ge=1.0,
        description="How much heavier the tails of the change models' residuals are than a "
        "normal law's: the 99.9 % quantile of the jump statistic on the history (spikes that "
        "came back the next hour left out: those are faults) over the normal law's 3.29. The "
        "jump tests divide by it, so one set of levels suits every sensor.",
    )
    circular: bool = Field(default=False, description="Degrees on a circle (wind bearing).")
    own: ChangeModel | None = Field(
        default=None, description="Change from the sensor's own recent history and the hour."
    )
    cross: ChangeModel | None = Field(
        default=None, description="The same, plus the other sensors' changes in that hour."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SensorBaseline:
        if self.high < self.low:
            raise ValueError(f"{self.name}: high ({self.high}) is below low ({self.low})")
        return self


class ApparentConsistency(WireModel):
    """Apparent temperature against the one computed from temperature, humidity and wind
    (NWS wind chill below 10 °C with wind over 4.8 km/h, Rothfusz heat index from 26.7 °C,
    the temperature itself in between); quantiles of the absolute difference on history."""

    formula: Literal["nws"] = "nws"
    q99: float = Field(ge=0, description="99 % quantile of |reported − computed| (°C).")
    q999: float = Field(ge=0, description="99.9 % quantile of |reported − computed| (°C).")
    n: int = Field(ge=1, description="Hours behind the quantiles.")


class SensorHealthBaseline(WireModel):
    """Everything the device's sensor-health tests need, fitted on the training hours."""

    sensors: list[SensorBaseline] = Field(min_length=1, max_length=64)
    apparent: ApparentConsistency | None = None
    hours: int = Field(ge=1, description="Training hours behind the baseline.")

    @model_validator(mode="after")
    def _unique(self) -> SensorHealthBaseline:
        names = [s.name for s in self.sensors]
        if len(set(names)) != len(names):
            raise ValueError("sensor names must be unique")
        known = set(names)
        for s in self.sensors:
            for model in (s.own, s.cross):
                missing = [o for o in (model.others() if model else []) if o not in known]
                if missing:
                    raise ValueError(f"{s.name}: change model reads unknown sensors {missing}")
        return self

    def sensor(self, name: str) -> SensorBaseline:
        for item in self.sensors:
            if item.name == name:
                return item
        raise KeyError(name)
