"""Resumable, size-capped HTTP download into staging (Range + If-Range/ETag, stdlib only)."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from edge_agent.protocol.manifest import ReleaseManifest
from edge_agent.updater.config import DownloadConfig
from edge_agent.updater.errors import DiskBudgetExceeded, DownloadCancelled, DownloadError

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
MAX_BACKOFF_S = 30.0


def _sleep_backoff(config: DownloadConfig, retry: int, cancelled: Callable[[], bool]) -> None:
    delay = min(MAX_BACKOFF_S, config.backoff_s * 2**retry) * random.uniform(0.5, 1.0)  # noqa: S311
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if cancelled():
            raise DownloadCancelled("download cancelled while waiting to retry")
        time.sleep(min(0.05, delay))


class StagedDownload:
    """One release's partial file in staging and its sidecar (URL, ETag, expected hash)."""

    def __init__(self, staging_dir: Path, manifest: ReleaseManifest) -> None:
        self.manifest = manifest
        self.part = staging_dir / f"{manifest.release_id}.part"
        self.meta = staging_dir / f"{manifest.release_id}.part.json"

    def resume_state(self) -> tuple[int, str | None]:
        """Bytes already held and the ETag they came with; 0 when the part is unusable."""
        try:
            meta = json.loads(self.meta.read_text())
            size = self.part.stat().st_size
        except (OSError, ValueError):
            self.reset()
            return 0, None
        if not isinstance(meta, dict) or meta.get("sha256") != self.manifest.sha256:
            self.reset()
            return 0, None
        if size > self.manifest.size:
            self.reset()
            return 0, None
        etag = meta.get("etag")
        return size, etag if isinstance(etag, str) else None

    def save_meta(self, url: str, etag: str | None) -> None:
        data = {"url": url, "etag": etag, "sha256": self.manifest.sha256}
        self.meta.write_text(json.dumps(data))

    def reset(self) -> None:
        for path in (self.part, self.meta):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def discard(self) -> None:
        self.reset()


class HttpDownloader:
    """Fetches a release's file, resuming after drops, never past the announced size.

    ``room`` is asked before each chunk how many more bytes staging may take; it lets the
    updater hold the disk budget while the file grows.
    """

    def __init__(self, config: DownloadConfig, user_agent: str = "edge-agent-updater") -> None:
        self.config = config
        self.user_agent = user_agent

    def fetch(
        self,
        staged: StagedDownload,
        room: Callable[[], int],
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Path:
        """Return the complete staged file (hash not yet checked), or raise DownloadError."""
        manifest = staged.manifest
        last: DownloadError | None = None
        for retry in range(self.config.attempts):
            if retry:
                _sleep_backoff(self.config, retry - 1, cancelled)
            for url in manifest.urls:
                try:
                    self._attempt(staged, url, room, cancelled)
                    return staged.part
                except DownloadError as e:
                    last = e
                    log.warning("download of %s from %s: %s", manifest.release_id, url, e)
                    if not e.retryable:
                        raise
        assert last is not None
        raise DownloadError(
            f"gave up after {self.config.attempts} attempt(s): {last}", retryable=False
        ) from last

    def _attempt(
        self,
        staged: StagedDownload,
        url: str,
        room: Callable[[], int],
        cancelled: Callable[[], bool],
    ) -> None:
        total = staged.manifest.size
        offset, etag = staged.resume_state()
        if offset == total:
            return
        headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if etag:
                headers["If-Range"] = etag
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only
        try:
            response = urllib.request.urlopen(request, timeout=self.config.timeout_s)  # noqa: S310
        except urllib.error.HTTPError as e:
            if e.code == 416:
                staged.reset()
                raise DownloadError("server refused the resume range; starting over") from e
            retryable = e.code >= 500 or e.code in (408, 429)
            raise DownloadError(f"HTTP {e.code} {e.reason}", retryable=retryable) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise DownloadError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from e
        with response:
            offset = self._start_offset(staged, response, offset)
            staged.save_meta(url, response.headers.get("ETag"))
            self._copy(staged, response, offset, total, room, cancelled)

    @staticmethod
    def _start_offset(
        staged: StagedDownload, response: http.client.HTTPResponse, offset: int
    ) -> int:
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                staged.reset()
                raise DownloadError("server answered a different range than asked")
            return offset
        if response.status != 200:
            raise DownloadError(f"unexpected HTTP status {response.status}")
        if offset:
            # The file changed (ETag mismatch) or the server ignores ranges: start over.
            log.info("server sent the whole file; restarting %s", staged.manifest.release_id)
            staged.reset()
        return 0

    def _copy(
        self,
        staged: StagedDownload,
        response: http.client.HTTPResponse,
        offset: int,
        total: int,
        room: Callable[[], int],
        cancelled: Callable[[], bool],
    ) -> None:
        mode = "ab" if offset else "wb"
        try:
            with staged.part.open(mode) as out:
                while offset < total:
                    if cancelled():
                        raise DownloadCancelled("download cancelled")
                    chunk = response.read(min(self.config.chunk_bytes, total - offset + 1))
                    if not chunk:
                        break
                    if offset + len(chunk) > total:
                        staged.reset()
                        raise DownloadError(
                            f"server sent more than the announced {total} bytes", retryable=False
                        )
                    if len(chunk) > room():
                        raise DiskBudgetExceeded(
                            f"download stopped at {offset} bytes: the disk budget has no room "
                            f"for the remaining {total - offset} bytes"
                        )
                    out.write(chunk)
                    offset += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (http.client.HTTPException, TimeoutError, ConnectionError) as e:
            raise DownloadError(f"connection dropped at {offset} of {total} bytes: {e}") from e
        except OSError as e:
            if e.errno == errno.ENOSPC:
                staged.reset()
                raise DownloadError("disk full while downloading", retryable=False) from e
            raise DownloadError(f"cannot write {staged.part}: {e.strerror or e}") from e
        if offset < total:
            raise DownloadError(f"connection closed at {offset} of {total} bytes")
