"""Inference: onnxruntime sessions driven by the model spec, latency stats, hot-swap slot."""

from edge_agent.inference.engine import InferenceEngine, Prediction
from edge_agent.inference.errors import InferenceError, InputError, ModelLoadError, OutputError
from edge_agent.inference.latency import LatencySnapshot, LatencyStats
from edge_agent.inference.slot import ModelSlot

__all__ = [
    "InferenceEngine",
    "InferenceError",
    "InputError",
    "LatencySnapshot",
    "LatencyStats",
    "ModelLoadError",
    "ModelSlot",
    "OutputError",
    "Prediction",
]
