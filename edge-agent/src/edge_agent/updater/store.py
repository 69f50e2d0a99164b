"""Model versions on disk: the versions folder, the active pointer, and pruning to a budget."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from edge_agent.protocol.manifest import ReleaseManifest
from edge_agent.updater.durable import atomic_write, durable_move, remove_stale_temporaries
from edge_agent.updater.errors import DiskBudgetExceeded, StoreError
from edge_agent.updater.state import ModelRecord

log = logging.getLogger(__name__)

POINTER_NAME = "active.json"
STATE_NAME = "state.json"
VERSIONS_DIR = "versions"


class ModelStore:
    """Owns ``models_dir``: ``versions/`` holds the files, ``active.json`` names the one to boot.

    The pointer is replaced atomically, so a restart at any moment finds a complete pointer
    to a complete file.
    """

    def __init__(self, models_dir: Path, staging_dir: Path, budget_bytes: int) -> None:
        self.models_dir = models_dir
        self.versions_dir = models_dir / VERSIONS_DIR
        self.staging_dir = staging_dir
        self.budget_bytes = budget_bytes
        self.pointer_path = models_dir / POINTER_NAME
        self.state_path = models_dir / STATE_NAME
        for folder in (self.models_dir, self.versions_dir, self.staging_dir):
            folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.models_dir)

    # -- files ---------------------------------------------------------------------------

    @staticmethod
    def file_name(model: str, version: int, sha256: str) -> str:
        return f"{model}-v{version}-{sha256[:12]}.onnx"

    def path_of(self, record: ModelRecord) -> Path:
        return self.versions_dir / record.file

    def install(self, staged: Path, manifest: ReleaseManifest) -> ModelRecord:
        """Move a verified download into ``versions/`` and describe it."""
        record = ModelRecord(
            version=manifest.version,
            sha256=manifest.sha256,
            size=manifest.size,
            file=self.file_name(manifest.model, manifest.version, manifest.sha256),
            release_id=manifest.release_id,
        )
        durable_move(staged, self.path_of(record))
        return record

    def adopt(self, source: Path, model: str, version: int, sha256: str) -> ModelRecord:
        """Copy a provisioned model file into ``versions/`` (first boot of a device)."""
        data = source.read_bytes()
        record = ModelRecord(
            version=version,
            sha256=sha256,
            size=len(data),
            file=self.file_name(model, version, sha256),
        )
        target = self.path_of(record)
        if not target.exists():
            atomic_write(target, data)
        return record

    # -- pointer -------------------------------------------------------------------------

    def read_pointer(self) -> ModelRecord | None:
        try:
            raw = self.pointer_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {self.pointer_path}: {e.strerror or e}") from e
        try:
            return ModelRecord.model_validate_json(raw)
        except ValidationError as e:
            raise StoreError(f"{self.pointer_path} is not a valid model pointer: {e}") from e

    def read_pointer_quietly(self) -> ModelRecord | None:
        """The pointer, or None when it is missing or unreadable (boot rewrites it then)."""
        try:
            return self.read_pointer()
        except StoreError:
            return None

    def write_pointer(self, record: ModelRecord) -> None:
        """Point boot at ``record``: new pointer file, fsync, rename over the old, fsync dir."""
        if not self.path_of(record).is_file():
            raise StoreError(f"refusing to point at missing file {self.path_of(record)}")
        atomic_write(self.pointer_path, record.model_dump_json().encode())
        log.info("active pointer now names version %s (%s)", record.version, record.file)

    # -- space ---------------------------------------------------------------------------

    def usage_bytes(self) -> int:
        """Bytes held by stored versions and by downloads in progress."""
        total = 0
        for folder in (self.versions_dir, self.staging_dir):
            for item in folder.iterdir():
                with contextlib.suppress(OSError):
                    if item.is_file():
                        total += item.stat().st_size
        return total

    def bytes_of(self, records: Iterable[ModelRecord | None]) -> int:
        total = 0
        for record in records:
            if record is not None:
                with contextlib.suppress(OSError):
                    total += self.path_of(record).stat().st_size
        return total

    def check_room(self, size: int, protected: Iterable[ModelRecord | None]) -> None:
        """Raise DiskBudgetExceeded unless ``size`` more bytes fit beside ``protected``."""
        kept = self.bytes_of(protected)
        if kept + size > self.budget_bytes:
            raise DiskBudgetExceeded(
                f"{size} bytes do not fit: {kept} bytes are kept for serving and rollback, "
                f"the disk budget is {self.budget_bytes} bytes"
            )

    def prune(
        self,
        protected: list[ModelRecord | None],
        previous: list[ModelRecord],
        keep_versions: int,
        reserve: int = 0,
    ) -> list[ModelRecord]:
        """Drop old versions beyond ``keep_versions`` or the budget; return the survivors.

        ``protected`` (active and trial) are never removed; ``previous`` is newest first, so
        the oldest go first. Files no record names (left by a crash) are removed too.
        """
        must = [r for r in protected if r is not None]
        room_for_previous = max(0, keep_versions - len(must))
        kept = list(previous[:room_for_previous])
        dropped = list(previous[room_for_previous:])
        while kept and self.bytes_of([*must, *kept]) + reserve > self.budget_bytes:
            dropped.append(kept.pop())
        named = {r.file for r in [*must, *kept]}
        for record in dropped:
            if record.file not in named:
                self._remove(self.path_of(record))
        for item in self.versions_dir.iterdir():
            if item.is_file() and item.name not in named:
                self._remove(item)
        return kept

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
            log.info("pruned %s", path.name)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not prune %s: %s", path, e)

    def clear_staging(self, keep: str | None = None) -> None:
        """Remove downloads in progress except those whose name starts with ``keep``."""
        for item in self.staging_dir.iterdir():
            if keep is not None and item.name.startswith(keep):
                continue
            with contextlib.suppress(OSError):
                item.unlink()
