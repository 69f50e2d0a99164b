"""Training ingestion sizes photos by their header: a bomb in the folder is skipped undecoded."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
import pytest

from cloud_trainer.catdog.cli import sample_path
from cloud_trainer.catdog.ingest import MAX_PIXELS, ImageRejected, decode_image, scan_folder
from tests.support.image_bombs import gif_bomb, jpeg_bomb, png_bomb


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("png", png_bomb(20000, 20000)),
        ("jpeg", jpeg_bomb(30000, 30000)),
        ("gif", gif_bomb(30000, 30000)),
    ],
)
def test_a_bomb_is_refused_before_decoding(name: str, data: bytes) -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    started = time.perf_counter()
    with pytest.raises(ImageRejected) as info:
        decode_image(data, f".{name}")
    took = time.perf_counter() - started
    assert info.value.reason == "too-large"
    assert f"exceeds {MAX_PIXELS} pixels" in str(info.value)
    assert took < 0.5 and process.memory_info().rss - before < 50 * 2**20


def test_a_folder_with_a_bomb_ingests_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    shutil.copytree(sample_path(), root, ignore=shutil.ignore_patterns("*.md"))
    (root / "cat" / "huge.jpg").write_bytes(jpeg_bomb(30000, 30000))
    records, report = scan_folder(root)
    assert report.skipped == {"too-large": 1}
    assert report.n_images == len(records) == report.n_files - 1
    problem = next(p for p in report.problems if p.file == "cat/huge.jpg")
    assert problem.reason == f"too-large: 30000x30000 exceeds {MAX_PIXELS} pixels"
