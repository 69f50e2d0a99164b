"""Training both architectures into one graph: 0-255 RGB in, probabilities and embedding out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.catdog.augment import random_augment
from cloud_trainer.catdog.backbone.efficientnet_lite import (
    EMBEDDING_DIM,
    LITE0_STAGES,
    block_stages,
    build_lite0,
    default_weights_path,
    load_lite0_weights,
)
from cloud_trainer.catdog.features import (
    FeatureCache,
    backbone_id,
    default_cache_dir,
    extract_features,
    frame_input,
)
from cloud_trainer.catdog.head import C_GRID, LinearHead, fit_linear_head
from cloud_trainer.catdog.ingest import NO_PET, ImageRecord, read_image
from cloud_trainer.catdog.presence import (
    BASE_NEGATIVE_VIEWS,
    PET_VIEWS,
    PRESENCE_C,
    PRESENCE_FOLDS,
    STAMP_VIEWS,
    STAMPS_ENV,
    PresenceHead,
    choose_threshold,
    fit_presence,
    load_stamps,
    negative_views,
    presence_layer,
    stamp_folder_candidates,
    stamps_id,
    view_of,
)
from cloud_trainer.catdog.small_cnn import build_small_cnn
from cloud_trainer.catdog.split import Split
from edge_agent.protocol.bundle import ImagePreprocessing

log = logging.getLogger(__name__)

Arch = Literal["effnet-lite0", "small-cnn"]
Progress = Callable[[str, int, int], None]
BN_REFRESH_IMAGES = 256


class TrainSettings(BaseModel):
    """Model-side settings of one training run (the data and split are chosen separately)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Arch = "effnet-lite0"
    size: int = Field(default=224, ge=32, le=512, description="Square input size in pixels.")
    feature_views: int = Field(default=4, ge=1, le=4, description="Cached views per image.")
    fine_tune_epochs: int = Field(default=0, ge=0, description="0 = frozen backbone only.")
    fine_tune_stages: int = Field(default=2, ge=1, le=len(LITE0_STAGES))
    fine_tune_lr: float = Field(default=1e-4, gt=0)
    cnn_epochs: int = Field(default=40, ge=1)
    cnn_lr: float = Field(default=2e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    head_c: float | None = Field(
        default=1.0,
        gt=0,
        description="Inverse L2 strength of the linear head on standardised features; None "
        "picks it on validation, which saturates on small sets and then favours strong "
        "regularisation that generalises worse to unseen breeds.",
    )
    weights_file: Path | None = None
    cache_dir: Path | None = None
    seed: int = 0


@dataclass
class TrainedModel:
    """The Keras graph to export, how to feed it, and what training measured."""

    model: Any
    labels: list[str]
    preprocessing: ImagePreprocessing
    settings: TrainSettings
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    presence: PresenceHead | None = None


def preprocessing_for(size: int) -> ImagePreprocessing:
    """Both architectures take raw 0-255 RGB pixels and normalise inside the graph."""
    return ImagePreprocessing(
        height=size, width=size, channel_order="RGB", normalised_in_graph=True
    )


def pixel_arrays(
    records: Sequence[ImageRecord], preprocessing: ImagePreprocessing
) -> npt.NDArray[np.uint8]:
    """(N, S, S, 3) uint8 frames prepared as on the device (exact: the resize is in uint8)."""
    return np.stack(
        [frame_input(read_image(r.path), preprocessing).astype(np.uint8) for r in records]
    )


def label_indices(records: Sequence[ImageRecord], labels: list[str]) -> npt.NDArray[np.int64]:
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[r.label] for r in records], dtype=np.int64)


def class_weights(y: npt.NDArray[np.int64], n_classes: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return {i: float(len(y) / (n_classes * max(c, 1.0))) for i, c in enumerate(counts)}


def refresh_batch_norm(model: Any, x: npt.NDArray[np.float32]) -> int:
    """Set trainable batch-norm moving statistics to those of ``x``; returns how many layers.

    A from-scratch net on a few hundred photos takes too few steps for the moving averages
    to leave their initial values, and inference uses them. Frozen layers are left alone.
    """
    import keras

    layers = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        if layers:
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)


def fit_on_pixels(
    model: Any,
    x_train: npt.NDArray[np.uint8],
    y_train: npt.NDArray[np.int64],
    x_val: npt.NDArray[np.uint8],
    y_val: npt.NDArray[np.int64],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: Progress | None = None,
    what: str = "training",
) -> float:
    """Train the probabilities output with fresh augmentation each epoch; keep the best epoch.

    Returns the best validation balanced accuracy. Selection is on validation, never test.
    """
    import keras
    from sklearn.metrics import balanced_accuracy_score

    n_classes = int(model.outputs[0].shape[-1])
    trainer = keras.Model(model.inputs, model.outputs[0])
    trainer.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    rng = np.random.default_rng(seed)
    weights = class_weights(y_train, n_classes)

    def val_score() -> float:
        probs = trainer.predict(x_val.astype(np.float32), batch_size=64, verbose=0)
        return float(balanced_accuracy_score(y_val, probs.argmax(axis=1)))

    # The starting point competes too: fine-tuning must not hand back a worse model.
    best, best_weights = val_score(), model.get_weights()
    for epoch in range(epochs):
        augmented = random_augment(x_train, rng).astype(np.float32)
        trainer.fit(
            augmented, y_train, batch_size=batch_size, epochs=1, class_weight=weights, verbose=0
        )
        refresh_batch_norm(model, augmented[:BN_REFRESH_IMAGES])
        score = val_score()
        log.debug("%s epoch %s: val balanced accuracy %.4f", what, epoch + 1, score)
        if score > best:
            best, best_weights = score, model.get_weights()
        if progress is not None:
            progress(what, epoch + 1, epochs)
    model.set_weights(best_weights)
    return best


def transfer_classifier(
    backbone: Any,
    head: LinearHead,
    presence: PresenceHead | None = None,
    imagenet: tuple[npt.NDArray[Any], npt.NDArray[Any]] | None = None,
) -> Any:
    """Backbone (0-255 in, pooled out) plus a softmax head; outputs probabilities, embedding.

    With a presence head (and the ImageNet classifier's weights, ``(1000, dim)`` kernel and
    bias) the probabilities are ``[q * p(pet label) ..., 1 - q]``: q the presence score, the
    last column the ``no_pet`` label's.
    """
    import keras
    from keras import layers

    embedding = backbone.outputs[0]
    dense = layers.Dense(head.kernel.shape[1], name="logits")
    logits = dense(embedding)
    dense.set_weights([head.kernel, head.bias])
    if presence is None:
        probabilities = layers.Softmax(name="probabilities")(logits)
        return keras.Model(backbone.inputs, [probabilities, embedding], name="catdog_effnet_lite0")
    if imagenet is None:
        raise ValueError("a presence head needs the ImageNet classifier's weights")
    pet = layers.Softmax(name="pet_softmax")(logits)
    classifier = layers.Dense(1000, name="imagenet_logits")
    imagenet_logits = classifier(embedding)
    classifier.set_weights([imagenet[0].T.astype(np.float32), imagenet[1].astype(np.float32)])
    probabilities = presence_layer(presence, pet, imagenet_logits, embedding)
    return keras.Model(backbone.inputs, [probabilities, embedding], name="catdog_effnet_lite0")


def presence_inputs(
    backbone: Any,
    records: Sequence[ImageRecord],
    views: tuple[str, ...],
    preprocessing: ImagePreprocessing,
    cache: FeatureCache,
    imagenet: tuple[npt.NDArray[Any], npt.NDArray[Any]],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """ImageNet logits (len(records), len(views), 1000) and pooled embeddings
    (len(records), len(views), dim) of each record's presence views."""
    pooled = extract_features(
        backbone,
        records,
        preprocessing,
        n_views=len(views),
        cache=cache,
        progress=progress,
        views=views,
        make_view=view_of,
    ).astype(np.float64)
    logits = pooled @ imagenet[0].T.astype(np.float64) + imagenet[1]
    return np.asarray(logits, dtype=np.float64), pooled


def train_presence(
    backbone: Any,
    split: Split,
    preprocessing: ImagePreprocessing,
    cache_root: Path,
    backbone_key: str,
    imagenet: tuple[npt.NDArray[Any], npt.NDArray[Any]],
    settings: TrainSettings,
    progress: Progress | None = None,
) -> tuple[PresenceHead, dict[str, float]]:
    """Fit the presence score on the training and validation photos (pets in colour and
    grayscale; frames without pets in colour, grayscale, dark, blurred and noisy, and with
    another animal, a person or a vehicle pasted in when the stamps are installed); its
    threshold keeps ``PET_RECALL_TARGET`` of their pets scored out of fold. The test split
    stays unseen: the report scores it there."""

    def step(what: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda i, n: progress(what, i, n))

    stamps = load_stamps()
    if not stamps:
        log.warning(
            "no cut-outs of other animals found (%s): the presence score trains on the "
            "scenes and their degraded versions only; install them with scripts/bootstrap.sh "
            "(ensure_stamps) or set %s",
            ", ".join(str(p) for p in stamp_folder_candidates()),
            STAMPS_ENV,
        )
    none_views = negative_views(bool(stamps))
    size = preprocessing.height
    pets_cache = FeatureCache(cache_root, backbone_key, size, "pets-" + "-".join(PET_VIEWS))
    none_tag = "none-" + "-".join(BASE_NEGATIVE_VIEWS)
    if stamps:
        none_tag += f"-stamps{len(STAMP_VIEWS)}-{stamps_id(stamps)}"
    none_cache = FeatureCache(cache_root, backbone_key, size, none_tag)

    def inputs(
        records: list[ImageRecord], none: bool, what: str
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        views = none_views if none else PET_VIEWS
        cache = none_cache if none else pets_cache
        return presence_inputs(backbone, records, views, preprocessing, cache, imagenet, step(what))

    def parts(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
        return [r for r in records if r.label != NO_PET], [r for r in records if r.label == NO_PET]

    def flat(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return a.reshape(-1, a.shape[-1])

    # Fit on training and validation photos; the threshold comes from out-of-fold scores
    # of all their pets (a 1 % quantile of a few hundred validation frames is the second
    # lowest score, and moved the threshold by 0.2 between runs).
    pets, nones = parts(split.train + split.val)
    if not nones or not pets:
        raise ValueError("no frames without a pet, or no pets, in the training split")
    pet_logits, pet_embs = inputs(pets, False, "presence: pets")
    none_logits, none_embs = inputs(nones, True, "presence: scenes")
    rng = np.random.default_rng(settings.seed)
    pet_fold = rng.integers(0, PRESENCE_FOLDS, len(pets))
    none_fold = rng.integers(0, PRESENCE_FOLDS, len(nones))
    pet_oof = np.zeros(pet_logits.shape[:2])
    none_oof = np.zeros(none_logits.shape[:2])
    for k in range(PRESENCE_FOLDS):
        fit_p, fit_n = pet_fold != k, none_fold != k
        if not fit_n.any():  # a handful of scenes, all in this fold: fit on them anyway
            fit_n = np.ones_like(fit_n)
        fold_head = fit_presence(
            flat(pet_logits[fit_p]),
            flat(pet_embs[fit_p]),
            flat(none_logits[fit_n]),
            flat(none_embs[fit_n]),
            PRESENCE_C,
            settings.seed,
        )
        held_p, held_n = ~fit_p, ~fit_n
        pet_oof[held_p] = fold_head.score(flat(pet_logits[held_p]), flat(pet_embs[held_p])).reshape(
            -1, pet_logits.shape[1]
        )
        none_oof[held_n] = fold_head.score(
            flat(none_logits[held_n]), flat(none_embs[held_n])
        ).reshape(-1, none_logits.shape[1])
    threshold = choose_threshold(pet_oof.ravel().tolist())
    head = fit_presence(
        flat(pet_logits),
        flat(pet_embs),
        flat(none_logits),
        flat(none_embs),
        PRESENCE_C,
        settings.seed,
    ).with_threshold(threshold)
    stamp_cols = [i for i, v in enumerate(none_views) if v.startswith("stamp")]
    metrics: dict[str, float] = {
        "presence_stamps": float(len(stamps)),
        "presence_threshold": threshold,
        "presence_oof_pet_recall": float(np.mean(pet_oof[:, 0] >= threshold)),
        "presence_oof_grayscale_pet_recall": float(np.mean(pet_oof[:, 1] >= threshold)),
        "presence_oof_no_pet_recall": float(np.mean(none_oof[:, 0] < threshold)),
    }
    if stamp_cols:
        metrics["presence_oof_no_pet_recall_other_animals"] = float(
            np.mean(none_oof[:, stamp_cols] < threshold)
        )
    log.info("presence score: threshold %.3f %s", head.threshold, metrics)
    return head, metrics


def unfreeze_top_stages(model: Any, stages: int) -> int:
    """Make the convolutions of the last ``stages`` stages and the head trainable (BN stays
    frozen: batch statistics from a few hundred photos would undo the ImageNet ones)."""
    first_stage = len(LITE0_STAGES) - stages
    trainable_blocks = {f"block{i:02d}" for i, s in enumerate(block_stages()) if s >= first_stage}
    count = 0
    for layer in model.layers:
        prefix = layer.name.split("_")[0]
        is_conv = layer.name.endswith("_conv") or layer.name == "logits"
        layer.trainable = is_conv and (prefix in trainable_blocks or prefix in {"head", "logits"})
        count += int(layer.trainable)
    return count


def train_effnet(
    split: Split, labels: list[str], settings: TrainSettings, progress: Progress | None = None
) -> TrainedModel:
    """Frozen Lite0 features (cached) + linear head; then optional top-stage fine-tuning.

    With ``no_pet`` frames in the split, the cat/dog head trains on the pets alone and a
    presence score (``train_presence``) decides ``no_pet``; its label is listed last.
    """
    started = time.perf_counter()
    negatives = split if NO_PET in labels else None
    if negatives is not None:
        labels = [label for label in labels if label != NO_PET]
        split = pets_only(split)
    weights_file = settings.weights_file or default_weights_path()
    weights = load_lite0_weights(weights_file)
    backbone = build_lite0(settings.size, weights)
    preprocessing = preprocessing_for(settings.size)
    cache = FeatureCache(
        settings.cache_dir or default_cache_dir(), backbone_id(weights_file), settings.size
    )

    def step(what: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda i, n: progress(what, i, n))

    train_f = extract_features(
        backbone,
        split.train,
        preprocessing,
        n_views=settings.feature_views,
        cache=cache,
        progress=step("features: train"),
    )
    val_f = extract_features(
        backbone, split.val, preprocessing, cache=cache, progress=step("features: val")
    )[:, 0]
    y_train = label_indices(split.train, labels)
    y_val = label_indices(split.val, labels)
    x = train_f.reshape(-1, EMBEDDING_DIM)
    y = np.repeat(y_train, settings.feature_views)
    grid = (settings.head_c,) if settings.head_c is not None else C_GRID
    head = fit_linear_head(x, y, val_f, y_val, len(labels), grid, seed=settings.seed)
    presence: PresenceHead | None = None
    presence_metrics: dict[str, float] = {}
    imagenet: tuple[npt.NDArray[Any], npt.NDArray[Any]] | None = None
    if negatives:
        if settings.fine_tune_epochs > 0:
            raise ValueError(
                "fine-tuning changes the features the presence score reads: train a model "
                "with frames without pets (none/) with fine_tune_epochs 0"
            )
        imagenet = (weights["_fc.weight"], weights["_fc.bias"])
        presence, presence_metrics = train_presence(
            backbone,
            negatives,
            preprocessing,
            settings.cache_dir or default_cache_dir(),
            backbone_id(weights_file),
            imagenet,
            settings,
            progress,
        )
    model = transfer_classifier(backbone, head, presence, imagenet)
    features_s = time.perf_counter() - started
    metrics = {
        "head_val_balanced_accuracy": head.val_balanced_accuracy,
        "features_and_head_seconds": features_s,
        **presence_metrics,
    }
    notes: dict[str, Any] = {
        "head_c": head.c,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
    if settings.fine_tune_epochs > 0:
        n = unfreeze_top_stages(model, settings.fine_tune_stages)
        log.info("fine-tuning %s layers of the top %s stages", n, settings.fine_tune_stages)
        best = fit_on_pixels(
            model,
            pixel_arrays(split.train, preprocessing),
            y_train,
            pixel_arrays(split.val, preprocessing),
            y_val,
            epochs=settings.fine_tune_epochs,
            lr=settings.fine_tune_lr,
            batch_size=settings.batch_size,
            seed=settings.seed,
            progress=progress,
            what="fine-tuning",
        )
        metrics["fine_tune_val_balanced_accuracy"] = best
    for layer in model.layers:
        layer.trainable = False
    metrics["train_seconds"] = time.perf_counter() - started
    log.info(
        "effnet-lite0 trained in %.1f s (features + head %.1f s)",
        metrics["train_seconds"],
        features_s,
    )
    out_labels = [*labels, NO_PET] if presence is not None else labels
    return TrainedModel(model, out_labels, preprocessing, settings, metrics, notes, presence)


def train_small_cnn(
    split: Split, labels: list[str], settings: TrainSettings, progress: Progress | None = None
) -> TrainedModel:
    """The from-scratch CNN on augmented pixels, best epoch by validation balanced accuracy."""
    import keras

    started = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    preprocessing = preprocessing_for(settings.size)
    model = build_small_cnn(settings.size, len(labels))
    best = fit_on_pixels(
        model,
        pixel_arrays(split.train, preprocessing),
        label_indices(split.train, labels),
        pixel_arrays(split.val, preprocessing),
        label_indices(split.val, labels),
        epochs=settings.cnn_epochs,
        lr=settings.cnn_lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
        progress=progress,
        what="small-cnn epochs",
    )
    metrics = {"val_balanced_accuracy": best, "train_seconds": time.perf_counter() - started}
    return TrainedModel(model, labels, preprocessing, settings, metrics)


def pets_only(split: Split) -> Split:
    """The split without its ``no_pet`` frames (what the cat/dog head trains and scores on)."""

    def keep(records: list[ImageRecord]) -> list[ImageRecord]:
        return [r for r in records if r.label != NO_PET]

    return Split(
        keep(split.train), keep(split.val), keep(split.test), split.unseen_groups, split.version
    )


def train_model(
    split: Split, labels: list[str], settings: TrainSettings, progress: Progress | None = None
) -> TrainedModel:
    if settings.arch == "small-cnn":
        if NO_PET in labels:
            raise ValueError(
                "the small CNN has no ImageNet classifier to read pet presence from: train "
                "effnet-lite0, or leave the frames without pets (none/) out"
            )
        return train_small_cnn(split, labels, settings, progress)
    return train_effnet(split, labels, settings, progress)
