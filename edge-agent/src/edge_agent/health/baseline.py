"""Building the sensor-health baseline from a station's hourly history (cloud side, numpy).

The change models are ordinary least squares refitted three times without the residuals
beyond five robust sigmas: the history holds real faults (pressure 0, the 00:00 UTC rows of
2006–2011 that are off in every sensor) that must not shape what "normal" means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.features.weather import READING_FIELDS, plausible_mask
from edge_agent.health.apparent import mismatch
from edge_agent.protocol.sensors import (
    ApparentConsistency,
    ChangeModel,
    SensorBaseline,
    SensorHealthBaseline,
)

FloatArray = npt.NDArray[np.float64]

# Wind bearing is degrees on a circle: no linear change model, only the stuck test.
CIRCULAR = frozenset({"wind_bearing_deg"})
OWN_TERMS: tuple[str, ...] = ("1", "lag1", "lag2", "hour_sin", "hour_cos", "hour2_sin", "hour2_cos")
# A change at most this share of the sensor's own-model sigma counts as no change: a stuck
# sensor whose last digit still flickers is still stuck.
FLAT_SHARE = 0.01
TRIM_SIGMAS = 5.0
MAD_TO_SIGMA = 1.4826
MIN_ROWS = 48
HOURS_PER_YEAR = 8766
# The 99.9 % quantile of |z| under a normal law; and how far a reading must leave and come
# back (in own-model sigmas) for the history's hour to count as a spike, not weather.
NORMAL_Q999 = 3.29
SPIKE_SIGMAS = 4.0


def _lag(x: FloatArray, k: int) -> FloatArray:
    out = np.full(x.size, np.nan)
    if k < x.size:
        out[k:] = x[: x.size - k]
    return out


def hour_terms(hours: npt.NDArray[np.datetime64]) -> dict[str, FloatArray]:
    """Time-of-day terms (UTC) of the change models."""
    h = np.asarray(hours, dtype="datetime64[h]")
    of_day = (h - h.astype("datetime64[D]")).astype(np.int64).astype(np.float64)
    angle = 2.0 * np.pi * of_day / 24.0
    return {
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
        "hour2_sin": np.sin(2.0 * angle),
        "hour2_cos": np.cos(2.0 * angle),
    }


def design(
    name: str,
    terms: Sequence[str],
    changes: Mapping[str, FloatArray],
    hours: dict[str, FloatArray],
) -> FloatArray:
    """Rows of the regressors ``terms`` for ``name``'s change at every hour (NaN where a
    needed reading is missing)."""
    own = changes[name]
    columns = []
    for term in terms:
        if term == "1":
            columns.append(np.ones(own.size))
        elif term == "lag1":
            columns.append(_lag(own, 1))
        elif term == "lag2":
            columns.append(_lag(own, 2))
        elif term.startswith("d:"):
            columns.append(changes[term[2:]])
        else:
            columns.append(hours[term])
    return np.column_stack(columns)


def robust_fit(x: FloatArray, y: FloatArray) -> tuple[FloatArray, float, int]:
    """Least squares without the rows beyond ``TRIM_SIGMAS`` robust sigmas (three passes):
    coefficients, the robust sigma of the residual, and the rows used."""
    ok = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
    xs, ys = x[ok], y[ok]
    if ys.size < MIN_ROWS:
        raise ValueError(f"only {ys.size} complete hours to fit a change model")
    keep = np.ones(ys.size, dtype=bool)
    coef = np.zeros(x.shape[1])
    sigma = 1.0
    for _ in range(3):
        coef = np.linalg.lstsq(xs[keep], ys[keep], rcond=None)[0]
        residual = ys - xs @ coef
        sigma = float(MAD_TO_SIGMA * np.median(np.abs(residual - np.median(residual))))
        sigma = max(sigma, 1e-9)
        keep = np.abs(residual) <= TRIM_SIGMAS * sigma
    return coef, sigma, int(keep.sum())


def flat_runs(values: FloatArray, eps: float) -> npt.NDArray[np.int64]:
    """Length of the run of unchanged readings each hour ends (1 = it changed)."""
    run = np.ones(values.size, dtype=np.int64)
    for i in range(1, values.size):
        same = abs(values[i] - values[i - 1]) <= eps  # NaN compares False: a gap ends a run
        run[i] = run[i - 1] + 1 if same else 1
    return run


def run_ends(run: npt.NDArray[np.int64], values: npt.ArrayLike) -> FloatArray:
    """``values`` at the last reading of every run of two or more unchanged readings."""
    x = np.asarray(values, dtype=np.float64)
    last = np.append(run[1:] == 1, True)
    ends: FloatArray = x[(run >= 2) & last]
    return ends


def _limit(values: FloatArray, allowed: int) -> float:
    """The level at most ``allowed`` of ``values`` exceed."""
    if values.size == 0:
        return 0.0
    ordered = np.sort(values)[::-1]
    return float(ordered[min(allowed, ordered.size - 1)]) if allowed < ordered.size else 0.0


def stuck_scores(run: npt.NDArray[np.int64], expected: FloatArray) -> FloatArray:
    """Stuck score each hour: the movement the change model expected (in sigmas) summed over
    the unchanged readings of the current run; 0 when the reading changed."""
    score = np.zeros(run.size)
    for i in range(1, run.size):
        if run[i] > 1:
            step = expected[i] if np.isfinite(expected[i]) else 0.0
            score[i] = score[i - 1] + step
    return score


def _change_model(
    name: str, terms: Sequence[str], changes: dict[str, FloatArray], hours: dict[str, FloatArray]
) -> ChangeModel:
    x = design(name, terms, changes, hours)
    coef, sigma, _ = robust_fit(x, changes[name])
    return ChangeModel(terms=list(terms), coef=[float(c) for c in coef], sigma=sigma)


def jump_scale(
    name: str,
    own: ChangeModel,
    cross: ChangeModel,
    changes: Mapping[str, FloatArray],
    hours: dict[str, FloatArray],
) -> float:
    """Tail weight of the jump statistic (the smaller of the two standardised residuals when
    they agree in sign) on the history, against a normal law's. Hours that jumped and came
    straight back are left out: the file's own spikes are faults, not weather."""
    z_own = changes[name] - design(name, own.terms, changes, hours) @ np.asarray(own.coef)
    z_own = z_own / own.sigma
    z_cross = changes[name] - design(name, cross.terms, changes, hours) @ np.asarray(cross.coef)
    z_cross = z_cross / cross.sigma
    back = _lag(z_own[::-1], 1)[::-1]  # the next hour's own residual
    spike = (np.abs(z_own) > SPIKE_SIGMAS) & (np.abs(back) > 0.5 * np.abs(z_own))
    spike &= np.sign(z_own) != np.sign(back)
    spike |= np.concatenate([[False], spike[:-1]])  # and the hour it came back
    statistic = np.minimum(np.abs(z_own), np.abs(z_cross))
    statistic = np.where(np.sign(z_own) == np.sign(z_cross), statistic, 0.0)
    usable = statistic[np.isfinite(statistic) & ~spike]
    if usable.size < MIN_ROWS:
        return 1.0
    return max(1.0, float(np.quantile(usable, 0.999)) / NORMAL_Q999)


def sensor_health_baseline(
    hours: npt.ArrayLike,
    readings: Mapping[str, npt.ArrayLike],
    sensors: Sequence[str] = READING_FIELDS,
    stuck_per_year: float = 1.0,
) -> SensorHealthBaseline:
    """Per-sensor limits and change models from consecutive UTC ``hours`` (one apart, NaN
    rows for missing hours) and raw ``readings`` (implausible values count as missing).

    The stuck limits are the run length and score that the history's runs of unchanged
    readings exceed ``stuck_per_year`` times a year at most (per sensor)."""
    h = np.asarray(hours, dtype="datetime64[h]")
    if h.size > 1 and not np.all(np.diff(h) == np.timedelta64(1, "h")):
        raise ValueError("hours must be consecutive, one hour apart (fill gaps with NaN)")
    clean: dict[str, FloatArray] = {}
    for name in sensors:
        raw = np.asarray(readings[name], dtype=np.float64)
        clean[name] = np.where(plausible_mask(name, raw), raw, np.nan)
    changes = {name: x - _lag(x, 1) for name, x in clean.items()}
    of_day = hour_terms(h)
    modelled = [s for s in sensors if s not in CIRCULAR]
    allowed = int(h.size / HOURS_PER_YEAR * stuck_per_year)
    out = []
    for name in sensors:
        x = clean[name]
        finite = x[np.isfinite(x)]
        if finite.size < MIN_ROWS:
            raise ValueError(f"{name}: only {finite.size} plausible readings")
        own = cross = None
        eps = 0.0
        scale = 1.0
        expected = np.zeros(x.size)
        if name not in CIRCULAR:
            own = _change_model(name, OWN_TERMS, changes, of_day)
            others = [f"d:{o}" for o in modelled if o != name]
            cross = _change_model(name, (*OWN_TERMS, *others), changes, of_day)
            eps = FLAT_SHARE * own.sigma
            predicted = design(name, cross.terms, changes, of_day) @ np.asarray(cross.coef)
            expected = np.abs(predicted) / cross.sigma
            scale = jump_scale(name, own, cross, changes, of_day)
        run = flat_runs(x, eps)
        score = stuck_scores(run, expected)
        out.append(
            SensorBaseline(
                name=name,
                std=float(finite.std()),
                low=float(finite.min()),
                high=float(finite.max()),
                flat_eps=eps,
                flat_run_limit=max(2, int(_limit(run_ends(run, run), allowed))),
                flat_score_limit=float(_limit(run_ends(run, score), allowed)),
                jump_scale=scale,
                circular=name in CIRCULAR,
                own=own,
                cross=cross,
            )
        )
    return SensorHealthBaseline(sensors=out, apparent=_apparent(clean), hours=int(h.size))


def _apparent(clean: Mapping[str, FloatArray]) -> ApparentConsistency | None:
    needed = ("apparent_temperature_c", "temperature_c", "humidity", "wind_speed_kmph")
    if any(n not in clean for n in needed):
        return None
    c = np.array(
        [mismatch(*row) for row in zip(*(clean[n] for n in needed), strict=True)],
        dtype=np.float64,
    )
    c = np.abs(c[np.isfinite(c)])
    if c.size == 0:
        return None
    return ApparentConsistency(
        q99=float(np.quantile(c, 0.99)), q999=float(np.quantile(c, 0.999)), n=int(c.size)
    )
