"""The no_pet outcome: presence features and score (numpy and in-graph alike), threshold
choice, the spec's decision rule, ingestion of frames without pets, scoring and the int8
flip check."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.catdog.cli import sample_path
from cloud_trainer.catdog.evaluate import Predictions, score
from cloud_trainer.catdog.ingest import (
    KNOWN_MISLABELLED,
    NO_PET,
    DatasetError,
    ImageRecord,
    scan_folder,
)
from cloud_trainer.catdog.presence import (
    CAT_CLASSES,
    DOG_CLASSES,
    PresenceHead,
    choose_threshold,
    fit_presence,
    load_stamps,
    paste_stamp,
    presence_features,
    presence_layer,
    view_of,
)
from cloud_trainer.export.quantize import check_flips
from edge_agent.protocol.bundle import ImagePreprocessing, ModelSpec, PresenceRule
from edge_agent.protocol.errors import ProtocolError
from edge_agent.protocol.manifest import TensorSpec

SAMPLE = sample_path()


def image_spec(labels: list[str]) -> ModelSpec:
    return ModelSpec(
        name="camera",
        task="image_classification",
        labels=labels,
        inputs=[TensorSpec(name="image", dtype="float32", shape=["N", 32, 32, 3])],
        outputs=[TensorSpec(name="probs", dtype="float32", shape=["N", len(labels)])],
        probabilities_output="probs",
        preprocessing=ImagePreprocessing(height=32, width=32),
    )


def _logits(rng: np.random.Generator, n: int, hot: tuple[int, ...], boost: float) -> np.ndarray:
    z = rng.normal(0.0, 1.0, (n, 1000))
    z[:, list(hot)] += boost
    return z


def test_features_read_pet_mass_from_imagenet_logits() -> None:
    rng = np.random.default_rng(0)
    dogs = presence_features(_logits(rng, 20, DOG_CLASSES[:3], 12.0))
    cats = presence_features(_logits(rng, 20, CAT_CLASSES[:2], 12.0))
    cars = presence_features(_logits(rng, 20, (817, 511), 12.0))  # sports car, convertible
    assert dogs.shape == (20, 6)
    assert (dogs[:, 0] > 2).all() and (cats[:, 0] > 2).all()  # pet log-odds
    assert (cars[:, 0] < -2).all()
    assert (dogs[:, 1] > dogs[:, 2]).all() and (cats[:, 2] > cats[:, 1]).all()  # dog vs cat


def test_in_graph_score_matches_numpy() -> None:
    import keras

    rng = np.random.default_rng(1)
    head = PresenceHead(
        np.array([2.0, 1.0, 1.5, -0.5, -0.7, 0.4], np.float32),
        rng.normal(0, 0.05, 16).astype(np.float32),
        -0.3,
        0.55,
        1.0,
    )
    pets_in = keras.Input((2,))
    logits_in = keras.Input((1000,))
    emb_in = keras.Input((16,))
    model = keras.Model(
        [pets_in, logits_in, emb_in], presence_layer(head, pets_in, logits_in, emb_in)
    )
    logits = np.r_[_logits(rng, 8, DOG_CLASSES[:2], 6.0), _logits(rng, 8, (817,), 6.0)].astype(
        np.float32
    )
    emb = rng.normal(0, 2, (16, 16)).astype(np.float32)
    pets = np.tile(np.array([[0.2, 0.8]], np.float32), (16, 1))
    out = np.asarray(model.predict([pets, logits, emb], verbose=0))
    q = head.score(logits, emb)
    assert q[:8].mean() > q[8:].mean()  # dog logits read as a pet, a car's as none
    np.testing.assert_allclose(out[:, 2], 1 - q, atol=1e-5)
    np.testing.assert_allclose(out[:, :2], pets * q[:, None], atol=1e-5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert head.absent_at == pytest.approx(0.45)
    assert head.with_threshold(0.7).absent_at == pytest.approx(0.3)


def test_fit_separates_pets_from_scenes_and_other_animals() -> None:
    rng = np.random.default_rng(4)
    pets = _logits(rng, 60, DOG_CLASSES[:4], 9.0)
    scenes = _logits(rng, 30, (970, 980), 9.0)  # alp, volcano
    foxes = _logits(rng, 30, (277, 278), 9.0)  # red fox, kit fox: animals, not pets
    emb_p, emb_n = rng.normal(1, 1, (60, 8)), rng.normal(-1, 1, (60, 8))
    head = fit_presence(pets, emb_p, np.r_[scenes, foxes], emb_n)
    assert head.group_weights.shape == (6,) and head.embedding_weights.shape == (8,)
    assert (head.score(pets, emb_p) > 0.5).mean() > 0.95
    assert (head.score(np.r_[scenes, foxes], emb_n) < 0.5).mean() > 0.95
    with pytest.raises(ValueError, match="pet photos and photos without pets"):
        fit_presence(pets[:0], emb_p[:0], scenes, emb_n[:30])


def test_stamps_are_pasted_deterministically_and_pets_never(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "stamps"
    for sub, name in (("animals/birds", "crow"), ("animals/mammals/dogs", "dog")):
        (folder / sub).mkdir(parents=True)
        rgba = np.zeros((40, 30, 4), np.uint8)
        rgba[5:35, 5:25] = (10, 200, 30, 255)
        cv2.imwrite(str(folder / sub / f"{name}.png"), rgba)
    (folder / "animals/birds/cartoon").mkdir()
    cv2.imwrite(str(folder / "animals/birds/cartoon/owl.png"), np.zeros((8, 8, 4), np.uint8))
    stamps = load_stamps(folder)
    assert [name for name, _ in stamps] == ["birds/crow"]  # no pet, no cartoon
    frame = np.full((60, 80, 3), 128, np.uint8)
    pasted = paste_stamp(frame, stamps[0][1], np.random.default_rng(0))
    assert pasted.shape == frame.shape and (pasted != frame).any()
    assert ((pasted == (10, 200, 30)).all(axis=2)).sum() > 50  # the bird is in the frame


def test_threshold_finds_the_target_share_of_pets_and_no_more() -> None:
    pets = np.linspace(0.5, 1.0, 101)  # 0.5 .. 1.0 in steps of 0.005
    t = choose_threshold(pets.tolist(), target_pet_recall=0.98)
    assert np.mean(pets >= t) >= 0.98
    assert np.mean(pets >= t + 0.006) < 0.98  # one step stricter loses the target
    # Clipped: pets scoring everywhere cannot push it to 0, nor sure pets to 1.
    assert choose_threshold([0.0, 0.01, 0.02]) == 0.1
    assert choose_threshold([0.99] * 50) == 0.9
    assert choose_threshold([]) == 0.5


def test_views_keep_the_frame_shape() -> None:
    frame = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    for view in ("plain", "gray", "dark", "blur", "noise"):
        out = view_of(frame, view, seed=3)
        assert out.shape == frame.shape and out.dtype == np.uint8
    gray = view_of(frame, "gray")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert view_of(frame, "dark").mean() < frame.mean()
    with pytest.raises(ValueError, match="unknown presence view"):
        view_of(frame, "sepia")


def _spec_with_presence(absent_at: float = 0.6) -> ModelSpec:
    base = image_spec(labels=["cat", "dog", NO_PET])
    return base.model_copy(
        update={"presence": PresenceRule(absent_label=NO_PET, absent_at=absent_at)}
    )


def test_spec_decides_no_pet_at_its_calibrated_level() -> None:
    spec = _spec_with_presence(0.6)
    assert spec.decide({"cat": 0.1, "dog": 0.3, NO_PET: 0.6}) == (NO_PET, 0.6)
    # Below absent_at the pet label wins even though no_pet is the arg-max; its confidence
    # is its share of the pet labels' probability.
    label, confidence = spec.decide({"cat": 0.15, "dog": 0.3, NO_PET: 0.55})
    assert label == "dog" and confidence == pytest.approx(0.3 / 0.45)
    assert spec.present_labels() == ["cat", "dog"]
    plain = image_spec(labels=["cat", "dog"])
    assert plain.decide({"cat": 0.3, "dog": 0.7}) == ("dog", 0.7)


def test_spec_refuses_a_presence_rule_it_cannot_apply() -> None:
    base = image_spec(labels=["cat", "dog", NO_PET])
    data = base.model_dump(mode="json")
    with pytest.raises(ValueError, match="absent_label"):
        ModelSpec.model_validate(
            {**data, "presence": {"absent_label": "nothing", "absent_at": 0.5}}
        )
    two = image_spec(labels=["dog", NO_PET]).model_dump(mode="json")
    with pytest.raises(ValueError, match="at least two labels"):
        ModelSpec.model_validate({**two, "presence": {"absent_label": NO_PET, "absent_at": 0.5}})


def test_an_agent_without_presence_support_skips_the_section() -> None:
    spec = _spec_with_presence()
    metadata = spec.to_metadata()
    assert "presence" in metadata["edge_mlops.spec"]
    assert ModelSpec.from_metadata(metadata).presence == spec.presence
    assert spec.min_agent_version() == "0.2.0"  # strict agents would refuse the field
    broken = metadata["edge_mlops.spec"].replace('"absent_at":0.6', '"absent_at":1.5')
    with pytest.raises(ProtocolError, match="absent_at"):
        ModelSpec.from_metadata({"edge_mlops.spec": broken})


def test_none_folder_and_negatives_become_no_pet_listed_last(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md", "none"))
    extra = tmp_path / "scenes"
    shutil.copytree(SAMPLE / "none", extra)
    shutil.copytree(SAMPLE / "none", root / "none")
    records, report = scan_folder(root, negatives=extra)
    assert report.labels == ["cat", "dog", NO_PET]
    assert report.per_class[NO_PET] == 16  # the same photos twice count once
    assert report.duplicates == 16
    assert {r.label for r in records if r.path.parent.name == "none"} == {NO_PET}
    with pytest.raises(DatasetError, match="negatives folder"):
        scan_folder(root, negatives=tmp_path / "missing")


def test_training_needs_two_pet_classes_besides_none(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    shutil.copytree(SAMPLE / "cat", root / "cat")
    shutil.copytree(SAMPLE / "none", root / "none")
    with pytest.raises(DatasetError, match="at least 2 pet class folders"):
        scan_folder(root)
    _, report = scan_folder(root, min_classes=1)  # scoring takes it
    assert report.labels == ["cat", NO_PET]


def test_a_known_mislabelled_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    digest = next(iter(KNOWN_MISLABELLED))
    shared = Path(__file__).resolve().parents[3] / "shared/data/scenes/photo_chicky_512.jpg"
    if not shared.is_file():
        pytest.skip(f"{shared} is not here")
    root = tmp_path / "photos"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md"))
    shutil.copy(shared, root / "none" / "chicky.jpg")
    records, report = scan_folder(root)
    assert digest not in {r.sha256 for r in records}
    assert report.skipped == {"known-mislabelled": 1}
    assert "shows a dog" in report.problems[-1].reason


def _records(labels: list[str]) -> list[ImageRecord]:
    return [
        ImageRecord(Path(f"{i}.jpg"), lab, f"{i:064x}", lab, 10, 10) for i, lab in enumerate(labels)
    ]


def test_scores_split_presence_from_cat_and_dog() -> None:
    labels = ["cat", "dog", NO_PET]
    truth = [0, 0, 1, 1, 2, 2, 2, 2]
    answer = [0, 2, 1, 0, 2, 2, 2, 1]  # a cat missed, a dog called cat, a scene called dog
    probs = np.eye(3, dtype=np.float32)[answer]
    preds = Predictions(
        _records([labels[t] for t in truth]),
        np.array(truth),
        probs,
        None,
        1.0,
        np.array(answer),
    )
    ev = score(preds, labels, absent=NO_PET)
    assert ev.pet_recall == pytest.approx(3 / 4)
    assert ev.no_pet_recall == pytest.approx(3 / 4)
    assert ev.n_pets_found == 3
    # Over the pets found: cat right (1/1), dogs one right of two.
    assert ev.balanced_accuracy == pytest.approx((1.0 + 0.5) / 2)
    assert np.array(ev.confusion).shape == (3, 3)
    assert ev.confusion[2][1] == 1 and ev.confusion[0][2] == 1


def test_flip_check_is_a_confidence_bound_not_a_point_estimate() -> None:
    none = check_flips(0, 112)
    assert none.passed and 0.02 < none.upper_bound < 0.03
    # Two flips in 56 is a 3.6 % rate but cannot be shown to be under 5 %.
    few = check_flips(2, 56)
    assert few.rate < 0.05 and not few.passed
    many = check_flips(23, 112)
    assert not many.passed and many.upper_bound > 0.25
    assert not check_flips(0, 0).passed
    assert check_flips(40, 1706).passed  # the full data set: 2.3 %, bound under 5 %
