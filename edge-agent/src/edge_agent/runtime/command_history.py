"""Commands already handled, by ``cmd_id``, kept on disk so a repeat is answered, not rerun."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.updater.durable import atomic_write

log = logging.getLogger(__name__)

# A retry comes within minutes, a redelivery after an outage within days: a week of ids,
# and never more than a thousand, keeps the file a few hundred KiB at most.
MAX_ENTRIES = 1000
MAX_AGE_S = 7 * 24 * 3600.0


class SeenCommand(BaseModel):
    """One command's outcome; ``accepted`` means it started and has not finished (yet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cmd_id: str
    result: str
    detail: str | None = None
    at: float


class _HistoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    commands: list[SeenCommand]


class CommandHistory:
    """The last ``max_entries`` command ids seen within ``max_age_s``, oldest first.

    Every change is written at once (temporary file, fsync, rename): commands are rare and
    a repeat after a crash must still be recognised. A file that cannot be read is logged
    and ignored; the agent starts with an empty history rather than not at all.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_entries: int = MAX_ENTRIES,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.path = path
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._seen: dict[str, SeenCommand] = {}
        if path is not None:
            self._seen = {c.cmd_id: c for c in _load(path)}
            self._prune(time.time())

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def get(self, cmd_id: str) -> SeenCommand | None:
        with self._lock:
            return self._seen.get(cmd_id)

    def record(self, cmd_id: str, result: str, detail: str | None) -> None:
        now = time.time()
        with self._lock:
            self._seen.pop(cmd_id, None)
            self._seen[cmd_id] = SeenCommand(cmd_id=cmd_id, result=result, detail=detail, at=now)
            self._prune(now)
            if self.path is not None:
                _save(self.path, list(self._seen.values()))

    def _prune(self, now: float) -> None:
        oldest = now - self.max_age_s
        stale = [k for k, c in self._seen.items() if c.at < oldest]
        excess = len(self._seen) - len(stale) - self.max_entries
        for key in stale:
            del self._seen[key]
        for key in list(self._seen)[: max(0, excess)]:
            del self._seen[key]


def _load(path: Path) -> list[SeenCommand]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        log.error("command history %s unreadable (%s): starting empty", path, e.strerror or e)
        return []
    try:
        return _HistoryFile.model_validate_json(raw).commands
    except ValidationError as e:
        log.error(
            "command history %s is corrupt (%s): starting empty; commands sent before "
            "this start may run again if repeated",
            path,
            e.errors(include_url=False)[0]["msg"],
        )
        return []


def _save(path: Path, commands: list[SeenCommand]) -> None:
    try:
        atomic_write(path, _HistoryFile(commands=commands).model_dump_json().encode())
    except OSError as e:
        # Commands keep running; only their repeats after a restart go unrecognised.
        log.error("cannot save command history %s: %s", path, e.strerror or e)
