"""Typed inference failures: a model that cannot be served, an input or an output refused."""

from __future__ import annotations

from pathlib import Path


class InferenceError(Exception):
    """Base of every inference failure."""


class ModelLoadError(InferenceError):
    """A model file cannot be served: missing, not ONNX, no spec, or graph and spec disagree."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class InputError(InferenceError, ValueError):
    """A sample does not fit the model (no frame for an image model, a missing feature, NaN)."""


class OutputError(InferenceError):
    """The model answered with something unusable (NaN or infinite scores, wrong shape).

    Raised instead of returning a prediction so a broken model never publishes garbage; the
    updater's smoke test and probation count these.
    """
