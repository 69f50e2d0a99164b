"""How the camera decides "no pet": the shipped presence score against the alternatives.

    .venv/bin/python -m benchmarks.bench_no_pet [--pets ../shared/data/pets]
        [--scenes ../shared/data/scenes] [--extra-negatives DIR ...] [--folds 5] [--json OUT]

Every photo is scored out of fold (K folds over photos; a photo's colour, grayscale, degraded
and pasted-animal views stay in its fold, so no pasted animal is scored on a background that
was trained on), and every tuned threshold is chosen as training chooses it: the 2nd
percentile of held-out pets' scores, on a fifth of the training folds' pets kept out of the fit.

- ``pet_mass>=0.2``: the untrained rule, probability mass of EfficientNet-Lite0's own ImageNet
  classifier on its 118 dog and 5 cat classes at least 0.2 (the baseline to beat);
- ``pet_mass>=t``: the same rule with t chosen like the others;
- ``groups-logistic``: logistic regression on the six ImageNet group features alone (C = 1);
- ``embedding-logistic``: on the 1280-d pooled embedding alone (C = 0.01);
- ``groups+embedding`` (shipped): both (C = 0.01), as ``presence.fit_presence``.

Figures: pet recall on colour photos and on grayscale (infrared) versions of them; no-pet
recall on the scene photos, on their grayscale/dark/blurred/noisy versions and on the scenes
with another animal, person or vehicle pasted in (the Tux Paint stamps, when installed:
``scripts/bootstrap.sh`` ``ensure_stamps``); ``--extra-negatives`` folders are scored by models
fitted on everything (photos no method ever saw).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.catdog.backbone.efficientnet_lite import (
    build_lite0,
    default_weights_path,
    load_lite0_weights,
)
from cloud_trainer.catdog.features import FeatureCache, backbone_id, default_cache_dir
from cloud_trainer.catdog.ingest import NO_PET, ImageRecord, scan_folder
from cloud_trainer.catdog.presence import (
    BASELINE_MASS,
    PET_RECALL_TARGET,
    PET_VIEWS,
    PRESENCE_C,
    choose_threshold,
    fit_presence,
    load_stamps,
    negative_views,
    pet_mass,
    presence_features,
    softmax,
    stamps_id,
)
from cloud_trainer.catdog.train import preprocessing_for, presence_inputs

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
Array = npt.NDArray[np.float64]


class Views:
    """ImageNet logits and pooled features per photo and view, through the training cache."""

    def __init__(self, backbone: Any, weights: dict[str, Any], cache_root: Path, key: str) -> None:
        self.backbone = backbone
        self.imagenet = (weights["_fc.weight"], weights["_fc.bias"])
        self.cache_root = cache_root
        self.key = key
        self.pre = preprocessing_for(SIZE)

    def inputs(self, records: list[ImageRecord], views: tuple[str, ...]) -> tuple[Array, Array]:
        stamps = load_stamps()
        tag = "-".join(views) + (
            f"-{stamps_id(stamps)}" if any("stamp" in v for v in views) else ""
        )
        cache = FeatureCache(self.cache_root, self.key, SIZE, "bench-" + tag)
        return presence_inputs(self.backbone, records, views, self.pre, cache, self.imagenet)


Fit = Callable[[Array, Array, Array, Array], Callable[[Array, Array], Array]]


def _fit_mass(*_: Array) -> Callable[[Array, Array], Array]:
    return lambda logits, _emb: pet_mass(softmax(logits))


def _fit_logistic(use_groups: bool, use_embedding: bool, c: float) -> Fit:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(logits: Array, emb: Array) -> Array:
        parts = [presence_features(logits)] if use_groups else []
        return np.hstack([*parts, emb] if use_embedding else parts)

    def fit(pl: Array, pe: Array, nl: Array, ne: Array) -> Callable[[Array, Array], Array]:
        x = np.vstack([features(pl, pe), features(nl, ne)])
        y = np.r_[np.ones(len(pl)), np.zeros(len(nl))]
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        ).fit(x, y)
        return lambda lg, em: np.asarray(model.predict_proba(features(lg, em))[:, 1])

    return fit


def _fit_shipped(pl: Array, pe: Array, nl: Array, ne: Array) -> Callable[[Array, Array], Array]:
    head = fit_presence(pl, pe, nl, ne, PRESENCE_C)
    return head.score


METHODS: dict[str, tuple[Fit, bool]] = {
    # name: (fit(pet logits, pet emb, none logits, none emb) -> score, threshold tuned)
    f"pet_mass>={BASELINE_MASS}": (_fit_mass, False),
    "pet_mass>=t": (_fit_mass, True),
    "groups-logistic": (_fit_logistic(True, False, 1.0), True),
    "embedding-logistic": (_fit_logistic(False, True, 0.01), True),
    "groups+embedding (shipped)": (_fit_shipped, True),
}


def _flat(a: Array) -> Array:
    return a.reshape(-1, a.shape[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    weights_file = default_weights_path()
    weights = load_lite0_weights(weights_file)
    views = Views(
        build_lite0(SIZE, weights),
        weights,
        args.cache_dir or default_cache_dir(),
        backbone_id(weights_file),
    )
    records, _ = scan_folder(args.pets, negatives=args.scenes)
    pets = [r for r in records if r.label != NO_PET]
    scenes = [r for r in records if r.label == NO_PET]
    none_views = negative_views(bool(load_stamps()))
    pl, pe = views.inputs(pets, PET_VIEWS)
    nl, ne = views.inputs(scenes, none_views)
    rng = np.random.default_rng(args.seed)
    p_fold = rng.integers(0, args.folds, len(pets))
    n_fold = rng.integers(0, args.folds, len(scenes))
    calibrate = rng.random(len(pets)) < 0.2  # kept out of each fit to choose its threshold
    # Object photographs (OpenCV's samples: fruit, toys, a room) rather than empty crops.
    photos = np.array([r.path.name.startswith("photo_") for r in scenes])
    extra = [scan_folder(d, min_classes=1)[0] for d in args.extra_negatives]
    extra_inputs = [views.inputs(r, ("plain",)) for r in extra]
    results: dict[str, Any] = {}
    for name, (fit, tuned) in METHODS.items():
        p_scores = np.zeros(pl.shape[:2])
        n_scores = np.zeros(nl.shape[:2])
        p_thr = np.zeros(len(pets))
        n_thr = np.zeros(len(scenes))
        for k in range(args.folds):
            tr_p, tr_n = (p_fold != k) & ~calibrate, n_fold != k
            score = fit(_flat(pl[tr_p]), _flat(pe[tr_p]), _flat(nl[tr_n]), _flat(ne[tr_n]))
            t = BASELINE_MASS
            if tuned:
                cal = (p_fold != k) & calibrate
                t = choose_threshold(score(_flat(pl[cal]), _flat(pe[cal])).tolist(), args.target)
            te_p, te_n = p_fold == k, n_fold == k
            p_scores[te_p] = score(_flat(pl[te_p]), _flat(pe[te_p])).reshape(-1, pl.shape[1])
            n_scores[te_n] = score(_flat(nl[te_n]), _flat(ne[te_n])).reshape(-1, nl.shape[1])
            p_thr[te_p], n_thr[te_n] = t, t
        rejected = n_scores < n_thr[:, None]
        by_view = {v: float(np.mean(rejected[:, i])) for i, v in enumerate(none_views)}
        stamp_cols = [
            i for i, v in enumerate(none_views) if v.startswith("stamp") and "gray" not in v
        ]
        row: dict[str, Any] = {
            "pet_recall": float(np.mean(p_scores[:, 0] >= p_thr)),
            "grayscale_pet_recall": float(np.mean(p_scores[:, 1] >= p_thr)),
            "no_pet_recall": by_view["plain"],
            "no_pet_recall_photos": float(np.mean(rejected[photos, 0])) if photos.any() else None,
            "no_pet_recall_by_view": by_view,
            "no_pet_recall_other_animals": (
                float(np.mean(rejected[:, stamp_cols])) if stamp_cols else None
            ),
            "threshold_mean": float(np.mean(p_thr)),
        }
        if extra:
            fit_all = ~calibrate
            score = fit(_flat(pl[fit_all]), _flat(pe[fit_all]), _flat(nl), _flat(ne))
            t = BASELINE_MASS
            if tuned:
                t = choose_threshold(
                    score(_flat(pl[calibrate]), _flat(pe[calibrate])).tolist(), args.target
                )
            row["extra_negatives"] = {
                str(d): float(np.mean(score(lg[:, 0], em[:, 0]) < t))
                for d, (lg, em) in zip(args.extra_negatives, extra_inputs, strict=True)
            }
        results[name] = row
    return {
        "n_pets": len(pets),
        "n_scenes": len(scenes),
        "stamps": len(load_stamps()),
        "folds": args.folds,
        "pet_recall_target": args.target,
        "methods": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pets", type=Path, default=ROOT.parent / "shared/data/pets")
    parser.add_argument("--scenes", type=Path, default=ROOT.parent / "shared/data/scenes")
    parser.add_argument("--extra-negatives", type=Path, nargs="*", default=[])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--target",
        type=float,
        default=PET_RECALL_TARGET,
        help="share of held-out pets a tuned threshold keeps (training's default)",
    )
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    for folder in (args.pets, args.scenes):
        if not folder.is_dir():
            raise SystemExit(f"{folder} is not a folder")
    out = run(args)
    print(
        f"{out['n_pets']} pet photos, {out['n_scenes']} scenes, {out['stamps']} stamps, "
        f"{out['folds']} folds"
    )
    print(
        f"{'method':<28} {'pet':>6} {'gray pet':>9} {'no-pet':>7} {'animals':>8} "
        f"{'gray/dark/blur/noise no-pet':>28}"
    )
    for name, row in out["methods"].items():
        view = row["no_pet_recall_by_view"]
        degraded = "/".join(f"{view[v]:.3f}" for v in ("gray", "dark", "blur", "noise"))
        animals = row["no_pet_recall_other_animals"]
        print(
            f"{name:<28} {row['pet_recall']:>6.3f} {row['grayscale_pet_recall']:>9.3f} "
            f"{row['no_pet_recall']:>7.3f} {'-' if animals is None else f'{animals:.3f}':>8} "
            f"{degraded:>28}"
        )
        for folder, value in row.get("extra_negatives", {}).items():
            print(f"{'':<28} unseen negatives {folder}: no-pet recall {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
