"""Audit report render time: `cloud-trainer report` for a freshly trained weather version.

Trains a quick weather model on the shipped sample into a throwaway MLflow store, analyses
it, then renders the HTML report (and the PDF where Chromium is installed) several times and
prints the median beside the raw cost of reading the same run from MLflow.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def run(rounds: int = 5) -> dict[str, float]:
    from mlflow import MlflowClient

    from cloud_trainer.governance.report.build import write_report
    from cloud_trainer.stack.mlflow_store import MlflowStore
    from cloud_trainer.weather.pipeline import train_weather
    from cloud_trainer.weather.settings import MODEL_NAME, TrainSettings, sample_path

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp)
        store = MlflowStore.local(root / "mlflow")
        store.activate()
        outcome = train_weather(
            TrainSettings(data=sample_path(), store=store.tracking_uri, quick=True, work_dir=root)
        )
        assert outcome.registered is not None
        version = outcome.registered.version
        client = MlflowClient()
        raw, html, pdf = [], [], []
        for k in range(rounds):
            started = time.perf_counter()
            mv = client.get_model_version(MODEL_NAME, str(version))
            client.get_run(str(mv.run_id))
            client.list_artifacts(str(mv.run_id))
            raw.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_report(MODEL_NAME, version, root / f"r{k}.html", pdf=False)
            html.append(time.perf_counter() - started)
            started = time.perf_counter()
            write_report(MODEL_NAME, version, root / f"p{k}.html", pdf=True)
            pdf.append(time.perf_counter() - started)
    figures = {
        "mlflow_read_s": statistics.median(raw),
        "report_html_s": statistics.median(html),
        "report_html_pdf_s": statistics.median(pdf),
    }
    figures["html_vs_read_ratio"] = figures["report_html_s"] / figures["mlflow_read_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = run(args.rounds)
    print(f"{'figure':<22} {'value':>10}")
    for name, value in figures.items():
        print(f"{name:<22} {value:>10.3f}")


if __name__ == "__main__":
    main()
