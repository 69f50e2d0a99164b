"""``cloud-trainer catdog train`` refuses bad input in one line, before any training."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_trainer.catdog.cli import sample_path
from cloud_trainer.cli import main


def test_unwritable_work_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the work folder should go")
    argv = ["catdog", "train", "--no-register", "--data", str(sample_path())]
    assert main([*argv, "--work-dir", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot write" in lines[0] and "not-a-folder" in lines[0]
    assert "Traceback" not in err


def test_missing_or_classless_data_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["catdog", "train", "--no-register", "--work-dir", str(tmp_path / "run")]
    assert main([*argv, "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "cat").mkdir()
    assert main([*argv, "--data", str(tmp_path / "only")]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_corrupt_weight_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "lite0.pth"
    weights.write_bytes(b"\x80\x02cos\nsystem\nq\x00.")  # a pickle naming os.system
    argv = ["catdog", "train", "--no-register", "--work-dir", str(tmp_path / "run")]
    code = main([*argv, "--data", str(sample_path()), "--weights", str(weights)])
    assert code == 2
    assert "os.system" in capsys.readouterr().err
