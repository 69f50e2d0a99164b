"""Training options beyond the default: the feature cache, top-stage fine-tuning, the small CNN."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.catdog.backbone.efficientnet_lite import (
    build_lite0,
    default_weights_path,
    load_lite0_weights,
)
from cloud_trainer.catdog.cli import sample_path
from cloud_trainer.catdog.evaluate import OnnxClassifier, predict
from cloud_trainer.catdog.features import FeatureCache, backbone_id, extract_features
from cloud_trainer.catdog.ingest import NO_PET, scan_folder
from cloud_trainer.catdog.split import Split, split_records
from cloud_trainer.catdog.train import (
    TrainSettings,
    label_indices,
    pets_only,
    pixel_arrays,
    preprocessing_for,
    train_effnet,
    unfreeze_top_stages,
)
from cloud_trainer.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 96  # small frames keep the test quick; the code path is the one used at 160/224


@pytest.fixture(scope="module")
def sample_split() -> tuple[Split, list[str]]:
    records, report = scan_folder(sample_path())
    return split_records(records), report.labels


def test_feature_cache_serves_a_second_run(
    sample_split: tuple[Split, list[str]], tmp_path: Path
) -> None:
    split, _ = sample_split
    weights = default_weights_path()
    backbone = build_lite0(SIZE, load_lite0_weights(weights))
    pre = preprocessing_for(SIZE)
    first = FeatureCache(tmp_path, backbone_id(weights), SIZE)
    computed = extract_features(backbone, split.train, pre, n_views=2, cache=first)
    assert computed.shape == (len(split.train), 2, 1280)
    assert (first.hits, first.misses) == (0, len(split.train))
    second = FeatureCache(tmp_path, backbone_id(weights), SIZE)
    cached = extract_features(backbone, split.train, pre, n_views=2, cache=second)
    assert (second.hits, second.misses) == (len(split.train), 0)
    np.testing.assert_array_equal(cached, computed)
    # Flipped views differ from the plain ones: the augmentation reached the backbone.
    assert not np.allclose(computed[:, 0], computed[:, 1])
    # A damaged entry is recomputed, not trusted.
    entry = next(first.folder.rglob("*.npy"))
    entry.write_bytes(b"not numpy")
    third = FeatureCache(tmp_path, backbone_id(weights), SIZE)
    again = extract_features(backbone, split.train, pre, n_views=2, cache=third)
    assert third.misses == 1
    np.testing.assert_allclose(again, computed, atol=1e-5)


def test_fine_tuning_moves_only_the_top_stages(
    sample_split: tuple[Split, list[str]], tmp_path: Path
) -> None:
    import keras

    split, labels = sample_split
    settings = TrainSettings(
        size=SIZE,
        feature_views=1,
        fine_tune_epochs=1,
        fine_tune_stages=1,
        fine_tune_lr=1e-3,
        cache_dir=tmp_path,
    )
    # Fine-tuning moves the features the no_pet score reads: refused with frames without
    # pets, so it trains on the pets alone.
    with pytest.raises(ValueError, match="fine-tuning changes the features"):
        train_effnet(split, labels, settings)
    split, labels = pets_only(split), [label for label in labels if label != NO_PET]
    trained = train_effnet(split, labels, settings)
    model = trained.model
    assert list(model.output_names) == ["probabilities", "embedding"]
    assert not any(layer.trainable for layer in model.layers)  # frozen again for export
    # The epoch is kept only if validation got better: never worse than the head alone.
    assert (
        trained.metrics["fine_tune_val_balanced_accuracy"]
        >= trained.metrics["head_val_balanced_accuracy"] - 1e-9
    )

    unfreeze_top_stages(model, 1)
    trainable = {layer.name for layer in model.layers if layer.trainable}
    assert trainable == {
        "block15_expand_conv",
        "block15_dw_conv",
        "block15_project_conv",
        "head_conv",
        "logits",
    }
    watched = ("stem_conv", "block10_dw_conv", "block15_dw_bn", "block15_dw_conv", "head_conv")
    before = {name: model.get_layer(name).get_weights() for name in watched}
    trainer = keras.Model(model.inputs, model.outputs[0])
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x = pixel_arrays(split.train, trained.preprocessing).astype(np.float32)
    trainer.fit(x, label_indices(split.train, labels), epochs=1, batch_size=8, verbose=0)

    def moved(name: str) -> bool:
        after = model.get_layer(name).get_weights()
        return not all(np.array_equal(a, b) for a, b in zip(after, before[name], strict=True))

    assert moved("block15_dw_conv") and moved("head_conv")
    assert not moved("stem_conv") and not moved("block10_dw_conv")
    assert not moved("block15_dw_bn")  # batch norm statistics stay ImageNet's


def test_small_cnn_option_trains_exports_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    argv = ["catdog", "train", "--arch", "small-cnn", "--quick", "--no-register"]
    argv += ["--data", str(sample_path()), "--work-dir", str(work)]
    assert main(argv) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["arch"] == "small-cnn"
    fp32 = work / "catdog-fp32.onnx"
    assert fp32.stat().st_size < 5e6
    assert report["int8"]["size_bytes"] < fp32.stat().st_size
    # No ImageNet classifier to read presence from: trained on the pets alone, said so.
    assert report["data"]["labels"] == ["cat", "dog"] and report["presence"] is None
    pets = tmp_path / "pets"
    for name in ("cat", "dog"):
        shutil.copytree(sample_path() / name, pets / name)
    int8 = str(work / "catdog-int8.onnx")
    capsys.readouterr()
    assert (
        main(["catdog", "evaluate", "--json", "--data", str(sample_path()), "--model", int8]) == 2
    )
    assert "has no no_pet outcome" in capsys.readouterr().err
    assert main(["catdog", "evaluate", "--json", "--data", str(pets), "--model", int8]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 40 and 0.0 <= result["balanced_accuracy"] <= 1.0
    assert result["model_name"] == "catdog-int8"
    # Inference uses the batch-norm moving statistics: they must have followed training, or
    # every frame gets the same answer.
    records, _ = scan_folder(pets)
    predictions = predict(OnnxClassifier.load(fp32), records[:: len(records) // 8])
    assert float(np.ptp(predictions.probabilities[:, 1])) > 1e-3
