"""Ingestion of odd image files, duplicate removal, the data version and the group-holdout split."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_trainer.catdog.cli import sample_path
from cloud_trainer.catdog.ingest import (
    DatasetError,
    ImageRejected,
    decode_image,
    group_of,
    scan_folder,
)
from cloud_trainer.catdog.split import SplitSettings, split_records
from edge_agent.features.image_header import sniff_format

SAMPLE = sample_path()


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """The shipped sample plus every kind of file a real folder of photos contains."""
    root = tmp_path / "photos"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md"))
    jpeg = (root / "cat" / "Bengal_160.jpg").read_bytes()
    (root / "cat" / "copy_of_bengal.jpg").write_bytes(jpeg)  # exact duplicate
    (root / "cat" / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (root / "cat" / "almost.jpg").write_bytes(jpeg[: len(jpeg) - 300])  # truncated near the end
    (root / "dog" / "garbage.jpg").write_bytes(
        b"\xff\xd8\xff\xe0" + b"\x00\x13" * 500 + b"\xff\xd9"
    )
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.txt").write_text("not a photo")
    (root / "dog" / "icon.png").write_bytes(_png(np.zeros((16, 16, 3), np.uint8)))  # tiny
    grey = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    (root / "dog" / "grey.png").write_bytes(_png(grey))
    (root / "dog" / "deep.png").write_bytes(_png((np.ones((48, 48, 3)) * 40000).astype(np.uint16)))
    return root


def test_odd_files_are_converted_or_skipped_and_counted(messy_folder: Path) -> None:
    records, report = scan_folder(messy_folder)
    assert report.labels == ["cat", "dog", "no_pet"]  # none/ holds the frames without a pet
    assert report.n_files == 40 + 16 + 9
    # the grey and the 16-bit PNG are usable
    assert report.n_images == len(records) == 40 + 16 + 2
    assert report.per_class == {"cat": 20, "dog": 22, "no_pet": 16}
    assert report.duplicates == 1
    assert report.skipped == {
        "truncated": 2,
        "corrupt": 1,
        "empty": 1,
        "not-an-image": 1,
        "too-small": 1,
    }
    assert report.converted["gif-named-jpeg"] == 1
    assert report.converted["png-named-jpeg"] == 1
    assert report.converted["alpha"] == 1
    assert report.converted["grayscale"] == 1
    assert report.converted["uint16-to-8bit"] == 1
    by_file = {p.file: p for p in report.problems}
    assert by_file["cat/copy_of_bengal.jpg"].outcome == "duplicate"
    assert "Bengal_160.jpg" in by_file["cat/copy_of_bengal.jpg"].reason
    assert by_file["dog/icon.png"].reason.startswith("too-small")


def test_data_version_follows_content_not_names(messy_folder: Path, tmp_path: Path) -> None:
    _, before = scan_folder(SAMPLE)
    renamed = tmp_path / "renamed"
    shutil.copytree(SAMPLE, renamed)
    shutil.move(renamed / "dog" / "beagle_111.jpg", renamed / "dog" / "zz_other_name.jpg")
    _, after = scan_folder(renamed)
    assert after.data_version == before.data_version
    shutil.move(renamed / "dog" / "zz_other_name.jpg", renamed / "cat" / "mislabelled.jpg")
    _, moved = scan_folder(renamed)
    assert moved.data_version != before.data_version


def test_decoded_frames_are_bgr_uint8() -> None:
    gif = (SAMPLE / "cat" / "Abyssinian_34.jpg").read_bytes()
    rgba = (SAMPLE / "cat" / "Abyssinian_5.jpg").read_bytes()
    assert sniff_format(gif) == "gif" and sniff_format(rgba) == "png"
    for data in (gif, rgba):
        frame, conversions = decode_image(data, ".jpg")
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert conversions


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        frame, _ = decode_image(data, ".jpg")
    except ImageRejected as e:
        assert e.reason in {"empty", "not-an-image", "truncated", "corrupt", "too-small"}
    else:
        assert frame.dtype == np.uint8 and frame.shape[2] == 3


def test_folder_without_classes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(DatasetError, match="at least 2"):
        scan_folder(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        scan_folder(tmp_path / "missing")


def test_group_is_the_name_without_its_number() -> None:
    assert group_of(Path("Egyptian_Mau_136.jpg")) == "Egyptian_Mau"
    assert group_of(Path("american_bulldog_2.jpg")) == "american_bulldog"
    assert group_of(Path("IMG0042.jpg")) == "IMG"
    assert group_of(Path("snapshot.jpg")) == "snapshot"


def test_split_holds_whole_groups_out_and_is_reproducible() -> None:
    records, _ = scan_folder(SAMPLE)
    split = split_records(records, SplitSettings(seed=3))
    ids = [{r.sha256 for r in part} for part in (split.train, split.val, split.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(s) for s in ids) == len(records)
    assert split.unseen_groups
    trained_groups = {r.group for r in split.train + split.val}
    assert not trained_groups & set(split.unseen_groups)
    assert all(any(r.group == g for r in split.test) for g in split.unseen_groups)
    for label in ("cat", "dog"):  # stratified: every class in every split
        assert all(
            any(r.label == label for r in part) for part in (split.train, split.val, split.test)
        )
    again = split_records(records, SplitSettings(seed=3))
    assert again.assignment() == split.assignment() and again.version == split.version
    other = split_records(records, SplitSettings(seed=4))
    assert other.version != split.version
