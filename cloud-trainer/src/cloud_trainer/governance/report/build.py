"""Writing the report to disk, and a PDF beside it when a headless browser is installed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.governance.errors import GovernanceError
from cloud_trainer.governance.report.collect import ReportFacts, collect_facts, load_images
from cloud_trainer.governance.report.html import render_html

log = logging.getLogger(__name__)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PDF_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ReportOutcome:
    html: Path
    pdf: Path | None
    pdf_note: str
    seconds: float
    facts: ReportFacts


def find_browser() -> str | None:
    """A Chromium-family browser able to ``--print-to-pdf``, if one is installed."""
    override = os.environ.get("EDGE_MLOPS_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def html_to_pdf(html: Path, pdf: Path, browser: str) -> None:
    """Print with the browser's own engine: what a person sees on screen is what is filed."""
    with tempfile.TemporaryDirectory(prefix="gov-pdf-") as profile:
        command = [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise GovernanceError(f"{browser} could not print the PDF: {e}") from e
    if done.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GovernanceError(f"{browser} could not print the PDF: {tail[0]}")


def render_report(
    model_name: str,
    version: int,
    fleet_store: FleetStore | None = None,
    fleet_source: str | None = None,
) -> tuple[str, ReportFacts]:
    """The HTML text and its facts (what the dashboard route serves)."""
    facts = collect_facts(model_name, version, fleet_store, fleet_source)
    return render_html(facts, load_images(facts)), facts


def write_report(
    model_name: str,
    version: int,
    out: Path,
    fleet_store: FleetStore | None = None,
    fleet_source: str | None = None,
    pdf: bool = True,
) -> ReportOutcome:
    started = time.monotonic()
    text, facts = render_report(model_name, version, fleet_store, fleet_source)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.part")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, out)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise GovernanceError(f"cannot write the report to {out}: {e.strerror or e}") from e
    pdf_path: Path | None = None
    note = "PDF skipped"
    if pdf:
        browser = find_browser()
        if browser is None:
            note = "no PDF: no headless Chromium found (install chromium to get one)"
        else:
            pdf_path = out.with_suffix(".pdf")
            try:
                html_to_pdf(out, pdf_path, browser)
                note = f"PDF printed by {Path(browser).name}"
            except GovernanceError as e:
                log.warning("%s", e)
                note, pdf_path = f"no PDF: {e}", None
    return ReportOutcome(out, pdf_path, note, time.monotonic() - started, facts)
