"""Routes commands from the cloud (``cmd`` topic, or the local API) to handlers, with acks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.protocol.messages import Command, CommandAction, utc_now
from edge_agent.runtime.command_history import CommandHistory, SeenCommand

log = logging.getLogger(__name__)

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_DETAIL_MAX = 1000


class CommandRejected(Exception):
    """A handler refuses the command (bad arguments, wrong state); the text goes in the ack."""


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    result: str  # done | rejected | expired | failed
    detail: str | None = None


CommandHandler = Callable[[Command], str | None]


class CommandRouter:
    """``ping`` and ``set_log_level`` are built in; components register the rest by action.

    A handler returns a detail string (or None) when done, raises CommandRejected to
    refuse; any other exception is a failure, reported in the ack and logged here.

    Each ``cmd_id`` runs once: a repeat (a cloud retry, a QoS 1 redelivery, a second
    click) gets the first outcome again, marked duplicate, without running the handler.
    With ``history_file`` the ids survive a restart; the id is written before the handler
    runs, so a command cut short by a crash is not run a second time either.
    """

    def __init__(
        self,
        device_id: str,
        history_file: Path | None = None,
        *,
        duplicate_wait_s: float = 30.0,
    ) -> None:
        self.device_id = device_id
        self.history = CommandHistory(history_file)
        self.duplicate_wait_s = duplicate_wait_s
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._handlers: dict[str, CommandHandler] = {
            "ping": lambda _c: "pong",
            "set_log_level": _set_log_level,
        }

    def register(self, action: CommandAction, handler: CommandHandler) -> None:
        self._handlers[action] = handler

    def actions(self) -> list[str]:
        return sorted(self._handlers)

    def handle(self, command: Command) -> CommandOutcome:
        if command.device_id != self.device_id:
            return CommandOutcome("rejected", f"command is for {command.device_id}")
        cmd_id = command.cmd_id
        with self._lock:
            running = self._running.get(cmd_id)
            seen = self.history.get(cmd_id) if running is None else None
            if running is None and seen is None:
                self._running[cmd_id] = threading.Event()
        if running is not None:  # the same id is being handled on another thread
            running.wait(self.duplicate_wait_s)
            seen = self.history.get(cmd_id)
        if seen is not None:
            return _duplicate(seen, still_running=cmd_id in self._running)
        try:
            self.history.record(cmd_id, "accepted", None)
            outcome = self._run(command)
            self.history.record(cmd_id, outcome.result, outcome.detail)
        finally:
            with self._lock:
                self._running.pop(cmd_id).set()
        return outcome

    def _run(self, command: Command) -> CommandOutcome:
        if command.expires_at is not None and command.expires_at < utc_now():
            return CommandOutcome("expired", f"expired at {command.expires_at.isoformat()}")
        handler = self._handlers.get(command.action)
        if handler is None:
            return CommandOutcome("rejected", f"no handler for {command.action!r} on this device")
        try:
            return CommandOutcome("done", handler(command))
        except CommandRejected as e:
            return CommandOutcome("rejected", str(e)[:1000])
        except Exception as e:  # a handler's bug must not take the command loop down
            log.exception("command %s (%s) failed", command.cmd_id, command.action)
            return CommandOutcome("failed", f"{type(e).__name__}: {e}"[:1000])


def _duplicate(seen: SeenCommand, *, still_running: bool) -> CommandOutcome:
    when = datetime.fromtimestamp(seen.at, UTC).isoformat(timespec="seconds")
    if seen.result != "accepted":
        detail = f"duplicate of {seen.cmd_id}, {seen.result} at {when}"
        if seen.detail:
            detail += f": {seen.detail}"
    elif still_running:
        detail = f"duplicate of {seen.cmd_id}, started at {when} and still running"
    else:
        detail = (
            f"duplicate of {seen.cmd_id}, started at {when} and cut short by a restart; "
            "not run again (send a new cmd_id to retry)"
        )
    return CommandOutcome(seen.result, detail[:_DETAIL_MAX])


def _set_log_level(command: Command) -> str:
    level = str(command.args.get("level", "")).upper()
    if level not in _LEVELS:
        raise CommandRejected(f"level must be one of {', '.join(_LEVELS)}, not {level!r}")
    logger_name = str(command.args.get("logger", ""))
    logging.getLogger(logger_name or None).setLevel(level)
    return f"log level {level}" + (f" for {logger_name}" if logger_name else "")
