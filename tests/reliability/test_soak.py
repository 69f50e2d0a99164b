"""Two-minute soak: the agent and the fleet service hold their memory and files flat."""

from __future__ import annotations

import pytest

from benchmarks.soak import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_minute_soak_stays_flat() -> None:
    result = run(minutes=2, fps=10, interval_s=2.0)
    assert result["samples"] >= 40
    # Liveness: predictions and telemetry flowed end to end all along.
    assert result["fleet_counts"]["received"] >= 600
    assert result["fleet_counts"]["telemetry"] >= 15
    for name in ("agent", "fleet"):
        rss, fds = result[f"{name}_rss_mib"], result[f"{name}_fds"]
        # Bounds are relative to the plateau measured after warm-up, not timings.
        assert rss["growth"] <= rss["bound"], (name, rss)
        assert fds["growth"] <= fds["bound"], (name, fds)
