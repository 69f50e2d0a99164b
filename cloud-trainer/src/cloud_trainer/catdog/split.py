"""Stratified train/validation/test split that holds some source groups (breeds) out entirely."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloud_trainer.catdog.ingest import DatasetError, ImageRecord, data_version


class SplitSettings(BaseModel):
    """How the data is divided; part of the recorded data version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    val_fraction: float = Field(default=0.15, gt=0, lt=0.5)
    unseen_group_fraction: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of the small groups (e.g. rare breeds) kept entirely in the test split.",
    )
    small_group_share: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="A group is small when it holds at most this share of its class.",
    )
    seed: int = 0


@dataclass(frozen=True)
class Split:
    """Records per split, the groups the model never sees in training, and the version string."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    test: list[ImageRecord]
    unseen_groups: list[str]
    version: str

    def assignment(self) -> dict[str, str]:
        """Content hash → split name, the record that makes the split reproducible."""
        out = {}
        for name, records in (("train", self.train), ("val", self.val), ("test", self.test)):
            out.update({r.sha256: name for r in records})
        return out

    def write(self, path: Path) -> None:
        rows = [
            {
                "file": str(r.path),
                "label": r.label,
                "sha256": r.sha256,
                "group": r.group,
                "split": s,
            }
            for s, records in (("train", self.train), ("val", self.val), ("test", self.test))
            for r in records
        ]
        path.write_text(
            json.dumps(
                {"version": self.version, "unseen_groups": self.unseen_groups, "files": rows},
                indent=1,
            )
        )


def _take(n_total: int, fraction: float) -> int:
    return max(1, round(n_total * fraction))


def split_records(records: list[ImageRecord], settings: SplitSettings | None = None) -> Split:
    """Per class: hold out whole small groups into test, then stratify the rest at random."""
    settings = settings or SplitSettings()
    rng = random.Random(settings.seed)  # noqa: S311 - a reproducible split, not a secret
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.sha256):
        by_class[r.label].append(r)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    test: list[ImageRecord] = []
    unseen: list[str] = []
    for label in sorted(by_class):
        items = by_class[label]
        if len(items) < 3:
            raise DatasetError(f"class {label!r} has {len(items)} images; at least 3 are needed")
        n_test = _take(len(items), settings.test_fraction)
        groups: dict[str, list[ImageRecord]] = defaultdict(list)
        for r in items:
            groups[r.group].append(r)
        small = sorted(
            g
            for g, members in groups.items()
            if len(members) <= settings.small_group_share * len(items) and len(groups) > 1
        )
        rng.shuffle(small)
        held: list[ImageRecord] = []
        for g in small[: round(len(small) * settings.unseen_group_fraction)]:
            if len(held) + len(groups[g]) > n_test:
                break
            held.extend(groups[g])
            unseen.append(g)
        held_ids = {r.sha256 for r in held}
        rest = [r for r in items if r.sha256 not in held_ids]
        rng.shuffle(rest)
        n_more = max(0, n_test - len(held))
        n_val = _take(len(items), settings.val_fraction)
        if len(rest) - n_more - n_val < 1:
            raise DatasetError(f"class {label!r} has too few images to split ({len(items)})")
        test.extend(held + rest[:n_more])
        val.extend(rest[n_more : n_more + n_val])
        train.extend(rest[n_more + n_val :])
    settings_key = settings.model_dump_json()
    version = hashlib.sha256(f"{data_version(records)}|{settings_key}".encode()).hexdigest()[:16]
    return Split(train, val, test, sorted(unseen), version)
