"""A small HTTP artefact server with Range and ETag: devices fetch models with no MLflow client."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
CHUNK = 64 * 1024


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ArtefactStore:
    """Content-addressed files: ``{root}/{sha256}/{name}``; the hash is the strong ETag."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, source: Path, name: str | None = None) -> tuple[str, int, str]:
        """Copy ``source`` in; returns (sha256, size, URL path)."""
        sha, size = file_digest(source)
        name = name or source.name
        if not _FILE.match(name):
            raise ValueError(f"artefact name {name!r} must be a plain file name")
        target = self.root / sha / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{name}.tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        return sha, size, f"/artifacts/{sha}/{name}"

    def locate(self, url_path: str) -> tuple[Path, str] | None:
        """(file, etag) for ``/artifacts/{sha}/{name}``; None for anything else."""
        parts = url_path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[1] != "artifacts":
            return None
        sha, name = parts[2], parts[3]
        if not _SHA.match(sha) or not _FILE.match(name):
            return None
        path = self.root / sha / name
        return (path, f'"{sha}"') if path.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("artefacts %s: %s", self.client_address[0], format % args)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        found = self.server.store.locate(self.path)
        if found is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        path, etag = found
        size = path.stat().st_size
        start, end = 0, size - 1
        partial = False
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (if_range is None or if_range == etag):
            match = _RANGE.match(wanted.strip())
            if match is None or (not match.group(1) and not match.group(2)):
                self._unsatisfiable(size)
                return
            if match.group(1):
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else size - 1
            else:
                start = max(0, size - int(match.group(2)))
            end = min(end, size - 1)
            if start > end or start >= size:
                self._unsatisfiable(size)
                return
            partial = True
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(end - start + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if body:
            self._send_body(path, start, end - start + 1)

    def _unsatisfiable(self, size: int) -> None:
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_body(self, path: Path, offset: int, length: int) -> None:
        rate = self.server.rate_bytes_per_s
        started = time.monotonic()
        sent = 0
        with path.open("rb") as f:
            f.seek(offset)
            while sent < length:
                chunk = f.read(min(CHUNK, length - sent))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: ArtefactStore
    rate_bytes_per_s: float | None


class ArtefactServer:
    """Serves an ArtefactStore over HTTP in a background thread (``with`` or start/stop).

    ``rate_bytes_per_s`` caps each download, to spare a thin uplink shared with video.
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_bytes_per_s: float | None = None,
    ) -> None:
        self.store = ArtefactStore(root)
        self._server = _Server((host, port), _Handler)
        self._server.store = self.store
        self._server.rate_bytes_per_s = rate_bytes_per_s
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url_for(self, url_path: str) -> str:
        return self.base_url + url_path

    def publish_file(self, source: Path, name: str | None = None) -> tuple[str, int, str]:
        """Add a file and return (sha256, size, full URL)."""
        sha, size, url_path = self.store.add(source, name)
        return sha, size, self.url_for(url_path)

    def start(self) -> ArtefactServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="artefact-server", daemon=True
        )
        self._thread.start()
        log.info("artefact server on %s serving %s", self.base_url, self.store.root)
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ArtefactServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
