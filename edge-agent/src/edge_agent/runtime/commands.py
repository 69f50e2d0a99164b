"""Routes commands from the cloud (``cmd`` topic, or the local API) to handlers, with acks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.protocol.messages import Command, CommandAction, utc_now

log = logging.getLogger(__name__)

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
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


def _set_log_level(command: Command) -> str:
    level = str(command.args.get("level", "")).upper()
    if level not in _LEVELS:
        raise CommandRejected(f"level must be one of {', '.join(_LEVELS)}, not {level!r}")
    logger_name = str(command.args.get("logger", ""))
    logging.getLogger(logger_name or None).setLevel(level)
    return f"log level {level}" + (f" for {logger_name}" if logger_name else "")
