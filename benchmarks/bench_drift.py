"""Calibrating the drift monitor: false alerts on stationary replays, detection delays on
injected shifts, and the cost per update against a raw numpy baseline.

    .venv/bin/python -m benchmarks.bench_drift [--data ../shared/data] [--quick]

Weather: hourly rows of the training period (2006-2012) become features with the
device's own ``compute_features``; half the rows build the baselines, the other half is
replayed shuffled (stationary) and in time order (seasons included). A logistic
regression stands in for the forecaster so the prediction detectors see real outputs.
Camera: image statistics of the pet photos, half for the baseline, half replayed
(bootstrap), then darkened or blurred frames.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from edge_agent.drift.baseline import class_ratio, feature_baselines, histogram_baseline
from edge_agent.drift.config import DriftConfig
from edge_agent.drift.metrics import psi
from edge_agent.drift.monitor import DriftMonitor
from edge_agent.features.image import image_statistics
from edge_agent.features.weather import (
    CONDITIONS,
    FEATURE_NAMES,
    READING_FIELDS,
    compute_features,
    condition_code,
)
from edge_agent.protocol.bundle import DriftBaseline, ModelSpec
from edge_agent.protocol.manifest import TensorSpec
from edge_agent.sources.csv_replay import CSV_COLUMNS
from tests.support.drift import camera_spec

ROOT = Path(__file__).resolve().parents[1]
WEEK = 168  # hourly samples per device-week
CAMERA_PER_WEEK = 10_080  # one drift sample a minute (motion-gated camera)
T0 = datetime(2020, 1, 6, tzinfo=UTC)
# Calendar features are not drift: their window distribution is set by the clock.
CALENDAR = {"hour_sin", "hour_cos", "doy_sin", "doy_cos"}


@dataclass(frozen=True)
class Sample:
    ts: datetime
    input_id: str
    frame: np.ndarray | None = None
    features: dict[str, float] | None = None
    observed_label: str | None = None


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    embedding: np.ndarray | None = None
    input_stats: dict[str, float] = field(default_factory=dict)


def load_weather(path: Path, years: tuple[int, int]) -> dict[str, np.ndarray]:
    """Hourly grid (sorted, de-duplicated, gaps as NaN) with features and the 4 h label."""
    rows: dict[int, list[str]] = {}
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            ts = datetime.fromisoformat(row["Timestamp"]).astimezone(UTC)
            if years[0] <= ts.year <= years[1]:
                rows.setdefault(
                    int(ts.timestamp() // 3600),
                    [row[c] for c in CSV_COLUMNS.values()] + [row["Weather_conditions"]],
                )
    first, last = min(rows), max(rows)
    n = last - first + 1
    readings = {name: np.full(n, np.nan) for name in READING_FIELDS}
    codes = np.full(n, np.nan)
    for hour, values in rows.items():
        i = hour - first
        for name, raw in zip(CSV_COLUMNS, values, strict=False):
            readings[name][i] = float(raw) if raw else np.nan
        codes[i] = condition_code(values[-1] or None)
    hours = (np.arange(n) + first).astype("datetime64[h]")
    matrix, valid = compute_features(hours, readings, codes)
    future = np.full(n, np.nan)
    future[:-4] = codes[4:]
    return {
        "hours": hours,
        "x": matrix,
        "valid": valid & np.isfinite(future) & np.isfinite(codes),
        "y": future,
        "now": codes,
    }


def weather_spec(
    x: np.ndarray, names: list[str], probs: np.ndarray, labels: list[str]
) -> ModelSpec:
    predicted = probs.argmax(axis=1)
    return ModelSpec(
        name="weather-rain-4h",
        task="tabular_classification",
        labels=labels,
        inputs=[TensorSpec(name="features", dtype="float32", shape=[None, len(names)])],
        outputs=[TensorSpec(name="probs", dtype="float32", shape=[None, len(labels)])],
        probabilities_output="probs",
        preprocessing={"kind": "tabular", "feature_set": "weather-hourly-v1", "features": names},
        horizon_s=4 * 3600,
        drift=DriftBaseline(
            features=feature_baselines({n: x[:, i] for i, n in enumerate(names)}),
            class_ratio=class_ratio([labels[i] for i in predicted], labels),
            confidence=histogram_baseline(probs.max(axis=1)),
        ),
    )


def replay(monitor: DriftMonitor, x, probs, labels, names, observed=None, shift=None, start=0):
    """Feed rows in order; returns (sample index, verdict) of every alert."""
    alerts = []
    for k in range(len(x)):
        row = x[k] if shift is None or k < start else x[k] + shift
        feats = dict(zip(names, row.tolist(), strict=True))
        p = probs[k]
        j = int(p.argmax())
        obs = labels[int(observed[k])] if observed is not None else None
        sample = Sample(T0 + timedelta(hours=k), f"r{k}", features=feats, observed_label=obs)
        pred = Prediction(labels[j], float(p[j]), input_stats=feats)
        for v in monitor.observe(sample, pred):
            alerts.append((k, v))
    return alerts


def weeks(n: int, per_week: int) -> float:
    return n / per_week


def raises(alerts, detector: str | None = None) -> int:
    return sum(
        1 for _, v in alerts if v.state == "raised" and (detector is None or v.detector == detector)
    )


def raised_at(alerts, detector: str, k: int) -> bool:
    """Whether ``detector`` was raised just before sample ``k``."""
    state = False
    for i, v in alerts:
        if i >= k:
            break
        if v.detector == detector:
            state = v.state == "raised"
    return state


def raised_fraction(alerts, detector: str, n: int) -> float:
    """Share of the stream during which ``detector`` stood raised."""
    total, since = 0, None
    for k, v in alerts:
        if v.detector != detector:
            continue
        if v.state == "raised":
            since = k
        elif since is not None:
            total, since = total + k - since, None
    if since is not None:
        total += n - since
    return total / n


def delay(alerts, detector: str, start: int) -> int | None:
    """Samples from the shift to the raise; -1 if already raised (a false alert), None if
    never raised."""
    if raised_at(alerts, detector, start):
        return -1
    hits = [
        k - start
        for k, v in alerts
        if v.state == "raised" and v.detector == detector and k >= start
    ]
    return hits[0] if hits else None


def weather_benchmark(
    data: Path, config: DriftConfig, trials: int, rng: np.random.Generator
) -> dict:
    from sklearn.linear_model import LogisticRegression

    grid = load_weather(data / "weather" / "weather_dataset_raw.csv.gz", (2006, 2012))
    names = [n for n in FEATURE_NAMES if n not in CALENDAR]
    cols = [FEATURE_NAMES.index(n) for n in names]
    ok = np.flatnonzero(grid["valid"])
    x_all, y_all = grid["x"][ok][:, cols], grid["y"][ok].astype(int)
    half = rng.permutation(ok.size)
    base_idx, live_idx = np.sort(half[: ok.size // 2]), np.sort(half[ok.size // 2 :])
    mu, sd = x_all[base_idx].mean(axis=0), x_all[base_idx].std(axis=0) + 1e-9
    model = LogisticRegression(max_iter=300).fit((x_all[base_idx] - mu) / sd, y_all[base_idx])
    labels = [CONDITIONS[c] for c in model.classes_]
    probs_all = model.predict_proba((x_all - mu) / sd)
    spec = weather_spec(x_all[base_idx], names, probs_all[base_idx], labels)
    cls_index = {c: i for i, c in enumerate(model.classes_)}
    out: dict = {"rows": int(ok.size), "features": len(names), "labels": labels}
    out["model_accuracy"] = float(
        (probs_all.argmax(1) == np.vectorize(cls_index.get)(y_all)).mean()
    )

    # Stationary: the held-out half, shuffled (i.i.d. draws from the training period).
    order = rng.permutation(live_idx)
    mon = DriftMonitor.from_spec(spec, config, model_version=1)
    alerts = replay(mon, x_all[order], probs_all[order], labels, names)
    n = len(order)
    out["stationary_samples"] = n
    watched = [d.name for d in mon.detectors if d.name in ("features", "class_ratio", "confidence")]
    out["stationary_fa_per_week"] = {d: raises(alerts, d) / weeks(n, WEEK) for d in watched}
    out["stationary_raised_share"] = {d: raised_fraction(alerts, d, n) for d in watched}

    # Time order over the grid: seasons, and the forecast join with its own observations.
    seq = ok[ok >= 0]
    obs = np.vectorize(lambda c: cls_index.get(c, 0))(grid["now"][seq].astype(int))
    mon = DriftMonitor.from_spec(spec, config, model_version=1)
    t_alerts = replay(mon, grid["x"][seq][:, cols], probs_all, labels, names, observed=obs)
    out["ordered_fa_per_week"] = {
        d.name: raises(t_alerts, d.name) / weeks(len(seq), WEEK) for d in mon.detectors
    }
    out["ordered_raised_share"] = {
        d.name: raised_fraction(t_alerts, d.name, len(seq)) for d in mon.detectors
    }
    acc = next(d for d in mon.detectors if d.name == "accuracy")
    out["ordered_join"] = acc.detail()

    # A 1σ shift of one feature at a random point of the stationary replay.
    for feature in ("pressure_mb", "temperature_c", "humidity"):
        j = names.index(feature)
        delays = []
        for _ in range(trials):
            start = int(rng.integers(2 * config.feature_window.size, 4 * WEEK))
            seg = rng.choice(live_idx, size=start + 4 * WEEK, replace=False)
            shift = np.zeros(len(names))
            shift[j] = spec.drift.feature(feature).std
            mon = DriftMonitor.from_spec(spec, config, model_version=1)
            a = replay(mon, x_all[seg], probs_all[seg], labels, names, shift=shift, start=start)
            delays.append(delay(a, "features", start))
        out[f"delay_1sd_{feature}"] = delays

    # A degraded forecaster: from mid-stream, 30 % of forecasts are replaced by a wrong label.
    degr = []
    for _ in range(max(trials // 2, 3)):
        start = int(rng.integers(8 * WEEK, 20 * WEEK))
        seg = seq[: start + 8 * WEEK]
        p = probs_all[: len(seg)].copy()
        hit = (np.arange(len(seg)) >= start) & (rng.random(len(seg)) < 0.3)
        p[hit] = np.roll(p[hit], 1, axis=1)
        mon = DriftMonitor.from_spec(spec, config, model_version=1)
        a = replay(mon, grid["x"][seg][:, cols], p, labels, names, observed=obs[: len(seg)])
        degr.append({d: delay(a, d, start) for d in ("accuracy", "errors")})
    out["degraded_forecaster_delay"] = degr
    return out


def pet_statistics(data: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    frames, stats = [], []
    for path in sorted((data / "pets").glob("*/*.jpg")):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        s = 160 / max(h, w)
        small: np.ndarray = cv2.resize(
            img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA
        ).astype(np.uint8)
        frames.append(small)
        stats.append(list(image_statistics(small).values()))
    return np.asarray(stats), frames


def camera_benchmark(
    data: Path, config: DriftConfig, trials: int, rng: np.random.Generator
) -> dict:
    stats, frames = pet_statistics(data)
    names = list(image_statistics(frames[0]))
    perm = rng.permutation(len(frames))
    base, live = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    spec = camera_spec({n: stats[base, i] for i, n in enumerate(names)})
    out: dict = {"photos": len(frames)}

    def run(rows: np.ndarray, start: int | None = None):
        mon = DriftMonitor.from_spec(spec, config, model_version=1)
        alerts = []
        for k, row in enumerate(rows):
            st = dict(zip(names, row.tolist(), strict=True))
            for v in mon.observe(
                Sample(T0 + timedelta(seconds=60 * k), f"f{k}"),
                Prediction("cat", 0.9, input_stats=st),
            ):
                alerts.append((k, v))
        return alerts

    n = 30 * len(live)
    a = run(stats[rng.choice(live, size=n)])
    out["stationary_samples"] = n
    out["stationary_fa_per_10k"] = raises(a) / n * 10_000
    out["stationary_raised_share"] = raised_fraction(a, "features", n)
    out["stationary_fa_per_week_at_1_per_min"] = raises(a) / weeks(n, CAMERA_PER_WEEK)
    altered = {
        "darkened_x0.6": lambda f: cv2.convertScaleAbs(f, alpha=0.6),
        "blurred_5x5": lambda f: cv2.GaussianBlur(f, (5, 5), 0),
    }
    for name, change in altered.items():
        moved = np.asarray(
            [list(image_statistics(np.asarray(change(frames[i]), np.uint8)).values()) for i in live]
        )
        delays = []
        for _ in range(trials):
            start = int(rng.integers(2 * config.image_window.size, 3 * config.image_window.size))
            pick = rng.integers(0, len(live), size=start + 500)
            rows = np.where(
                (np.arange(len(pick)) >= start)[:, None], moved[pick], stats[live][pick]
            )
            delays.append(delay(run(rows), "features", start))
        out[f"delay_{name}"] = delays
    return out


def cost_benchmark(config: DriftConfig, rng: np.random.Generator) -> dict:
    """µs per observe() for a 25-feature tabular model, against a raw numpy recompute."""
    names = [f"f{i}" for i in range(25)]
    x = rng.normal(size=(5000, 25))
    spec = weather_spec(x, names, np.tile([0.7, 0.3], (5000, 1)), ["no_rain", "rain"])
    mon = DriftMonitor.from_spec(spec, config, model_version=1)
    rows = [dict(zip(names, r.tolist(), strict=True)) for r in x[:3000]]
    samples = [Sample(T0 + timedelta(hours=k), f"c{k}", features=r) for k, r in enumerate(rows)]
    preds = [Prediction("rain", 0.7, input_stats=r) for r in rows]
    t = time.perf_counter()
    for s, p in zip(samples, preds, strict=True):
        mon.observe(s, p)
    ours = (time.perf_counter() - t) / len(rows) * 1e6
    # Raw baseline: keep the window as an array and re-bin it for every sample.
    w = config.feature_window.size
    edges = [np.asarray(spec.drift.feature(n).edges) for n in names]
    probs = [np.asarray(spec.drift.feature(n).probs) for n in names]
    t = time.perf_counter()
    for k in range(len(rows)):
        win = x[max(0, k - w + 1) : k + 1]
        if k % config.feature_window.step == 0:
            for i in range(25):
                c = np.histogram(np.clip(win[:, i], edges[i][0], edges[i][-1]), edges[i])[0]
                psi(c, probs[i])
    raw = (time.perf_counter() - t) / len(rows) * 1e6
    return {"observe_us": ours, "raw_rebin_us": raw, "ratio_raw_over_ours": raw / ours}


def summarise(delays: list[int | None]) -> str:
    found = [d for d in delays if d is not None and d >= 0]
    miss = sum(1 for d in delays if d is None)
    pre = sum(1 for d in delays if d == -1)
    tail = f"missed {miss}/{len(delays)}, raised before the shift {pre}"
    if not found:
        return tail
    return f"median {np.median(found):.0f}, max {max(found)}, {tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--config", type=Path, help="JSON DriftConfig to try (default: defaults)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=["weather", "seasons", "camera", "cost"])
    parser.add_argument("--model", type=Path, help="weather ONNX for --only seasons")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    config = (
        DriftConfig.model_validate_json(args.config.read_text()) if args.config else DriftConfig()
    )
    rng = np.random.default_rng(args.seed)
    results: dict = {"config": json.loads(config.model_dump_json())}
    if args.only in (None, "cost"):
        results["cost"] = c = cost_benchmark(config, rng)
        print(
            f"cost per observe(): {c['observe_us']:.1f} µs "
            f"(raw re-bin {c['raw_rebin_us']:.1f} µs, ×{c['ratio_raw_over_ours']:.1f})"
        )
    if args.only in (None, "weather"):
        results["weather"] = w = weather_benchmark(args.data, config, args.trials, rng)
        print(
            f"weather: {w['rows']} rows, {w['features']} features, "
            f"stand-in model accuracy {w['model_accuracy']:.3f}"
        )
        print(
            f"  stationary (shuffled, {w['stationary_samples']} h): false alerts per device-week "
            + ", ".join(f"{k} {v:.3f}" for k, v in w["stationary_fa_per_week"].items())
        )
        print(
            "    share of time raised "
            + ", ".join(f"{k} {v:.3f}" for k, v in w["stationary_raised_share"].items())
        )
        print(
            "  time order (seasons): alerts per device-week "
            + ", ".join(f"{k} {v:.3f}" for k, v in w["ordered_fa_per_week"].items())
        )
        print(
            "    share of time raised "
            + ", ".join(f"{k} {v:.3f}" for k, v in w["ordered_raised_share"].items())
        )
        print(f"  join: {w['ordered_join']}")
        for f in ("pressure_mb", "temperature_c", "humidity"):
            print(f"  1σ shift of {f}: delay in hourly samples {summarise(w[f'delay_1sd_{f}'])}")
        for d in ("accuracy", "errors"):
            found = [x[d] for x in w["degraded_forecaster_delay"]]
            print(f"  30 % wrong forecasts, {d}: delay {summarise(found)}")
    if args.only in (None, "seasons"):
        from benchmarks.bench_drift_seasons import report, seasonal_benchmark

        results["seasons"] = s = seasonal_benchmark(args.data, config, args.trials, rng, args.model)
        report(s, summarise)
    if args.only in (None, "camera"):
        results["camera"] = c = camera_benchmark(args.data, config, args.trials, rng)
        print(
            f"camera: {c['photos']} photos; stationary {c['stationary_samples']} frames: "
            f"{c['stationary_fa_per_10k']:.2f} false alerts per 10k frames "
            f"({c['stationary_fa_per_week_at_1_per_min']:.2f}/week at 1/min), "
            f"raised {c['stationary_raised_share']:.3f} of the time"
        )
        for k in ("darkened_x0.6", "blurred_5x5"):
            print(f"  {k}: delay in frames {summarise(c[f'delay_{k}'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
