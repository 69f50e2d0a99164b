"""The few reads the release tooling makes from the fleet service's HTTP API."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT_S = 5.0
TOKEN_ENV = "EDGE_MLOPS_FLEET_TOKEN"  # noqa: S105 - a variable name, not a secret


class FleetUnavailable(Exception):
    """The fleet service could not be asked, or answered something unexpected."""


class FleetClient:
    """``GET`` on ``{url}/api/...``: devices of a model, releases with outcomes and history.

    Reads need a token of the fleet service (a viewer token is enough): ``token``, else
    ``$EDGE_MLOPS_FLEET_TOKEN``.
    """

    def __init__(self, url: str, timeout: float = TIMEOUT_S, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise FleetUnavailable(f"--fleet-url must be http(s)://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None

    def _get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            f"{self.url}{path}{query}", headers=headers
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - http(s) only, checked above
                request, timeout=self.timeout
            ) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                hint = "no token given" if not self.token else "the token was refused"
                raise FleetUnavailable(
                    f"the fleet at {self.url} refused {path} ({e.code}: {hint}; set "
                    f"${TOKEN_ENV} to a viewer or operator token)"
                ) from e
            raise FleetUnavailable(f"the fleet at {self.url} did not answer {path}: {e}") from e
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise FleetUnavailable(f"the fleet at {self.url} did not answer {path}: {e}") from e

    def devices(self, model: str) -> list[dict[str, Any]]:
        """Devices known to run ``model``, and registered ones that have not said yet."""
        listed = self._list(self._get("/api/devices"), "devices")
        return [d for d in listed if d.get("model_name") in (model, None)]

    def releases(self, model: str) -> list[dict[str, Any]]:
        """Releases of ``model``, newest first, with device outcomes and rollout history."""
        return self._list(self._get("/api/releases", model=model), "releases")

    def release(self, release_id: str) -> dict[str, Any]:
        """One release with its stored manifest."""
        found = self._get(f"/api/releases/{urllib.parse.quote(release_id, safe='')}")
        if not isinstance(found, dict):
            raise FleetUnavailable(f"the fleet at {self.url} sent an unexpected release")
        return found

    def _list(self, body: Any, key: str) -> list[dict[str, Any]]:
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise FleetUnavailable(f"the fleet at {self.url} sent an unexpected {key} list")
        return items
