"""The device side on aarch64: the result scripts/check-arm64.sh left (test.sh runs it first).

The check needs root, mounts and binfmt_misc, so it runs once per test run in the shell and
leaves one JSON file; this test turns that file into a pass, a failure or a skip with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "edge-agent" / "requirements.lock"
FP32_TOLERANCE = 1e-4


def result_path() -> Path:
    explicit = os.environ.get("EDGE_MLOPS_ARM64_RESULT")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("EDGE_MLOPS_CACHE") or Path.home() / ".cache" / "edge-mlops"
    return Path(cache) / "arm64-check.json"


@pytest.fixture(scope="module")
def arm64_result() -> dict:
    path = result_path()
    if not path.is_file():
        pytest.skip(f"no arm64 check result at {path}: run scripts/check-arm64.sh (as root)")
    result = json.loads(path.read_text())
    if result.get("status") == "skipped":
        pytest.skip(f"arm64 check skipped: {result.get('reason')}")
    return result


def test_arm64_device_serves_like_x86(arm64_result: dict) -> None:
    status, reason = arm64_result.get("status"), arm64_result.get("reason")
    if status == "failed":
        pytest.fail(f"arm64 check failed: {reason} (details in {result_path()})")
    assert status == "passed", f"unknown status {status!r}"
    if arm64_result.get("lock_sha256") != hashlib.sha256(LOCK.read_bytes()).hexdigest():
        pytest.skip("the arm64 result is for another edge-agent/requirements.lock: rerun the check")
    assert arm64_result["arch"] == "aarch64"
    assert arm64_result["device"]["machine"] == "aarch64"
    assert arm64_result["max_abs_diff"] is not None
    assert arm64_result["max_abs_diff"] <= FP32_TOLERANCE
    assert arm64_result["labels_equal"] is True
    runs = arm64_result["runs"]
    assert {r["precision"] for r in runs.values()} == {"fp32", "int8"}
    for name, run in runs.items():
        assert run["predictions_device"] == run["predictions_host"] > 0, name
