"""Writing uploaded samples to disk: checked type, capped size, content-addressed, atomic."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi import UploadFile

from cloud_trainer.fleet.settings import FleetSettings

log = logging.getLogger(__name__)

CHUNK = 256 * 1024

# Accepted types, their file extension, and the bytes such a file starts with (if fixed).
SAMPLE_TYPES: dict[str, tuple[str, bytes | None]] = {
    "image/jpeg": (".jpg", b"\xff\xd8\xff"),
    "image/png": (".png", b"\x89PNG\r\n\x1a\n"),
    "text/csv": (".csv", None),
    "application/json": (".json", None),
    "application/octet-stream": (".bin", None),
}


class SampleRejected(ValueError):
    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def store_sample(
    settings: FleetSettings, upload: UploadFile, provenance: dict[str, Any]
) -> dict[str, Any]:
    """Copy the upload to ``samples_dir/{device}/{sha256}{ext}``; returns the store row.

    The device id was validated against the identifier pattern, so it is safe as a folder
    name; the file name is the content hash, never the client's name. A partial file
    (full disk, dropped connection) is removed, not left half-written under its final name.
    """
    content_type = (upload.content_type or "application/octet-stream").split(";")[0].strip()
    if content_type not in SAMPLE_TYPES:
        known = ", ".join(sorted(SAMPLE_TYPES))
        raise SampleRejected(f"unsupported sample type {content_type!r} (accepted: {known})", 415)
    extension, magic = SAMPLE_TYPES[content_type]
    folder = Path(settings.samples_dir) / str(provenance["device_id"])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SampleRejected(f"cannot create the samples folder: {e.strerror}", 507) from e
    digest = hashlib.sha256()
    size = 0
    partial = folder / f".upload-{os.getpid()}-{time.monotonic_ns()}.part"
    try:
        with partial.open("wb") as out:
            while chunk := upload.file.read(CHUNK):
                if size == 0 and magic is not None and not chunk.startswith(magic):
                    raise SampleRejected(
                        f"file does not look like {content_type} (wrong leading bytes)", 422
                    )
                size += len(chunk)
                if size > settings.max_sample_bytes:
                    raise SampleRejected(
                        f"sample over the limit of {settings.max_sample_bytes} bytes", 413
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise SampleRejected("empty sample file", 422)
        final = folder / f"{digest.hexdigest()}{extension}"
        os.replace(partial, final)
    except OSError as e:
        partial.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("samples folder %s is full", folder)
            raise SampleRejected("no space left for samples on the fleet service", 507) from e
        raise SampleRejected(f"sample could not be stored: {e.strerror}", 500) from e
    except SampleRejected:
        partial.unlink(missing_ok=True)
        raise
    return {
        **provenance,
        "sha256": digest.hexdigest(),
        "path": str(final),
        "size": size,
        "content_type": content_type,
        "original_name": (upload.filename or "")[:256] or None,
        "received_at": time.time(),
    }
