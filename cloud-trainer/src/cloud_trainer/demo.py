"""``cloud-trainer demo``: the main job on embedded defaults, the whole loop on one machine."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cloud_trainer.cli import host_port
from cloud_trainer.loop.closed_loop import ClosedLoop, LoopReport, LoopSettings
from cloud_trainer.loop.timeline import Entry
from edge_agent.comms.mqtt import BrokerEndpoint

log = logging.getLogger(__name__)

STEPS = (
    ("models_released", "weather v1 and camera models trained, registered and released"),
    ("first_weather_prediction", "weather station serving v1"),
    ("first_camera_visit", "camera reported its first visit (a pet came and left)"),
    ("drift_alert", "drift alert raised by the station"),
    ("retrain_started", "policy engine started the retrain"),
    ("retrain_finished", "retrain and gate finished"),
    ("release_published", "staged rollout started (canary wave)"),
    ("update_committed", "station committed the new version after probation"),
    ("first_prediction_new_version", "station serving the new version"),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run the closed loop end to end on embedded defaults (one machine)"
    )
    p.add_argument("--workdir", type=Path, help="keep the run's files here (default: temporary)")
    p.add_argument(
        "--broker",
        type=host_port,
        help="HOST:PORT of a broker (default: start a private Mosquitto)",
    )
    p.add_argument("--weather-data", type=Path, help="station CSV (default: shared or sample)")
    p.add_argument("--pets", type=Path, help="photo folder of class sub-folders (default: shared)")
    p.add_argument("--no-camera", action="store_true", help="run the weather station alone")
    p.add_argument(
        "--speed", type=float, default=36_000.0, help="station replay speed (3600 = 1 h per s)"
    )
    p.add_argument("--timeout", type=float, default=540.0, help="give up after this many s")
    p.set_defaults(func=run)


def _endpoint(spec: tuple[str, int] | None) -> BrokerEndpoint | None:
    return None if spec is None else BrokerEndpoint(*spec)


def _data(args: argparse.Namespace, console: Console) -> tuple[Path, Path | None]:
    from cloud_trainer.catdog.cli import default_data_path as default_pets
    from cloud_trainer.weather.settings import default_data_path as default_weather

    weather, origin = (args.weather_data, "given") if args.weather_data else default_weather()
    console.print(f"[bold]weather history[/] {weather} ({origin})")
    pets: Path | None = None
    if not args.no_camera:
        pets, origin = (args.pets, "given") if args.pets else default_pets()
        console.print(f"[bold]camera photos[/] {pets} ({origin})")
    return weather, pets


def run(args: argparse.Namespace) -> int:
    console = Console(width=max(Console().width, 140))
    weather, pets = _data(args, console)

    def echo(entry: Entry) -> None:
        console.print(f"[dim]{entry.at_s:7.1f}s[/] [cyan]{entry.device:<12}[/] {entry.text}")

    with tempfile.TemporaryDirectory(prefix="edge-mlops-demo-") as tmp:
        workdir: Path = args.workdir or Path(tmp)
        settings = LoopSettings(
            workdir=workdir,
            weather_history=weather,
            pets=pets,
            broker=_endpoint(args.broker),
            replay_speed=args.speed,
            timeout_s=args.timeout,
        )
        report = ClosedLoop(settings, echo).run()
    _summary(console, report)
    return 0 if report.ok else 1


def _summary(console: Console, report: LoopReport) -> None:
    table = Table(title="the loop, step by step (seconds from start)")
    table.add_column("step")
    table.add_column("at", justify="right")
    for key, text in STEPS:
        at = report.timings.get(key)
        table.add_row(text, "-" if at is None else f"{at:.1f}")
    console.print(table)
    for device, versions in report.versions.items():
        console.print(f"[bold]{device}[/] served versions {versions}")
    for line in report.retrain:
        console.print(f"[bold]retrain[/] {line}")
    for line in report.visits:
        console.print(f"[bold]visits[/] {line}")
    if report.rollout:
        console.print(f"[bold]rollout[/] {report.rollout}")
    for problem in report.problems:
        console.print(f"[red]problem[/] {problem}")
    if report.ok:
        console.print(f"[green]loop closed[/]: {report.outcome}")
    else:
        console.print("[red]loop not closed[/]")
