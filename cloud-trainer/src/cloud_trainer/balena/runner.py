"""Runs balena-cli commands, or prints them (``--dry-run``), or says balena-cli is missing."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from typing import TextIO

from cloud_trainer.balena.commands import BalenaCommand
from cloud_trainer.errors import UserError

log = logging.getLogger(__name__)


def find_balena() -> str | None:
    return shutil.which("balena")


def run_commands(commands: Sequence[BalenaCommand], dry_run: bool, out: TextIO) -> int:
    """Print each command; run them in order unless ``dry_run``, stopping at the first failure."""
    if dry_run:
        for command in commands:
            out.write(command.display() + "\n")
        return 0
    binary = find_balena()
    if binary is None:
        raise UserError(
            "balena-cli is not installed (https://github.com/balena-io/balena-cli); "
            "--dry-run prints the command instead",
            exit_code=1,
        )
    for command in commands:
        out.write(f"$ {command.display()}\n")
        out.flush()
        try:
            result = subprocess.run([binary, *command.argv[1:]], check=False)
        except OSError as e:
            raise UserError(f"cannot run {binary}: {e}") from e
        if result.returncode != 0:
            raise UserError(
                f"balena {command.argv[1]} failed with exit code {result.returncode}",
                exit_code=1,
            )
    return 0
