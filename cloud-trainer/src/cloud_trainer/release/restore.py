"""What an aborted rollout puts back: the release the fleet last committed, never a guess.

The retained message on the release topic before a rollout is not evidence of anything: it
may be a release that devices rejected. The release to restore is the newest one that
devices committed and that no rollout aborted (from the fleet's store), or else the
registry's ``champion`` version. With neither, nothing is restored and the decision says so:
devices whose probation failed already went back on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cloud_trainer.release.fleet_client import FleetClient, FleetUnavailable
from edge_agent.protocol import ReleaseManifest

GOOD = "committed"
BAD = frozenset({"rolled_back", "failed"})


@dataclass(frozen=True)
class Restore:
    """The release to put back (unsigned; it is re-signed with a new id), and why."""

    manifest: ReleaseManifest | None
    why: str


RestoreSource = Callable[[ReleaseManifest], Restore | None]


def committed_release(rows: Iterable[dict[str, Any]], failing: ReleaseManifest) -> Restore | None:
    """The newest stored release of another version that devices committed and kept.

    ``rows`` are the fleet's release records (newest first) with ``devices`` outcomes,
    ``history`` rollout steps and the stored ``manifest``.
    """
    for row in rows:
        if row["release_id"] == failing.release_id or row["version"] == failing.version:
            continue
        states = [d["state"] for d in row.get("devices", [])]
        committed = states.count(GOOD)
        bad = sum(state in BAD for state in states)
        aborted = any(step.get("action") == "aborted" for step in row.get("history", []))
        if committed == 0 or bad >= committed or aborted or not row.get("manifest"):
            continue
        unsigned = {**row["manifest"], "key_id": None, "signature": None}
        try:
            manifest = ReleaseManifest.model_validate(unsigned)
        except ValidationError:
            continue
        why = (
            f"{row['release_id']} (v{row['version']}) is the newest release the fleet "
            f"committed: {committed} device(s) committed, {bad} failed"
        )
        return Restore(manifest, why)
    return None


def from_fleet(fleet_url: str, token: str | None = None) -> RestoreSource:
    """Ask the fleet service which release of the model its devices last committed.

    ``token`` (a viewer token is enough) defaults to ``$EDGE_MLOPS_FLEET_TOKEN``.
    """

    def choose(failing: ReleaseManifest) -> Restore | None:
        try:
            client = FleetClient(fleet_url, token=token)
            # The list leaves manifests out; the detail of each release has it.
            rows = [client.release(str(r["release_id"])) for r in client.releases(failing.model)]
        except (FleetUnavailable, KeyError) as e:
            raise RestoreError(str(e)) from e
        rows.sort(key=lambda r: r.get("created", 0), reverse=True)
        return committed_release(rows, failing)

    return choose


class RestoreError(Exception):
    """A source of truth for the restore could not be asked."""


def choose_restore(failing: ReleaseManifest, sources: Sequence[RestoreSource]) -> Restore:
    """Ask each source in turn; the first committed release found is the one to restore."""
    problems: list[str] = []
    for source in sources:
        try:
            found = source(failing)
        except RestoreError as e:
            problems.append(str(e))
            continue
        if found is not None:
            return found
    detail = "; ".join(problems) or "no source knows a committed release"
    return Restore(
        None,
        f"no committed release of {failing.model} is known ({detail}); nothing re-released: "
        "devices whose probation failed already serve their previous model, devices that "
        f"committed v{failing.version} keep it until `release rollback`",
    )
