"""Settings of a weather training run, and where the data comes from when none is named."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.export.keras_onnx import DEFAULT_TOLERANCE

MODEL_NAME = "weather-rain-4h"
EXPERIMENT = "weather-rain-4h"
SHARED_DATA_RELATIVE = Path("shared") / "data" / "weather" / "weather_dataset_raw.csv.gz"
SAMPLE_FILE = "weather_sample.csv.gz"


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path = Field(description="Station CSV (plain or gzip) of the weather_dataset_raw format.")
    store: str | None = Field(default=None, description="MLflow folder or URI (see open_store).")
    quick: bool = Field(default=False, description="One small configuration, few epochs.")
    model_kind: Literal["gbt", "keras"] = Field(
        default="gbt",
        description="Gradient-boosted trees (better on every rolling-origin test year, see "
        "docs/weather-model.md) or the Keras MLP.",
    )
    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT
    seed: int = 0
    work_dir: Path | None = Field(default=None, description="Keep the run's files here.")
    parity_tolerance: float = Field(default=DEFAULT_TOLERANCE, gt=0)
    min_gain_over_persistence: float = Field(default=0.0, ge=0)
    min_gain_over_champion: float = Field(default=0.0, ge=0)
    register_model: bool = True
    normalisation: Literal["auto", "graph", "spec"] = Field(
        default="auto",
        description="In the ONNX graph, in the spec (device side), or graph unless parity fails.",
    )


def repository_root() -> Path:
    """The checkout this package is installed from (editable installs), else the cwd."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "cloud-trainer").is_dir() and (parent / "edge-agent").is_dir():
            return parent
    return Path.cwd()


def sample_path() -> Path:
    """The few months of station history shipped with the package (with its licence)."""
    return Path(str(resources.files("cloud_trainer") / "samples" / "weather" / SAMPLE_FILE))


def default_data_path() -> tuple[Path, str]:
    """(path, origin): the shared full history beside the checkout if present, else the sample."""
    shared = repository_root().parent / SHARED_DATA_RELATIVE
    if shared.is_file():
        return shared, "shared full history"
    return sample_path(), "shipped sample"
