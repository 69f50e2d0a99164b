"""Supervised worker threads: a watchdog restarts a dead worker, at most a few times a minute."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Worker = Callable[[threading.Event], None]


@dataclass
class WorkerState:
    name: str
    target: Worker
    thread: threading.Thread | None = None
    restarts: int = 0
    finished: bool = False
    failed: bool = False
    last_error: str | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=16))


class Supervisor:
    """Runs each worker in its own thread until ``stop``; a worker returning ends normally.

    A worker that raises is restarted by the watchdog, unless it already restarted
    ``max_restarts`` times within ``window_s``: then it is marked failed (the agent
    reports itself degraded) instead of spinning on a permanent fault.
    """

    def __init__(self, max_restarts: int = 5, window_s: float = 60.0, check_s: float = 0.5):
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.check_s = check_s
        self.stopping = threading.Event()
        self.workers: dict[str, WorkerState] = {}
        self._watchdog: threading.Thread | None = None

    def add(self, name: str, target: Worker) -> None:
        self.workers[name] = WorkerState(name, target)

    def start(self) -> None:
        for state in self.workers.values():
            self._launch(state)
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._watchdog.start()

    def _launch(self, state: WorkerState) -> None:
        def body() -> None:
            try:
                state.target(self.stopping)
                state.finished = True
            except Exception as e:  # the supervisor boundary: log, let the watchdog decide
                state.last_error = f"{type(e).__name__}: {e}"
                log.exception("worker %s died", state.name)

        state.thread = threading.Thread(target=body, name=state.name, daemon=True)
        state.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(self.check_s):
            now = time.monotonic()
            for state in self.workers.values():
                thread = state.thread
                if state.finished or state.failed or thread is None or thread.is_alive():
                    continue
                while state.recent and now - state.recent[0] > self.window_s:
                    state.recent.popleft()
                if len(state.recent) >= self.max_restarts:
                    state.failed = True
                    log.error(
                        "worker %s failed %s times in %.0fs; not restarting (last: %s)",
                        state.name,
                        len(state.recent),
                        self.window_s,
                        state.last_error,
                    )
                    continue
                state.recent.append(now)
                state.restarts += 1
                log.warning("restarting worker %s (restart %s)", state.name, state.restarts)
                self._launch(state)

    @property
    def healthy(self) -> bool:
        return not any(s.failed for s in self.workers.values())

    def alive(self, name: str) -> bool:
        state = self.workers.get(name)
        return bool(state and state.thread and state.thread.is_alive())

    def restarts(self) -> dict[str, int]:
        return {name: s.restarts for name, s in self.workers.items()}

    def stop(self, timeout: float = 5.0, only: set[str] | None = None) -> None:
        """Signal every worker to stop and join them (or just those named in ``only``)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for state in self.workers.values():
            if state.thread is not None and (only is None or state.name in only):
                state.thread.join(max(0.0, deadline - time.monotonic()))
        if only is not None:
            return
        if self._watchdog is not None:
            self._watchdog.join(1.0)
