"""The updater's persisted state: what serves, what came before, and what is in progress."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.protocol.manifest import ReleaseManifest, Sha256Hex
from edge_agent.protocol.messages import Ident, Name, UpdateState, Version
from edge_agent.updater.durable import atomic_write

log = logging.getLogger(__name__)

# Bounded memories: enough to stop a retained manifest being retried or re-reported forever.
MAX_REMEMBERED = 64
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")]

# Phases in which a candidate exists but has not been committed.
PRE_ACTIVATION = frozenset({UpdateState.DOWNLOADING, UpdateState.VERIFYING, UpdateState.SMOKE})
POST_ACTIVATION = frozenset({UpdateState.ACTIVATING, UpdateState.PROBATION})


class StateCorrupt(Exception):
    """The state file exists but cannot be read; the updater starts from the pointer instead."""


class ModelRecord(BaseModel):
    """One model version stored on disk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Version
    sha256: Sha256Hex
    size: int = Field(ge=0)
    file: FileName = Field(description="File name inside the versions folder.")
    release_id: Name | None = None


class UpdaterState(BaseModel):
    """Everything the updater must remember across a power cut."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Ident
    phase: UpdateState = UpdateState.IDLE
    active: ModelRecord | None = Field(
        default=None, description="The last committed version: what a restart falls back to."
    )
    trial: ModelRecord | None = Field(
        default=None, description="The version activated but still on probation."
    )
    previous: list[ModelRecord] = Field(
        default_factory=list, description="Earlier versions still on disk, newest first."
    )
    candidate: ReleaseManifest | None = Field(
        default=None, description="The release being applied while phase is not idle."
    )
    pinned: Version | None = None
    failed_releases: list[Name] = Field(
        default_factory=list, description="Releases that failed or were rolled back."
    )
    refused_releases: list[Name] = Field(
        default_factory=list, description="Releases already refused and reported."
    )

    @property
    def busy(self) -> bool:
        return self.phase in PRE_ACTIVATION | POST_ACTIVATION

    def remember_failed(self, release_id: str) -> UpdaterState:
        kept = [r for r in self.failed_releases if r != release_id][-(MAX_REMEMBERED - 1) :]
        return self.model_copy(update={"failed_releases": [*kept, release_id]})

    def remember_refused(self, release_id: str) -> UpdaterState:
        kept = [r for r in self.refused_releases if r != release_id][-(MAX_REMEMBERED - 1) :]
        return self.model_copy(update={"refused_releases": [*kept, release_id]})

    def record_for(self, version: int) -> ModelRecord | None:
        """The stored record of ``version`` (active, trial or previous), if still on disk."""
        for record in [self.active, self.trial, *self.previous]:
            if record is not None and record.version == version:
                return record
        return None


class StateStore:
    """Reads and writes ``state.json`` atomically (write, fsync, rename, fsync directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> UpdaterState | None:
        """The saved state; None when there is none yet; StateCorrupt when unreadable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateCorrupt(f"cannot read {self.path}: {e.strerror or e}") from e
        try:
            return UpdaterState.model_validate_json(raw)
        except ValidationError as e:
            raise StateCorrupt(f"{self.path} is not a valid updater state: {e}") from e

    def save(self, state: UpdaterState) -> None:
        atomic_write(self.path, state.model_dump_json(indent=1).encode())
        log.debug("updater state saved: phase=%s active=%s", state.phase, state.active)
