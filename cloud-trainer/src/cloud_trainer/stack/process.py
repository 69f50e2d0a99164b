"""What the private servers of the stack (Mosquitto, a NATS cluster, PostgreSQL) share.

Finding a server binary, starting it with its output in a log file, waiting until it answers,
stopping it (a signal, then SIGKILL after a while) and ``with`` support: each server module
keeps its own errors, configuration and readiness check.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def find_binary(
    name: str, search: Iterable[str], unavailable: Callable[[str], Exception], install: str
) -> str:
    """``name`` on PATH, else the first executable path of ``search`` (the usual places off a
    user's PATH, such as ``/usr/sbin``); else ``unavailable`` raised with a message saying to
    install the Debian package ``name`` (``install``: the command, and any version needed).
    """
    found = shutil.which(name) or next((p for p in search if os.access(p, os.X_OK)), None)
    if found is None:
        raise unavailable(
            f"{name} is not installed: install the Debian package '{name}' ({install})"
        )
    return found


def spawn(
    args: Sequence[str], log_path: Path, *, new_session: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr appended to ``log_path``.

    In a session (and process group) of its own unless ``new_session`` is false, so that a
    terminal's Ctrl-C reaches the caller, which then stops the server in order.
    """
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            list(args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def restartable_port(host: str = "127.0.0.1", avoid: Iterable[int] = ()) -> int:
    """A free port outside the kernel's ephemeral range, for a server that a test kills and
    starts again on the same port: in the ephemeral range an outgoing connection may take
    the port meanwhile (seen with 1,000 simulated devices) and the restart fails to bind."""
    low, high = _ephemeral_range()
    lo, hi = (10000, low - 1) if low > 12000 else (high + 1, 65535)
    taken = set(avoid)
    rng = random.Random()  # noqa: S311 - a port, not a secret
    for _ in range(200):
        port = rng.randint(lo, hi)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise OSError(f"no free port in {lo}-{hi} on {host}")


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` is accepted within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    *,
    check: Callable[[], None] | None = None,
    interval: float = 0.1,
) -> bool:
    """Ask ``ready`` every ``interval`` seconds: True once it is, False after ``timeout``.

    ``check`` runs before each try and raises to give up at once (a server that exited).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if ready():
            return True
        time.sleep(interval)
    return False


def kill_process(
    proc: subprocess.Popen[bytes] | None, wait: float = 5.0, *, group: bool = False
) -> None:
    """SIGKILL ``proc`` (its whole process group with ``group``) and reap it within ``wait`` s.

    Nothing happens to a process that has already ended, or to None.
    """
    if proc is None or proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait(wait)


def stop_process(
    proc: subprocess.Popen[bytes] | None,
    timeout: float,
    *,
    sig: int = signal.SIGTERM,
    kill_wait: float = 5.0,
    group: bool = False,
) -> None:
    """Send ``sig`` and wait ``timeout`` s for ``proc`` to end; past that, :func:`kill_process`.

    Nothing happens to a process that has already ended, or to None.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_process(proc, kill_wait, group=group)


def tail_log(path: Path, lines: int, sep: str = "\n") -> str:
    """The last ``lines`` lines of a server's log joined by ``sep``, for error messages."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return sep.join(text[-lines:]) or "(empty log)"


class Service:
    """A server run for the length of a ``with`` block: :meth:`start` on entry, :meth:`close`
    on exit (whatever the block raised)."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
