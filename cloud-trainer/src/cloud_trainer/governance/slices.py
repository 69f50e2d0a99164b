"""Metrics per slice (class, breed, season, time of day, site, device), with warnings.

A slice is flagged when its figure falls more than ``margin`` (relative) below the whole,
or, in production where there are no labels, when its mix of predicted labels departs from
the validation mix by more than ``margin``. Slices smaller than ``min_rows`` are listed but
never flagged: a handful of rows says nothing either way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.governance.fleet_facts import DeviceTraffic

DEFAULT_MARGIN = 0.2
DEFAULT_MIN_ROWS = 5
SEASONS = {
    12: "winter",
    1: "winter",
    2: "winter",
    3: "spring",
    4: "spring",
    5: "spring",
    6: "summer",
    7: "summer",
    8: "summer",
    9: "autumn",
    10: "autumn",
    11: "autumn",
}
TIMES_OF_DAY = (
    (0, "night 00-06"),
    (6, "morning 06-12"),
    (12, "afternoon 12-18"),
    (18, "evening 18-24"),
)


class SliceMetric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str
    n: int
    metric: str
    value: float | None
    whole: float | None
    warning: str | None = None


class SliceReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    margin: float
    min_rows: int
    slices: list[SliceMetric] = Field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [s.warning for s in self.slices if s.warning]


def _flag(s: SliceMetric, margin: float, min_rows: int, what: str) -> SliceMetric:
    if s.value is None or s.whole is None or s.n < min_rows or s.whole <= 0:
        return s
    gap = (s.whole - s.value) / s.whole
    if gap > margin:
        s.warning = (
            f"{s.kind} {s.name}: {what} {s.value:.3f} is {gap:.0%} below the whole "
            f"({s.whole:.3f}, n={s.n})"
        )
    return s


def _accuracy(y: npt.NDArray[np.int64], p: npt.NDArray[np.int64]) -> float:
    return float((y == p).mean())


def _recall(y: npt.NDArray[np.int64], p: npt.NDArray[np.int64], k: int) -> float | None:
    mask = y == k
    return float((p[mask] == k).mean()) if mask.any() else None


def class_slices(
    y: npt.NDArray[np.int64],
    pred: npt.NDArray[np.int64],
    labels: Sequence[str],
    margin: float,
    min_rows: int,
) -> list[SliceMetric]:
    """Recall per true class against the balanced accuracy (mean recall) of the whole."""
    recalls = [_recall(y, pred, k) for k in range(len(labels))]
    present = [r for r in recalls if r is not None]
    whole = float(np.mean(present)) if present else None
    return [
        _flag(
            SliceMetric(
                kind="class",
                name=label,
                n=int((y == k).sum()),
                metric="recall",
                value=recalls[k],
                whole=whole,
            ),
            margin,
            min_rows,
            "recall",
        )
        for k, label in enumerate(labels)
    ]


def group_slices(
    kind: str,
    groups: Sequence[str],
    y: npt.NDArray[np.int64],
    pred: npt.NDArray[np.int64],
    margin: float,
    min_rows: int,
) -> list[SliceMetric]:
    """Accuracy per group (breed, season, hour band) against the whole's accuracy."""
    whole = _accuracy(y, pred) if y.size else None
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        index[g].append(i)
    out = []
    for name in sorted(index):
        idx = np.asarray(index[name])
        s = SliceMetric(
            kind=kind,
            name=name,
            n=int(idx.size),
            metric="accuracy",
            value=_accuracy(y[idx], pred[idx]),
            whole=whole,
        )
        out.append(_flag(s, margin, min_rows, "accuracy"))
    return out


def weather_slices(
    y: npt.NDArray[np.int64],
    pred: npt.NDArray[np.int64],
    hours: npt.NDArray[np.datetime64],
    labels: Sequence[str],
    margin: float = DEFAULT_MARGIN,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> SliceReport:
    """Per class, per season and per time of day on the forecaster's test rows."""
    months = hours.astype("datetime64[M]").astype(int) % 12 + 1
    hour_of_day = hours.astype("datetime64[h]").astype(int) % 24
    seasons = [SEASONS[int(m)] for m in months]
    bands = [
        next(name for start, name in reversed(TIMES_OF_DAY) if h >= start) for h in hour_of_day
    ]
    return SliceReport(
        margin=margin,
        min_rows=min_rows,
        slices=[
            *class_slices(y, pred, labels, margin, min_rows),
            *group_slices("season", seasons, y, pred, margin, min_rows),
            *group_slices("time of day", bands, y, pred, margin, min_rows),
        ],
    )


def image_slices(
    y: npt.NDArray[np.int64],
    pred: npt.NDArray[np.int64],
    breeds: Sequence[str],
    labels: Sequence[str],
    margin: float = DEFAULT_MARGIN,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> SliceReport:
    """Per class and per breed on the camera model's test photos."""
    return SliceReport(
        margin=margin,
        min_rows=min_rows,
        slices=[
            *class_slices(y, pred, labels, margin, min_rows),
            *group_slices("breed", breeds, y, pred, margin, min_rows),
        ],
    )


def _mix_warning(
    where: str, counts: dict[str, int], reference: dict[str, float], margin: float
) -> tuple[float | None, str | None]:
    """The largest label-vs-label odds change against validation, and its warning."""
    total = sum(counts.values())
    labels = sorted(lab for lab in reference if reference[lab] > 0)
    if total == 0 or len(labels) < 2:
        return None, None
    worst: tuple[float, str, str] | None = None
    for a in labels:
        for b in labels:
            if a == b or counts.get(b, 0) == 0:
                continue
            ratio = (counts.get(a, 0) / counts[b]) / (reference[a] / reference[b])
            if worst is None or ratio > worst[0]:
                worst = (ratio, a, b)
    if worst is None:
        return None, None
    ratio, a, b = worst
    if ratio - 1.0 > margin:
        return ratio, (
            f"{where}: predicts {a} {ratio - 1.0:.0%} more often than {b} relative to "
            f"validation ({counts.get(a, 0)} {a} vs {counts.get(b, 0)} {b})"
        )
    return ratio, None


def production_slices(
    traffic: Sequence[DeviceTraffic],
    validation_ratio: dict[str, float],
    margin: float = DEFAULT_MARGIN,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> SliceReport:
    """Per site and per device: the predicted-label mix and mean confidence in production."""
    report = SliceReport(margin=margin, min_rows=min_rows)
    by_site: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    conf_site: dict[str, float] = defaultdict(float)
    all_n = sum(sum(d.counts.values()) for d in traffic)
    all_conf = sum(sum(d.confidence_sum.values()) for d in traffic)
    whole_conf = all_conf / all_n if all_n else None
    rows: list[tuple[str, str, dict[str, int], float]] = []
    for d in traffic:
        site = d.site or "(unknown site)"
        for label, n in d.counts.items():
            by_site[site][label] += n
        conf_site[site] += sum(d.confidence_sum.values())
        rows.append(("device", d.device_id, dict(d.counts), sum(d.confidence_sum.values())))
    rows = [("site", s, dict(c), conf_site[s]) for s, c in sorted(by_site.items())] + rows
    for kind, name, counts, conf in rows:
        n = sum(counts.values())
        ratio, warning = _mix_warning(f"{kind} {name}", counts, validation_ratio, margin)
        report.slices.append(
            SliceMetric(
                kind=kind,
                name=name,
                n=n,
                metric="label odds vs validation",
                value=ratio,
                whole=1.0,
                warning=warning if n >= min_rows else None,
            )
        )
        confidence = SliceMetric(
            kind=kind,
            name=name,
            n=n,
            metric="mean confidence",
            value=conf / n if n else None,
            whole=whole_conf,
        )
        report.slices.append(_flag(confidence, margin, min_rows, "mean confidence"))
    return report
