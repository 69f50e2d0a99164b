"""Permutation importance and its change between versions, for any tabular ONNX forecaster."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

ScoreFn = Callable[[npt.NDArray[np.int64], npt.NDArray[np.float64]], float]
ProbFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]


class FeatureImportance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: str
    mean_drop: float = Field(description="Mean fall of the score when the column is shuffled.")
    std_drop: float
    rank: int = Field(ge=1)


class ImportanceResult(BaseModel):
    """Importance of every feature on one data set, ranked; ties broken by feature name."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    baseline_score: float
    n_rows: int
    repeats: int
    seed: int
    features: list[FeatureImportance]

    def ranking(self) -> list[str]:
        return [f.feature for f in self.features]

    def by_feature(self) -> dict[str, FeatureImportance]:
        return {f.feature: f for f in self.features}


class ImportanceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: str
    before: float
    after: float
    change: float
    rank_before: int
    rank_after: int


def roc_auc(y: npt.NDArray[np.int64], prob: npt.NDArray[np.float64]) -> float:
    """ROC-AUC by ranks (ties averaged); NaN when only one class is present."""
    from scipy.stats import rankdata

    positives = int(y.sum())
    negatives = int(y.size - positives)
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(prob)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def permutation_importance(
    prob: ProbFn,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    feature_names: Sequence[str],
    *,
    repeats: int = 5,
    seed: int = 0,
    score: ScoreFn = roc_auc,
    metric: str = "roc_auc",
) -> ImportanceResult:
    """How much the score falls when one column is shuffled, over ``repeats`` shuffles.

    Every feature gets its own generator derived from ``(seed, column)``, so the result does
    not depend on the order features are visited in: two runs give the same numbers.
    """
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"rows have {x.shape[-1]} columns, names give {len(feature_names)}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{x.shape[0]} rows but {y.shape[0]} labels")
    base = score(y, prob(x))
    if not math.isfinite(base):
        raise ValueError(f"the {metric} of the unshuffled data is undefined (one class only?)")
    rows: list[tuple[str, float, float]] = []
    work = np.array(x, dtype=np.float32, copy=True)
    for j, name in enumerate(feature_names):
        rng = np.random.default_rng([seed, j])
        original = work[:, j].copy()
        drops = []
        for _ in range(repeats):
            work[:, j] = original[rng.permutation(original.size)]
            drops.append(base - score(y, prob(work)))
        work[:, j] = original
        rows.append((name, float(np.mean(drops)), float(np.std(drops))))
    # Rounding before ranking keeps float noise at the 1e-12 level from reordering ties.
    rows.sort(key=lambda r: (-round(r[1], 9), r[0]))
    return ImportanceResult(
        metric=metric,
        baseline_score=float(base),
        n_rows=int(x.shape[0]),
        repeats=repeats,
        seed=seed,
        features=[
            FeatureImportance(feature=name, mean_drop=mean, std_drop=std, rank=i + 1)
            for i, (name, mean, std) in enumerate(rows)
        ],
    )


def importance_change(before: ImportanceResult, after: ImportanceResult) -> list[ImportanceChange]:
    """Per feature: importance in the older and the newer version, largest change first."""
    old, new = before.by_feature(), after.by_feature()
    changes = [
        ImportanceChange(
            feature=name,
            before=old[name].mean_drop,
            after=new[name].mean_drop,
            change=new[name].mean_drop - old[name].mean_drop,
            rank_before=old[name].rank,
            rank_after=new[name].rank,
        )
        for name in sorted(old.keys() & new.keys())
    ]
    changes.sort(key=lambda c: (-abs(round(c.change, 9)), c.feature))
    return changes
