"""The labelling queue: captured frames waiting for a person, their labels and where they went.

The tables live in the fleet database beside ``samples`` (created on first use), so a label
and the frame it belongs to are read and written in one transaction on either backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    func,
    select,
    update,
)

from cloud_trainer.fleet.store import FleetStore
from cloud_trainer.fleet.store import schema as fleet
from cloud_trainer.fleet.store.engine import upsert, write_transaction
from cloud_trainer.governance.errors import LabellingError

HUMAN_LABELS = ("cat", "dog", "neither")
# The training folder each human label goes to: "neither" (no cat, no dog) is a frame of the
# camera model's no_pet outcome, its none/ folder.
TRAINING_FOLDERS = {"cat": "cat", "dog": "dog", "neither": "none"}
TRAINING_LABELS = tuple(TRAINING_FOLDERS)

metadata = MetaData()

sample_labels = Table(
    "sample_labels",
    metadata,
    Column("sample_id", Integer, primary_key=True),
    Column("label", String(16), nullable=False),
    Column("labelled_by", String(128), nullable=False),
    Column("labelled_at", Float, nullable=False),
    Column("previous_label", String(16)),
)

label_exports = Table(
    "label_exports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("export_id", String(64), nullable=False, index=True),
    Column("sample_id", Integer, nullable=False),
    Column("label", String(16), nullable=False),
    Column("exported_at", Float, nullable=False),
    Column("destination", Text, nullable=False),
    Column("run_id", String(64)),
    Index("ix_label_exports_sample", "sample_id"),
)


class LabelQueue:
    """Reads and writes labels over a fleet store; safe to share between requests."""

    def __init__(self, store: FleetStore) -> None:
        self.store = store
        with write_transaction(store.engine) as conn:
            metadata.create_all(conn)

    def pending(self, limit: int = 50, model: str | None = None) -> list[dict[str, Any]]:
        """Unlabelled image samples, low-confidence captures first, oldest first."""
        s, lab = fleet.samples.c, sample_labels.c
        low_first = case((s.reason == "low_confidence", 0), else_=1)
        query = (
            select(fleet.samples)
            .outerjoin(sample_labels, lab.sample_id == s.id)
            .where(lab.sample_id.is_(None), s.content_type.like("image/%"))
            .order_by(low_first, s.id)
            .limit(limit)
        )
        if model is not None:
            query = query.where(s.model_name == model)
        return self.store.read(lambda c: [dict(r._mapping) for r in c.execute(query)])

    def sample(self, sample_id: int) -> dict[str, Any]:
        s = fleet.samples.c
        query = select(fleet.samples).where(s.id == sample_id)
        row = self.store.read(lambda c: c.execute(query).first())
        if row is None:
            raise LabellingError(f"no sample {sample_id}", 404)
        return dict(row._mapping)

    def image_path(self, sample_id: int, samples_dir: Path) -> tuple[Path, str]:
        """The stored frame and its type; only files inside the samples folder are served."""
        row = self.sample(sample_id)
        if not str(row["content_type"]).startswith("image/"):
            raise LabellingError(f"sample {sample_id} is {row['content_type']}, not an image", 415)
        path = Path(row["path"]).resolve()
        if not path.is_relative_to(samples_dir.resolve()) or not path.is_file():
            raise LabellingError(f"the file of sample {sample_id} is not available", 410)
        return path, str(row["content_type"])

    def label(
        self, sample_id: int, label: str, who: str, now: float | None = None
    ) -> dict[str, Any]:
        """Record (or correct) a person's label; the label it replaces is kept beside it."""
        if label not in HUMAN_LABELS:
            raise LabellingError(
                f"label must be one of {', '.join(HUMAN_LABELS)}, not {label!r}", 422
            )
        row = self.sample(sample_id)
        if not str(row["content_type"]).startswith("image/"):
            raise LabellingError(f"sample {sample_id} is not an image frame", 422)
        now = time.time() if now is None else now
        lab = sample_labels.c
        with write_transaction(self.store.engine) as conn:
            before = conn.execute(select(lab.label).where(lab.sample_id == sample_id)).scalar()
            ins = upsert(conn, sample_labels).values(
                sample_id=sample_id,
                label=label,
                labelled_by=who,
                labelled_at=now,
                previous_label=None,
            )
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[lab.sample_id],
                    set_={
                        "label": label,
                        "labelled_by": who,
                        "labelled_at": now,
                        "previous_label": before,
                    },
                )
            )
        return {
            "sample_id": sample_id,
            "label": label,
            "labelled_by": who,
            "labelled_at": now,
            "previous_label": before,
        }

    def labelled(self, unused_only: bool = True) -> list[dict[str, Any]]:
        """Labelled samples with their provenance; by default those no training run used yet."""
        s, lab, ex = fleet.samples.c, sample_labels.c, label_exports.c
        used = select(ex.sample_id).where(ex.run_id.is_not(None))
        query = (
            select(fleet.samples, lab.label.label("human_label"), lab.labelled_by, lab.labelled_at)
            .join(sample_labels, lab.sample_id == s.id)
            .order_by(s.id)
        )
        if unused_only:
            query = query.where(s.id.not_in(used))
        return self.store.read(lambda c: [dict(r._mapping) for r in c.execute(query)])

    def counts(self) -> dict[str, int]:
        s, lab = fleet.samples.c, sample_labels.c
        images = s.content_type.like("image/%")

        def read(c: Any) -> dict[str, int]:
            total = c.execute(
                select(func.count()).select_from(fleet.samples).where(images)
            ).scalar_one()
            by_label = dict(c.execute(select(lab.label, func.count()).group_by(lab.label)).all())
            return {"images": int(total), **{k: int(by_label.get(k, 0)) for k in HUMAN_LABELS}}

        counts = self.store.read(read)
        counts["pending"] = counts["images"] - sum(counts[k] for k in HUMAN_LABELS)
        counts["unused_for_training"] = sum(
            1 for r in self.labelled(unused_only=True) if r["human_label"] in TRAINING_LABELS
        )
        return counts

    def record_export(self, export_id: str, rows: list[dict[str, Any]], destination: str) -> None:
        now = time.time()
        with write_transaction(self.store.engine) as conn:
            for r in rows:
                conn.execute(
                    label_exports.insert().values(
                        export_id=export_id,
                        sample_id=r["sample_id"],
                        label=r["label"],
                        exported_at=now,
                        destination=destination,
                    )
                )

    def mark_used(self, export_id: str, run_id: str) -> int:
        """The training run that took an export in: the lineage from frame to model."""
        ex = label_exports.c
        with write_transaction(self.store.engine) as conn:
            result = conn.execute(
                update(label_exports).where(ex.export_id == export_id).values(run_id=run_id)
            )
            return int(result.rowcount)
