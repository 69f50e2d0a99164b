"""Labelled frames → a class-folder dataset the camera pipeline ingests, with its provenance."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.governance.errors import LabellingError
from cloud_trainer.governance.labelling.queue import TRAINING_FOLDERS, LabelQueue

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png"}


class ExportedSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_id: int
    device_id: str
    sha256: str
    label: str
    labelled_by: str
    labelled_at: float
    captured_at: float | None
    model_name: str | None
    model_version: int | None
    predicted_label: str | None
    capture_reason: str | None
    file: str


class LabelExport(BaseModel):
    """What an export holds and what it left out, written beside the class folders."""

    model_config = ConfigDict(extra="forbid")

    export_id: str
    created: float
    destination: str
    base_data: str | None
    base_files: int
    samples: list[ExportedSample]
    excluded: list[dict[str, Any]] = Field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _link_base(base: Path, out: Path) -> int:
    """The existing training photos, linked (not copied) under the same class folders."""
    n = 0
    for label_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        target = out / label_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(label_dir.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                os.symlink(f.resolve(), target / f.name)
                n += 1
    return n


def export_labelled(
    queue: LabelQueue, out: Path, base: Path | None = None, include_used: bool = False
) -> LabelExport:
    """Copy labelled frames into ``out/cat/``, ``out/dog/`` and ``out/none/`` (labelled
    neither: the no_pet frames); record which samples went where.

    A frame whose bytes no longer match the hash recorded at upload is left out and named
    in ``excluded``: a tampered or damaged file must not enter training silently.
    """
    if out.exists() and any(out.iterdir()):
        raise LabellingError(f"{out} is not empty: export into a new folder", 409)
    if base is not None and not base.is_dir():
        raise LabellingError(f"base data folder {base} does not exist", 404)
    out.mkdir(parents=True, exist_ok=True)
    export_id = f"labels-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    base_files = _link_base(base, out) if base is not None else 0
    samples: list[ExportedSample] = []
    excluded: list[dict[str, Any]] = []
    for row in queue.labelled(unused_only=not include_used):
        label = row["human_label"]
        if label not in TRAINING_FOLDERS:
            excluded.append({"sample_id": row["id"], "reason": f"labelled {label}"})
            continue
        source = Path(row["path"])
        try:
            actual = _sha256(source)
        except OSError as e:
            excluded.append({"sample_id": row["id"], "reason": f"unreadable: {e.strerror}"})
            continue
        if actual != row["sha256"]:
            excluded.append({"sample_id": row["id"], "reason": "file changed since upload"})
            log.warning("sample %s: %s no longer matches its recorded sha256", row["id"], source)
            continue
        ext = EXTENSIONS.get(row["content_type"], source.suffix or ".img")
        target = out / TRAINING_FOLDERS[label] / f"{row['device_id']}_{row['id']:06d}{ext}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        samples.append(
            ExportedSample(
                sample_id=row["id"],
                device_id=row["device_id"],
                sha256=row["sha256"],
                label=label,
                labelled_by=row["labelled_by"],
                labelled_at=row["labelled_at"],
                captured_at=row["captured_at"],
                model_name=row["model_name"],
                model_version=row["model_version"],
                predicted_label=row["label"],
                capture_reason=row["reason"],
                file=str(target.relative_to(out)),
            )
        )
    export = LabelExport(
        export_id=export_id,
        created=time.time(),
        destination=str(out),
        base_data=None if base is None else str(base),
        base_files=base_files,
        samples=samples,
        excluded=excluded,
    )
    (out / PROVENANCE_FILE).write_text(json.dumps(export.model_dump(mode="json"), indent=1))
    queue.record_export(export_id, [s.model_dump() for s in samples], str(out))
    log.info("exported %s labelled frames to %s (%s left out)", len(samples), out, len(excluded))
    return export


def read_export(folder: Path) -> LabelExport | None:
    path = folder / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        return LabelExport.model_validate_json(path.read_text())
    except ValueError as e:
        raise LabellingError(f"{path}: not a label export record: {e}") from e
