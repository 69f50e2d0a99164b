"""Tells the fleet service about a provisioned or revoked device, over its HTTP API."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from cloud_trainer.provision.registry import IdentityRecord

log = logging.getLogger(__name__)

DEVICES_PATH = "/api/devices"


class FleetRegistrationError(RuntimeError):
    """The fleet service refused the device or could not be reached."""


@dataclass(frozen=True)
class FleetRegistrar:
    """POSTs device registrations; a device already known counts as success (idempotent)."""

    base_url: str
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise FleetRegistrationError(
                f"invalid fleet URL {self.base_url!r}: use http(s)://host[:port]"
            )

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> int:
        url = self.base_url.rstrip("/") + path
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - scheme checked in __post_init__
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode("utf-8", "replace").strip()
            if e.code == 409:
                return e.code
            raise FleetRegistrationError(
                f"fleet service {method} {url} answered {e.code}: {detail or e.reason}"
            ) from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise FleetRegistrationError(f"fleet service {url} not reachable: {reason}") from e

    def register(self, record: IdentityRecord) -> None:
        # The fleet service's DeviceRegistration model (extra fields are refused there).
        body = {
            "device_id": record.device,
            "site": record.site,
            "kind": record.kind.value if record.kind else None,
            "groups": list(record.groups),
        }
        status = self._request("POST", DEVICES_PATH, body)
        log.info("fleet service registration of %s: HTTP %s", record.username, status)

    def deregister(self, record: IdentityRecord) -> None:
        """Best effort: a fleet service without a DELETE route (404/405) keeps its history."""
        path = f"{DEVICES_PATH}/{record.device}"
        try:
            status = self._request("DELETE", path, None)
        except FleetRegistrationError as e:
            if "answered 404" in str(e) or "answered 405" in str(e):
                log.info("fleet service keeps %s (no device removal route)", record.username)
                return
            raise
        log.info("fleet service deregistration of %s: HTTP %s", record.username, status)
