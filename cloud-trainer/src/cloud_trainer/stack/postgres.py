"""Runs a private PostgreSQL server on a free loopback port, for tests and benchmarks.

The cluster lives in a temporary directory that is removed on exit; it never touches the
machine's own PostgreSQL. Durability settings are PostgreSQL's defaults (``fsync`` and
``synchronous_commit`` on): figures measured against it are those of a durable store.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from cloud_trainer.stack import process
from cloud_trainer.stack.mosquitto import free_port

log = logging.getLogger(__name__)

_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_SERVICE_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, cannot run as this user, or did not start."""


def find_postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` holding initdb and postgres, or raise."""
    candidates = sorted(
        (Path(p) for p in glob.glob(_BIN_GLOB)),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return folder
    on_path = shutil.which("initdb"), shutil.which("postgres")
    if on_path[0] and on_path[1]:
        return Path(on_path[0]).parent
    raise PostgresUnavailable(
        f"PostgreSQL server binaries (initdb, postgres) not found under {_BIN_GLOB} or on "
        "PATH: install the Debian package 'postgresql'"
    )


class PostgresServer(process.Service):
    """A throwaway PostgreSQL cluster: ``with PostgresServer() as pg: FleetStore(pg.url)``.

    PostgreSQL refuses to run as root, so when started by root the cluster is owned by and
    run as the ``postgres`` system user (``setpriv``); without that user it is refused with
    PostgresUnavailable. Authentication is ``trust`` on loopback only.
    """

    def __init__(self, *, host: str = "127.0.0.1", settings: dict[str, str] | None = None):
        self.host = host
        self.port = 0
        # Extra server settings (``-c name=value``), e.g. a benchmark's non-durable run.
        self.settings = dict(settings or {})
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._as: list[str] = []

    @property
    def url(self) -> str:
        if self._proc is None:
            raise PostgresUnavailable("the PostgreSQL server is not running")
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(_SERVICE_USER)
        except KeyError as e:
            raise PostgresUnavailable(
                f"running as root, and there is no {_SERVICE_USER!r} system user to run "
                "PostgreSQL as (PostgreSQL refuses to run as root)"
            ) from e
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresUnavailable(
                "running as root, and setpriv (util-linux) is missing to run PostgreSQL as "
                f"the {_SERVICE_USER!r} user"
            )
        self._as = [
            setpriv,
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--init-groups",
            "--reset-env",
        ]
        return entry.pw_uid, entry.pw_gid

    def _chown_tree(self, owner: tuple[int, int]) -> None:
        assert self.root is not None
        for folder, dirs, files in os.walk(self.root):
            for name in (folder, *(os.path.join(folder, n) for n in dirs + files)):
                os.chown(name, *owner)

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        bin_dir = find_postgres_bin()
        owner = self._owner()
        self.root = Path(tempfile.mkdtemp(prefix="edge-mlops-pg-"))
        data, sockets = self.root / "data", self.root / "sock"
        sockets.mkdir()
        if owner is not None:
            self._chown_tree(owner)
        init = subprocess.run(
            [
                *self._as,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",  # only the throwaway cluster's creation skips fsync
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            detail = (init.stderr or init.stdout).decode(errors="replace").strip()
            self.close()
            raise PostgresUnavailable(f"initdb failed ({init.returncode}): {detail}")
        self.port = free_port(self.host)
        args = [
            *self._as,
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={sockets}",
        ]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        self._proc = process.spawn(args, self.log_path, new_session=False)
        try:
            self._wait_ready(timeout_s)
        except PostgresUnavailable:
            self.close()
            raise
        log.info("private PostgreSQL on %s:%d (%s)", self.host, self.port, self.root)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import psycopg

        proc = self._proc
        assert proc is not None
        last: Exception | None = None

        def exited() -> None:
            if proc.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {proc.returncode}: {self._log_tail()}"
                )

        def accepts() -> bool:
            nonlocal last
            try:
                conninfo = f"host={self.host} port={self.port} user=postgres dbname=postgres"
                with psycopg.connect(conninfo, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError as e:
                last = e
                return False

        if process.wait_until(accepts, timeout_s, check=exited):
            return
        raise PostgresUnavailable(
            f"postgres did not accept connections within {timeout_s:.0f} s ({last}): "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"

    def close(self) -> None:
        proc, self._proc = self._proc, None
        # SIGINT: a fast shutdown, clients are disconnected.
        process.stop_process(proc, 30, sig=signal.SIGINT, kill_wait=10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
