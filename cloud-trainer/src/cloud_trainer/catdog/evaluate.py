"""Scoring an ONNX cat/dog model on an image folder, as the device would run it (onnxruntime)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from cloud_trainer.catdog.features import frame_input
from cloud_trainer.catdog.ingest import DatasetError, ImageRecord, read_image
from cloud_trainer.export.keras_onnx import session_load_errors
from edge_agent.protocol.bundle import ImagePreprocessing, ModelSpec
from edge_agent.protocol.errors import ProtocolError

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The file is not a loadable ONNX model carrying an image-classification spec."""


class ClassScores(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precision: float
    recall: float
    f1: float
    support: int


class Evaluation(BaseModel):
    """Scores on one set of labelled images; ``ms_per_image`` is one-frame inference time.

    For a model with a ``no_pet`` outcome, ``balanced_accuracy``, ``macro_f1`` and ``roc_auc``
    are over the pet labels on the pet images the model found (answered a pet label);
    ``pet_recall`` is the share of pet images not answered ``no_pet`` and ``no_pet_recall``
    the share of images without a pet answered ``no_pet``. ``confusion`` and ``per_class``
    cover every label.
    """

    model_config = ConfigDict(extra="forbid")

    accuracy: float
    balanced_accuracy: float
    pet_recall: float | None = None
    no_pet_recall: float | None = None
    n_pets_found: int | None = None
    macro_f1: float
    roc_auc: float | None
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]
    labels: list[str]
    n_images: int
    ms_per_image: float
    threads: int


@dataclass
class Predictions:
    """Per-image outputs kept for plots, baselines and the worst-error sheet."""

    records: list[ImageRecord]
    y_true: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float32]
    embeddings: npt.NDArray[np.float32] | None
    ms_per_image: float
    decided: npt.NDArray[np.int64] | None = None

    @property
    def y_pred(self) -> npt.NDArray[np.int64]:
        """The device's answers (``ModelSpec.decide``), else the arg-max."""
        if self.decided is not None:
            return self.decided
        return np.asarray(self.probabilities.argmax(axis=1), dtype=np.int64)


@dataclass
class OnnxClassifier:
    """An onnxruntime session and the spec read from its own metadata."""

    session: Any
    spec: ModelSpec
    threads: int

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> OnnxClassifier:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        load_errors = session_load_errors()
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except load_errors as e:
            raise ModelLoadError(f"{path}: not a loadable ONNX model: {e}") from e
        try:
            spec = ModelSpec.from_metadata(session.get_modelmeta().custom_metadata_map)
        except ProtocolError as e:
            raise ModelLoadError(f"{path}: {e}") from e
        if not isinstance(spec.preprocessing, ImagePreprocessing):
            raise ModelLoadError(f"{path}: model {spec.name!r} does not take images")
        return cls(session, spec, threads)

    @property
    def preprocessing(self) -> ImagePreprocessing:
        assert isinstance(self.spec.preprocessing, ImagePreprocessing)
        return self.spec.preprocessing

    def outputs(self) -> list[str]:
        names = [self.spec.probabilities_output]
        if self.spec.embedding_output:
            names.append(self.spec.embedding_output)
        return names

    def run(self, batch: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        name = self.spec.inputs[0].name
        return [np.asarray(v, np.float32) for v in self.session.run(self.outputs(), {name: batch})]


def predict(
    model: OnnxClassifier,
    records: Sequence[ImageRecord],
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """One frame at a time, as a camera feeds the device; time only the model call."""
    index = {label: i for i, label in enumerate(model.spec.labels)}
    unknown = sorted({r.label for r in records} - set(index))
    if unknown == ["no_pet"]:
        raise DatasetError(
            f"model {model.spec.name!r} has no no_pet outcome ({model.spec.labels}): score it "
            "on its pet class folders only, without none/"
        )
    if unknown:
        raise DatasetError(
            f"class folder(s) {unknown} are not labels of model {model.spec.name!r} "
            f"({model.spec.labels})"
        )
    probs, embs, times = [], [], []
    for i, record in enumerate(records):
        x = frame_input(read_image(record.path), model.preprocessing)[np.newaxis]
        started = time.perf_counter()
        out = model.run(x)
        times.append(time.perf_counter() - started)
        probs.append(out[0][0])
        if len(out) > 1:
            embs.append(out[1][0])
        if progress is not None:
            progress(i + 1, len(records))
    if not records:
        raise DatasetError("no images to evaluate")
    probabilities = np.stack(probs)
    if not np.isfinite(probabilities).all():
        raise ModelLoadError("model produced NaN or infinite probabilities")
    y_true = np.array([index[r.label] for r in records], dtype=np.int64)
    return Predictions(
        list(records),
        y_true,
        probabilities,
        np.stack(embs) if embs else None,
        float(np.mean(times) * 1000.0),
        decisions(model.spec, probabilities),
    )


def decisions(spec: ModelSpec, probabilities: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """The label index the device answers for each row (``ModelSpec.decide``)."""
    index = {label: i for i, label in enumerate(spec.labels)}
    return np.array(
        [
            index[spec.decide(dict(zip(spec.labels, map(float, row), strict=True)))[0]]
            for row in probabilities
        ],
        dtype=np.int64,
    )


def score(
    predictions: Predictions, labels: list[str], threads: int = 1, absent: str | None = None
) -> Evaluation:
    """Scores of ``predictions``; ``absent`` names the no-pet label of a model that has one."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y, p = predictions.y_true, predictions.y_pred
    all_idx = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, p, labels=all_idx, zero_division=0
    )
    per_class = {
        labels[i]: ClassScores(
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
        )
        for i in all_idx
    }
    presence: dict[str, Any] = {}
    pets_y, pets_p, pets_probs, pet_labels = y, p, predictions.probabilities, labels
    if absent is not None:
        a = labels.index(absent)
        is_pet = y != a
        found = is_pet & (p != a)
        presence = {
            "pet_recall": float(np.mean(p[is_pet] != a)) if is_pet.any() else None,
            "no_pet_recall": float(np.mean(p[~is_pet] == a)) if (~is_pet).any() else None,
            "n_pets_found": int(found.sum()),
        }
        keep = [i for i in all_idx if i != a]
        remap = {old: new for new, old in enumerate(keep)}
        pets_y = np.array([remap[int(v)] for v in y[found]], dtype=np.int64)
        pets_p = np.array([remap[int(v)] for v in p[found]], dtype=np.int64)
        pets_probs = predictions.probabilities[found][:, keep]
        pets_probs = pets_probs / np.clip(pets_probs.sum(axis=1, keepdims=True), 1e-12, None)
        pet_labels = [labels[i] for i in keep]
    balanced, macro_f1, roc = _pet_scores(pets_y, pets_p, pets_probs, len(pet_labels))
    return Evaluation(
        accuracy=float(np.mean(y == p)) if len(y) else float("nan"),
        balanced_accuracy=balanced,
        **presence,
        macro_f1=macro_f1,
        roc_auc=roc,
        per_class=per_class,
        confusion=confusion_matrix(y, p, labels=all_idx).tolist(),
        labels=labels,
        n_images=len(y),
        ms_per_image=predictions.ms_per_image,
        threads=threads,
    )


def _pet_scores(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.int64], probs: npt.NDArray[Any], k: int
) -> tuple[float, float, float | None]:
    """Balanced accuracy, macro-F1 (over the labels present) and ROC-AUC of one label set."""
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    if len(y) == 0:
        return float("nan"), float("nan"), None
    present = sorted(set(y.tolist()))
    roc: float | None = None
    if len(present) > 1:
        if k == 2:
            roc = float(roc_auc_score(y, probs[:, 1]))
        else:
            roc = float(roc_auc_score(y, probs, multi_class="ovr", labels=list(range(k))))
    with warnings.catch_warnings():
        # A one-class folder (only cats) is legitimate input; sklearn warns that a predicted
        # class is absent from the truth, which is the point of scoring it.
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y, p))
    f1 = f1_score(y, p, labels=list(range(k)), average=None, zero_division=0)
    return balanced, float(np.mean([f1[i] for i in present])), roc


def evaluate_model(
    model: OnnxClassifier,
    records: Sequence[ImageRecord],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Evaluation, Predictions]:
    predictions = predict(model, records, progress)
    absent = model.spec.presence.absent_label if model.spec.presence is not None else None
    return score(predictions, model.spec.labels, model.threads, absent), predictions


def subset(predictions: Predictions, keep: Callable[[ImageRecord], bool]) -> Predictions | None:
    """The predictions for the records ``keep`` selects (e.g. the breeds never trained on)."""
    idx = [i for i, r in enumerate(predictions.records) if keep(r)]
    if not idx:
        return None
    return Predictions(
        [predictions.records[i] for i in idx],
        predictions.y_true[idx],
        predictions.probabilities[idx],
        None if predictions.embeddings is None else predictions.embeddings[idx],
        predictions.ms_per_image,
        None if predictions.decided is None else predictions.decided[idx],
    )
