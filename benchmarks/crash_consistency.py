"""Crash consistency at length: N random kill -9 of outbox writers and of model installs.

    .venv/bin/python -m benchmarks.crash_consistency [--kills 1000] [--only outbox|install]

The same harness as ``tests/reliability/test_crash_consistency.py`` (which runs a bounded
number of kills in CI), for longer runs: prints kills, seconds, where the installs were
killed, committed/received/queued/lost counts for the outbox and boot violations.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from cloud_trainer.stack.mosquitto import MosquittoBroker
from tests.reliability.crash_runs import boot_violations, install_crashes, outbox_crashes


def run(kills: int, only: str | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as folder:
        tmp = Path(folder)
        if only in (None, "outbox"):
            with MosquittoBroker(workdir=tmp / "mq") as broker:
                outcome = outbox_crashes(broker, tmp / "outbox", kills)
            figures["outbox"] = {
                "kills": outcome.report.summary["kills"],
                "seconds": outcome.report.summary["seconds"],
                "committed": len(outcome.committed),
                "received": len(outcome.received),
                "queued_after": len(outcome.queued),
                "lost": len(outcome.lost),
                "errors": outcome.report.summary["error_count"],
            }
        if only in (None, "install"):
            report = install_crashes(tmp / "install", kills)
            figures["install"] = {
                "kills": report.summary["kills"],
                "seconds": report.summary["seconds"],
                "boots_verified": len(report.of("B")),
                "commits": sum(1 for _c, r in report.of("S") if r.startswith("committed")),
                "killed_in": report.summary["killed_in"],
                "violations": len(boot_violations(report)),
                "errors": report.summary["error_count"],
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--only", choices=["outbox", "install"])
    args = parser.parse_args()
    for name, values in run(args.kills, args.only).items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


if __name__ == "__main__":
    main()
