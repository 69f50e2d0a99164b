"""Device config of the sensor-health tests (the ``sensor_health`` section of the YAML).

Per-sensor limits come from the model spec (the station's own history); the levels below are
in units those limits define and were chosen from false-fault rates measured on the real
station history in time order (docs/drift.md, "Sensor health").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config.base import ConfigModel

SensorTestName = Literal["stuck", "spike", "range", "step", "consistency"]
ALL_TESTS: tuple[SensorTestName, ...] = ("stuck", "spike", "range", "step", "consistency")


class JumpConfig(ConfigModel):
    """Two-sided CUSUM on a sensor's standardised residual (its change this hour against the
    change its own history and the other sensors predict): the spike and step tests. Sigmas
    are the residual's robust sigma times the sensor's ``jump_scale`` from the spec, so one
    set of levels suits sensors with light and heavy tails alike."""

    allowance: float = Field(
        default=2.0,
        ge=0,
        title="Allowance (σ)",
        description="Residual (in sigmas) the CUSUM forgives every hour; only larger ones add up.",
    )
    decision: float = Field(
        default=3.5,
        gt=0,
        title="Decision level (σ)",
        description="CUSUM level at which a jump is declared.",
    )
    own_confirm: float = Field(
        default=3.0,
        ge=0,
        title="Own-history confirmation (σ)",
        description="The sensor's change must also be this far from what its own history "
        "alone predicts, so a sensor is not blamed for another one's jump.",
    )


class ConsistencyConfig(ConfigModel):
    """Reported apparent temperature against the one temperature, humidity and wind imply."""

    raise_at_c: float = Field(
        default=0.3,
        gt=0,
        title="Raise at (°C)",
        description="Raise when they differ by this much (2006–2015 never differ by more "
        "than 0.17 °C).",
    )
    clear_at_c: float = Field(
        default=0.2,
        ge=0,
        title="Clear at (°C)",
        description="Count an hour as consistent again at or below this difference.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ConsistencyConfig:
        if self.clear_at_c >= self.raise_at_c:
            raise ValueError(
                f"clear_at_c ({self.clear_at_c}) must be below raise_at_c ({self.raise_at_c})"
            )
        return self


class SensorHealthConfig(ConfigModel):
    """Tests that tell a broken station sensor (stuck, spiking, stepped, out of range, or
    disagreeing with the others) from weather, using the limits in the model's spec. A model
    without them (cameras, older weather models) runs no test."""

    enabled: bool = Field(default=True, title="Enabled", description="Run the sensor tests.")
    tests: list[SensorTestName] = Field(
        default_factory=lambda: list(ALL_TESTS),
        title="Tests",
        description="Which tests run: stuck, spike, range, step, consistency.",
    )
    sensors: list[str] | None = Field(
        default=None,
        title="Sensors",
        description="Reading fields to test (e.g. pressure_mb); null = every sensor the "
        "model's spec describes.",
    )
    flag_predictions: bool = Field(
        default=True,
        title="Flag predictions",
        description="Mark each prediction made while an input sensor is faulty "
        "(flags: ['sensor_fault:<sensor>']).",
    )
    withhold_forecasts: bool = Field(
        default=False,
        title="Withhold forecasts",
        description="Publish no prediction while any input sensor is judged faulty (counted "
        "as withheld_sensor_fault in telemetry); off: predict and flag them.",
    )
    range_margin: float = Field(
        default=0.05,
        ge=0,
        le=10,
        title="Range margin",
        description="Readings beyond the history's lowest/highest by more than this share of "
        "its span are out of range (readings outside the physical limits never reach the "
        "model; the source rejects and counts them, and the range test reports them).",
    )
    stuck_margin: float = Field(
        default=1.0,
        gt=0,
        title="Stuck margin",
        description="Stuck when unchanged readings add up to this multiple of the highest "
        "stuck score in the history, or outlast its longest unchanged run.",
    )
    jump: JumpConfig = Field(
        default_factory=JumpConfig, title="Jump", description="Spike and step test levels."
    )
    consistency: ConsistencyConfig = Field(
        default_factory=ConsistencyConfig,
        title="Consistency",
        description="Apparent-temperature consistency levels.",
    )
    clear_after_h: int = Field(
        default=3,
        ge=1,
        le=168,
        title="Clear after (h)",
        description="A fault clears after this many consecutive hourly readings pass its test.",
    )
    step_hold_h: int = Field(
        default=24,
        ge=1,
        le=24 * 90,
        title="Step hold (h)",
        description="A step that stayed cannot be seen after the jump; it stands this long "
        "unless the sensor jumps back by about as much.",
    )
