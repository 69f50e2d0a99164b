"""Apparent temperature from temperature, humidity and wind: the relation the station's
readings obey, so one sensor that disagrees with the others stands out.

The station's history follows the US National Weather Service definitions to within 0.02 °C
(median): the wind chill below 50 °F (10 °C) with wind above 3 mph (4.8 km/h), the Rothfusz
heat index from 80 °F (26.7 °C), and the air temperature itself in between.
"""

from __future__ import annotations

import math
from typing import Literal

Regime = Literal["wind_chill", "heat_index", "plain"]

WIND_CHILL_MAX_C = 10.0
# 3 mph is 4.828 km/h, which stations report as 4.83: the wind chill needs more than that.
WIND_CHILL_MIN_KMPH = 4.835
HEAT_INDEX_MIN_C = 80.0 * 5.0 / 9.0 - 160.0 / 9.0  # 80 °F


def regime(temperature_c: float, wind_kmph: float) -> Regime:
    """Which formula applies: it decides which sensors the relation depends on."""
    if temperature_c >= HEAT_INDEX_MIN_C:
        return "heat_index"
    if temperature_c <= WIND_CHILL_MAX_C and wind_kmph > WIND_CHILL_MIN_KMPH:
        return "wind_chill"
    return "plain"


def wind_chill_c(temperature_c: float, wind_kmph: float) -> float:
    v = math.pow(wind_kmph, 0.16)
    return 13.12 + 0.6215 * temperature_c - 11.37 * v + 0.3965 * temperature_c * v


def heat_index_c(temperature_c: float, humidity: float) -> float:
    """Rothfusz regression (°F and % inside), returned in °C; ``humidity`` is 0..1."""
    t = temperature_c * 9.0 / 5.0 + 32.0
    r = humidity * 100.0
    hi = (
        -42.379
        + 2.04901523 * t
        + 10.14333127 * r
        - 0.22475541 * t * r
        - 0.00683783 * t * t
        - 0.05481717 * r * r
        + 0.00122874 * t * t * r
        + 0.00085282 * t * r * r
        - 0.00000199 * t * t * r * r
    )
    return (hi - 32.0) * 5.0 / 9.0


def apparent_c(temperature_c: float, humidity: float, wind_kmph: float) -> float:
    """The apparent temperature the other three readings imply (NaN if one is missing)."""
    if not (math.isfinite(temperature_c) and math.isfinite(humidity) and math.isfinite(wind_kmph)):
        return math.nan
    which = regime(temperature_c, wind_kmph)
    if which == "heat_index":
        return heat_index_c(temperature_c, humidity)
    if which == "wind_chill":
        return wind_chill_c(temperature_c, max(wind_kmph, 0.0))
    return temperature_c


# Readings this close to a regime boundary may have been computed on either side of it
# (the station rounds wind to 0.01 km/h and temperature to 0.1 °F before it decides).
_NEAR_WIND_KMPH = 0.02
_NEAR_TEMPERATURE_C = 0.1


def mismatch(
    apparent_temperature_c: float, temperature_c: float, humidity: float, wind_kmph: float
) -> float:
    """Reported apparent temperature minus the one the other readings imply (°C); next to a
    regime boundary, the smaller difference of the two sides. NaN if a reading is missing."""
    implied = apparent_c(temperature_c, humidity, wind_kmph)
    if not (math.isfinite(implied) and math.isfinite(apparent_temperature_c)):
        return math.nan
    best = apparent_temperature_c - implied
    sides = [temperature_c]
    near_heat = abs(temperature_c - HEAT_INDEX_MIN_C) <= _NEAR_TEMPERATURE_C
    near_chill = temperature_c <= WIND_CHILL_MAX_C + _NEAR_TEMPERATURE_C and (
        abs(wind_kmph - WIND_CHILL_MIN_KMPH) <= _NEAR_WIND_KMPH
        or (
            wind_kmph > WIND_CHILL_MIN_KMPH
            and temperature_c > WIND_CHILL_MAX_C - _NEAR_TEMPERATURE_C
        )
    )
    if near_heat:
        sides.append(heat_index_c(temperature_c, humidity))
    if near_chill:
        sides.append(wind_chill_c(temperature_c, max(wind_kmph, 0.0)))
    for side in sides:
        diff = apparent_temperature_c - side
        if abs(diff) < abs(best):
            best = diff
    return best


def depends_on(which: Regime) -> tuple[str, ...]:
    """The sensors the relation involves in a regime, apparent temperature first."""
    if which == "heat_index":
        return ("apparent_temperature_c", "temperature_c", "humidity")
    if which == "wind_chill":
        return ("apparent_temperature_c", "temperature_c", "wind_speed_kmph")
    return ("apparent_temperature_c", "temperature_c")


# Where to look for the reading that would restore the relation: (lowest, highest, step).
_SEARCH = {
    "temperature_c": (-60.0, 60.0, 0.05),
    "humidity": (0.01, 1.0, 0.002),
    "wind_speed_kmph": (0.0, 150.0, 0.05),
}
# Only this far from the reading: a sensor is not blamed for a fault larger than this.
_WINDOW = {"temperature_c": 30.0, "humidity": 1.0, "wind_speed_kmph": 60.0}
RELATION = ("apparent_temperature_c", "temperature_c", "humidity", "wind_speed_kmph")


def restoring_offset(sensor: str, readings: dict[str, float]) -> float:
    """How far ``sensor``'s reading is from the value that alone would make the relation
    hold (reading minus that value); NaN when no value of it would. Regimes are crossed
    as needed: a wind stuck at 0 is blamed through the wind chill it no longer brings."""
    a, t, h, w = (readings[n] for n in RELATION)
    if sensor == "apparent_temperature_c":
        return a - apparent_c(t, h, w)
    low, high, step = _SEARCH[sensor]
    x = readings[sensor]
    if not math.isfinite(x):
        return math.nan
    low, high = max(low, x - _WINDOW[sensor]), min(high, x + _WINDOW[sensor])

    def gap(v: float) -> float:
        moved = {**readings, sensor: v}
        return a - apparent_c(moved["temperature_c"], moved["humidity"], moved["wind_speed_kmph"])

    best = math.nan
    n = round((high - low) / step)
    previous_v, previous_g = low, gap(low)
    for i in range(1, n + 1):
        v = low + i * step
        g = gap(v)
        if previous_g == 0.0 or (previous_g > 0) != (g > 0):
            # A root (or a jump across zero at a regime boundary): keep the nearest to x.
            root = previous_v if previous_g == 0.0 else v - step * g / (g - previous_g)
            if abs(previous_g - g) > 5.0 and abs(g) > 1.0 and abs(previous_g) > 1.0:
                previous_v, previous_g = v, g
                continue  # a discontinuity, not a value that makes them agree
            if not math.isfinite(best) or abs(x - root) < abs(x - best):
                best = root
        previous_v, previous_g = v, g
    return x - best if math.isfinite(best) else math.nan
