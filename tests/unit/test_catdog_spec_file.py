"""models/catdog/spec.yaml says what the code does."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloud_trainer.catdog.backbone.efficientnet_lite import (
    EMBEDDING_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHTS_SHA256,
)
from cloud_trainer.catdog.ingest import MAX_SIDE, MIN_SIDE
from cloud_trainer.catdog.model_spec import EMBEDDING, INPUT_NAME, LATENCY_BUDGET_MS, PROBABILITIES
from cloud_trainer.catdog.pipeline import PipelineSettings
from cloud_trainer.catdog.presence import (
    FEATURE_NAMES,
    METHOD,
    NEGATIVE_VIEWS_WITH_STAMPS,
    PET_RECALL_TARGET,
    PET_VIEWS,
    PRESENCE_C,
    PRESENCE_FOLDS,
)
from cloud_trainer.catdog.small_cnn import EMBEDDING_DIM as SMALL_CNN_DIM
from cloud_trainer.catdog.split import SplitSettings
from cloud_trainer.catdog.train import TrainSettings
from cloud_trainer.export.quantize import DEFAULT_MAX_DROP, DEFAULT_MAX_FLIP_RATE
from edge_agent.features.image import IMAGE_STAT_NAMES

SPEC = Path(__file__).resolve().parents[2] / "models" / "catdog" / "spec.yaml"


def test_spec_file_matches_the_code() -> None:
    spec = yaml.safe_load(SPEC.read_text())
    settings = PipelineSettings(data=Path("."), work_dir=Path("."))
    assert spec["name"] == settings.model_name
    assert spec["int8_name"] == f"{settings.model_name}-int8"
    assert spec["input_size"] == TrainSettings().size
    assert spec["inputs"][0]["name"] == INPUT_NAME
    assert spec["inputs"][0]["shape"] == [None, TrainSettings().size, TrainSettings().size, 3]
    assert [o["name"] for o in spec["outputs"]] == [PROBABILITIES, EMBEDDING]
    assert spec["outputs"][1]["shape"][1] == EMBEDDING_DIM
    assert spec["architectures"]["small-cnn"]["embedding_dim"] == SMALL_CNN_DIM
    assert spec["architectures"]["effnet-lite0"]["weights_sha256"] == WEIGHTS_SHA256
    assert spec["architectures"]["effnet-lite0"]["head_c"] == TrainSettings().head_c
    assert tuple(spec["preprocessing"]["graph_normalisation"]["mean"]) == IMAGENET_MEAN
    assert tuple(spec["preprocessing"]["graph_normalisation"]["std"]) == IMAGENET_STD
    assert spec["drift"]["image_statistics"] == list(IMAGE_STAT_NAMES)
    split = SplitSettings()
    for key in ("test_fraction", "val_fraction", "unseen_group_fraction", "small_group_share"):
        assert spec["split"][key] == getattr(split, key)
    assert spec["data"]["ingestion"]["min_side"] == MIN_SIDE
    assert spec["data"]["ingestion"]["max_side"] == MAX_SIDE
    assert spec["quantisation"]["max_balanced_accuracy_drop"] == DEFAULT_MAX_DROP
    assert spec["quantisation"]["max_flip_rate"] == DEFAULT_MAX_FLIP_RATE
    assert spec["gate"]["min_balanced_accuracy"] == settings.min_balanced_accuracy
    assert spec["gate"]["min_pet_recall"] == settings.min_pet_recall
    assert spec["gate"]["min_no_pet_recall"] == settings.min_no_pet_recall
    presence = spec["presence"]
    assert spec["labels"][-1] == presence["absent_label"] == "no_pet"
    assert presence["method"] == METHOD
    assert tuple(presence["features"]) == FEATURE_NAMES
    assert presence["c"] == PRESENCE_C
    assert tuple(presence["pet_views"]) == PET_VIEWS
    assert tuple(presence["negative_views"]) == NEGATIVE_VIEWS_WITH_STAMPS
    assert presence["pet_recall_target"] == PET_RECALL_TARGET
    assert presence["folds"] == PRESENCE_FOLDS
    assert spec["latency_budget_ms"] == LATENCY_BUDGET_MS
