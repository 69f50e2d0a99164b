"""Keras → ONNX export with a parity check and the model spec embedded: ``export_keras``."""

from cloud_trainer.export.keras_onnx import (
    ExportError,
    ExportReport,
    ParityError,
    export_keras,
    file_digest,
    load_session,
    read_spec,
    spec_of_session,
)

__all__ = [
    "ExportError",
    "ExportReport",
    "ParityError",
    "export_keras",
    "file_digest",
    "load_session",
    "read_spec",
    "spec_of_session",
]
