"""Uploading captured samples to the cloud over HTTP (multipart POST, bearer token).

Samples go over HTTP, not MQTT: frames are large and the broker carries small messages.
A sample leaves the device's disk only after the server answered 2xx for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from edge_agent.drift.capture import CapturedSample, CaptureStore
from edge_agent.drift.config import CaptureConfig

log = logging.getLogger(__name__)


class UploadError(Exception):
    """An upload round stopped; the samples not yet accepted stay on disk."""


class UploadAuthError(UploadError):
    """The server refused the token (401/403): retrying will not help until it is fixed."""


def read_token(config: CaptureConfig) -> str:
    """The bearer token from the configured file or environment variable (never YAML)."""
    if config.token_file is not None:
        try:
            token = Path(config.token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UploadAuthError(f"cannot read capture token file {config.token_file}: {e}") from e
        if token:
            return token
        raise UploadAuthError(f"capture token file {config.token_file} is empty")
    if config.token_env:
        token = os.environ.get(config.token_env, "").strip()
        if token:
            return token
        raise UploadAuthError(f"environment variable {config.token_env} holds no capture token")
    raise UploadAuthError("capture upload needs token_file or token_env")


def encode_multipart(
    fields: dict[str, str], file_field: str, filename: str, content_type: str, data: bytes
) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type header value."""
    boundary = f"edge-mlops-{secrets.token_hex(12)}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class SampleUploader:
    """Sends captured samples, oldest first, one POST each; the runtime calls
    ``upload_pending`` from a background thread now and then."""

    def __init__(self, store: CaptureStore, device_id: str, token: str | None = None) -> None:
        config = store.config
        if config.upload_url is None:
            raise UploadError("capture.upload_url is not set")
        self.store = store
        self.url = str(config.upload_url)
        self.device_id = device_id
        self.timeout = config.upload_timeout_s
        self.batch = config.upload_batch
        self._token = token
        self.counters: Counter[str] = Counter()

    def upload_pending(self) -> int:
        """Upload up to one batch; how many the server accepted.

        Stops at the first failure (raising UploadError) so a down server costs one
        timeout per round, not one per sample.
        """
        token = self._token or read_token(self.store.config)
        sent = 0
        for item in self.store.pending(self.batch):
            self.upload_one(item, token)
            self.store.remove(item)
            sent += 1
        return sent

    def upload_one(self, item: CapturedSample, token: str) -> None:
        try:
            meta_bytes = item.meta_path.read_bytes()
            data = item.data_path.read_bytes() if item.data_path else meta_bytes
        except OSError as e:
            raise UploadError(f"captured sample {item.stem} unreadable: {e}") from e
        try:
            meta = json.loads(meta_bytes)
        except json.JSONDecodeError as e:
            # A corrupt sample would block the queue forever: drop it, say so.
            self.store.remove(item)
            self.counters["corrupt"] += 1
            raise UploadError(f"captured sample {item.stem} has corrupt metadata") from e
        fields = {
            "device_id": self.device_id,
            "captured_at": str(meta.get("captured_at", "")),
            "model_name": str(meta.get("model_name", "")),
            "model_version": str(meta.get("model_version", "")),
            "label": str(meta.get("label", "")),
            "reason": str(meta.get("reason", "")),
            "sha256": hashlib.sha256(data).hexdigest(),
            "metadata": meta_bytes.decode(),
        }
        if item.data_path is not None:
            filename, content_type = item.data_path.name, "image/jpeg"
        else:
            filename, content_type = item.meta_path.name, "application/json"
        body, header = encode_multipart(fields, "file", filename, content_type, data)
        request = urllib.request.Request(  # noqa: S310 - URL is validated http(s) config
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": header, "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as e:
            self.counters[f"http_{e.code}"] += 1
            if e.code in (401, 403):
                raise UploadAuthError(f"upload refused by {self.url}: HTTP {e.code}") from e
            raise UploadError(f"upload of {item.stem} failed: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            self.counters["network"] += 1
            raise UploadError(f"upload to {self.url} failed: {e}") from e
        if not 200 <= status < 300:
            raise UploadError(f"upload of {item.stem} answered HTTP {status}")
        self.counters["uploaded"] += 1
        log.debug("uploaded captured sample %s", item.stem)
