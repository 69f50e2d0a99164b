"""The README's main job runs end to end on embedded defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_demo_runs_and_reports(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cloud_trainer", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signature ok" in out.stdout
    assert "tamper check" in out.stdout
    assert (tmp_path / "keys" / "fleet.pub").exists()
