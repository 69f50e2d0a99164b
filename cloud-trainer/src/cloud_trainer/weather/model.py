"""The Keras forecaster and its small hyperparameter search (chosen on validation only)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud_trainer.weather.dataset import LabelledRows
from cloud_trainer.weather.evaluation import best_threshold, classification_metrics

log = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


@dataclass(frozen=True)
class Hyperparameters:
    units: int = 64
    layers: int = 2
    dropout: float = 0.1
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 4


SEARCH_SPACE: tuple[Hyperparameters, ...] = (
    Hyperparameters(units=32, layers=2, dropout=0.1),
    Hyperparameters(units=64, layers=2, dropout=0.1),
    Hyperparameters(units=64, layers=2, dropout=0.2, learning_rate=2e-3),
    Hyperparameters(units=128, layers=1, dropout=0.1),
)
QUICK_SPACE: tuple[Hyperparameters, ...] = (
    Hyperparameters(units=32, layers=2, dropout=0.1, max_epochs=8, patience=2),
)


@dataclass(frozen=True)
class Candidate:
    """One trained configuration and how it did on validation."""

    params: Hyperparameters
    model: Any
    validation_macro_f1: float
    threshold: float
    epochs: int

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self.params),
            "validation_macro_f1": self.validation_macro_f1,
            "threshold": self.threshold,
            "epochs": self.epochs,
        }


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_model(params: Hyperparameters, train_x: npt.NDArray[np.float32], seed: int) -> Any:
    """MLP with normalisation inside the graph, so the device feeds raw feature rows."""
    _quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization(name="normalise")
    norm.adapt(train_x)
    inputs = keras.Input(shape=(train_x.shape[1],), name=INPUT_NAME, dtype="float32")
    x = norm(inputs)
    for i in range(params.layers):
        x = keras.layers.Dense(max(params.units // (2**i), 8), activation="relu")(x)
        x = keras.layers.Dropout(params.dropout)(x)
    outputs = keras.layers.Dense(2, activation="softmax", name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, outputs, name="weather_rain_4h")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="sparse_categorical_crossentropy",
    )
    return model


def without_normalisation(
    model: Any,
) -> tuple[Any, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The same network minus its Normalization layer, and that layer's mean and std.

    The fallback when a graph with normalisation inside does not pass the parity check:
    the device then standardises with the spec's mean/std before feeding the model.
    """
    import keras

    norm = model.get_layer("normalise")
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(-1)
    std = np.sqrt(np.asarray(norm.variance, dtype=np.float32).reshape(-1))
    std = np.maximum(std, np.float32(keras.backend.epsilon()))
    inputs = keras.Input(shape=(mean.size,), name=INPUT_NAME, dtype="float32")
    x = inputs
    after = False
    for layer in model.layers:
        if after:
            x = layer(x)
        after = after or layer is norm
    return keras.Model(inputs, x, name=f"{model.name}_raw"), mean, std


def predict_rain(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict(x, batch_size=8192, verbose=0)[:, 1], dtype=np.float64)


def train_candidate(
    params: Hyperparameters, train: LabelledRows, validation: LabelledRows, seed: int
) -> Candidate:
    import keras

    model = build_model(params, train.x, seed)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=params.patience, restore_best_weights=True
    )
    history = model.fit(
        train.x,
        train.y,
        validation_data=(validation.x, validation.y),
        epochs=params.max_epochs,
        batch_size=params.batch_size,
        callbacks=[stop],
        verbose=0,
        shuffle=True,
    )
    prob = predict_rain(model, validation.x)
    threshold = best_threshold(validation.y, prob)
    f1 = classification_metrics(validation.y, (prob >= threshold).astype(np.int64))["macro_f1"]
    return Candidate(params, model, float(f1), threshold, len(history.history["loss"]))


def search(
    space: Sequence[Hyperparameters],
    train: LabelledRows,
    validation: LabelledRows,
    seed: int,
    on_done: Callable[[Candidate], None] | None = None,
) -> tuple[Candidate, list[Candidate]]:
    """Train every configuration; the best validation macro-F1 wins (test stays unseen)."""
    tried: list[Candidate] = []
    for params in space:
        candidate = train_candidate(params, train, validation, seed)
        log.info(
            "candidate %s: validation macro-F1 %.4f at threshold %.2f after %s epochs",
            asdict(params),
            candidate.validation_macro_f1,
            candidate.threshold,
            candidate.epochs,
        )
        tried.append(candidate)
        if on_done is not None:
            on_done(candidate)
    best = max(tried, key=lambda c: c.validation_macro_f1)
    return best, tried
