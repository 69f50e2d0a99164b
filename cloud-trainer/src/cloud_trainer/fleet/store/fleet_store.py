"""The fleet store: one object the consumer, the API and the policy engine share."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.exc import IntegrityError

from cloud_trainer.fleet.store import partitions, queries
from cloud_trainer.fleet.store import schema as t
from cloud_trainer.fleet.store.engine import open_engine, upsert, write_transaction
from cloud_trainer.fleet.store.ingest import Envelope, IngestResult, ingest_batch
from edge_agent.protocol import Command, ReleaseManifest, RolloutRecord, TelemetryMessage

log = logging.getLogger(__name__)

T = TypeVar("T")


class FleetStore:
    """SQLite by default, PostgreSQL by URL; safe to share between threads and processes."""

    def __init__(self, url: str, *, bucket_s: float = 60.0, offline_after_s: float = 120.0):
        self.url = url
        self.bucket_s = bucket_s
        self.offline_after_s = offline_after_s
        self.engine: Engine = open_engine(url)
        # PostgreSQL: telemetry partitioned by day (partitions.py); the days known to exist.
        self.partitioned = self.backend == "postgresql" and self.read(partitions.is_partitioned)
        self._days: set[int] = set()
        # Moves on after every commit made through this store: a read cached at one
        # generation is stale at the next (see the device listing's cache).
        self.generation = 0

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with write_transaction(self.engine) as conn:
            yield conn
        self.generation += 1

    def close(self) -> None:
        self.engine.dispose()

    @property
    def backend(self) -> str:
        return str(self.engine.dialect.name)

    def read(self, query: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return query(conn)

    def ping(self) -> None:
        """Raise if the database cannot answer (readiness probe)."""
        with self.engine.connect() as conn:
            conn.execute(select(1)).scalar_one()

    # -- ingestion ----------------------------------------------------------------------

    def ingest(self, batch: list[Envelope]) -> IngestResult:
        if not self.partitioned:
            with self._write() as conn:
                return ingest_batch(conn, batch, self.bucket_s)
        self._ensure_partitions(batch)
        try:
            with self._write() as conn:
                return ingest_batch(conn, batch, self.bucket_s)
        except IntegrityError as e:
            # Another instance's retention dropped a day this one still counted on (a
            # replayed backlog): recreate it and write the batch again, whole.
            if "no partition" not in str(e.orig):
                raise
            self._days.clear()
            self._ensure_partitions(batch)
            with self._write() as conn:
                return ingest_batch(conn, batch, self.bucket_s)

    def _ensure_partitions(self, batch: list[Envelope]) -> None:
        """Today's, tomorrow's and the batch's telemetry days exist, made in a transaction of
        their own (partition DDL locks the table, briefly)."""
        days = partitions.days_for(
            env.message.ts.timestamp() for env in batch if isinstance(env.message, TelemetryMessage)
        )
        missing = days - self._days
        if missing:
            with self._write() as conn:
                partitions.ensure_days(conn, missing)
            self._days |= missing

    def record_release(self, manifest: ReleaseManifest, seen_at: float) -> None:
        """Remember a release manifest; a re-published one (next wave) updates its rollout."""
        values = {
            "release_id": manifest.release_id,
            "model_name": manifest.model,
            "version": manifest.version,
            "channel": manifest.channel,
            "created": manifest.created.timestamp(),
            "wave": manifest.rollout.wave,
            "rollout": manifest.rollout.model_dump(mode="json"),
            "manifest": manifest.model_dump(mode="json", exclude={"signature"}),
            "seen_at": seen_at,
        }
        with self._write() as conn:
            ins = upsert(conn, t.releases).values(values)
            ex = ins.excluded
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[t.releases.c.release_id],
                    set_={"wave": ex.wave, "rollout": ex.rollout, "manifest": ex.manifest},
                )
            )

    def record_rollout(self, record: RolloutRecord, received_at: float) -> None:
        """Keep one rollout step; the same step delivered twice is stored once."""
        values = {
            "release_id": record.release_id,
            "seq": record.seq,
            "model_name": record.model,
            "version": record.version,
            "ts": record.ts.timestamp(),
            "action": record.action,
            "wave": record.wave,
            "audience": record.audience,
            "reason": record.reason,
            "restored_release_id": record.restored_release_id,
            "restored_version": record.restored_version,
            "publisher": record.publisher,
            "received_at": received_at,
        }
        with self._write() as conn:
            ins = upsert(conn, t.rollout_log).values(values)
            conn.execute(
                ins.on_conflict_do_nothing(
                    index_elements=[t.rollout_log.c.release_id, t.rollout_log.c.seq]
                )
            )

    # -- operator actions ---------------------------------------------------------------

    def register_device(
        self,
        device_id: str,
        site: str,
        kind: str | None,
        groups: list[str],
        model_name: str | None,
        now: float | None = None,
    ) -> bool:
        """Create or update a device's registration; True when it was not known before."""
        now = time.time() if now is None else now
        d = t.devices.c
        with self._write() as conn:
            known = conn.execute(select(d.device_id).where(d.device_id == device_id)).first()
            values: dict[str, Any] = {"site": site, "groups": sorted(set(groups))}
            if kind is not None:
                values["kind"] = kind
            if model_name is not None:
                values["model_name"] = model_name
            if known is None:
                conn.execute(
                    t.devices.insert().values(device_id=device_id, registered_at=now, **values)
                )
                return True
            conn.execute(update(t.devices).where(d.device_id == device_id).values(values))
            return False

    def acknowledge_alert(self, alert_id: int, who: str, now: float | None = None) -> bool:
        """Acknowledge once; False if there is no such alert or it was acknowledged already."""
        a = t.drift_alerts.c
        with self._write() as conn:
            result = conn.execute(
                update(t.drift_alerts)
                .where(a.id == alert_id, a.acknowledged_at.is_(None))
                .values(acknowledged_at=time.time() if now is None else now, acknowledged_by=who)
            )
            return bool(result.rowcount)

    def record_command(self, command: Command) -> None:
        self.record_commands([command])

    def record_commands(self, commands: list[Command]) -> None:
        """Several commands in one transaction (one multi-row insert)."""
        if not commands:
            return
        with self._write() as conn:
            conn.execute(t.commands.insert(), [_command_row(c) for c in commands])

    def record_sample(self, row: dict[str, Any]) -> tuple[int, bool]:
        """Store a sample's provenance; returns (id, created) — the same bytes twice is one row."""
        s = t.samples.c
        with self._write() as conn:
            try:
                with conn.begin_nested():
                    new_id = conn.execute(
                        t.samples.insert().values(row).returning(s.id)
                    ).scalar_one()
                return int(new_id), True
            except IntegrityError:
                existing = conn.execute(
                    select(s.id).where(s.device_id == row["device_id"], s.sha256 == row["sha256"])
                ).scalar_one()
                return int(existing), False

    # -- policy bookkeeping -------------------------------------------------------------

    def open_episodes(self, model_name: str) -> list[dict[str, Any]]:
        e = t.drift_episodes.c
        query = select(t.drift_episodes).where(e.model_name == model_name)
        return self.read(lambda c: [dict(r._mapping) for r in c.execute(query)])

    def claim_policy_action(self, row: dict[str, Any], cooldown_s: float) -> int | None:
        """Record a planned action unless its episode already had one (within the cooldown).

        Done in one write transaction so two service instances never both act on the same
        episode. Returns the action id, or None when the action was already taken.
        """
        p = t.policy_actions.c
        with self._write() as conn:
            previous = conn.execute(
                select(p.decided_at)
                .where(p.episode_key == row["episode_key"], p.action == row["action"])
                .order_by(p.decided_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            if previous is not None and row["decided_at"] - previous < cooldown_s:
                return None
            insert = t.policy_actions.insert().values(row).returning(p.id)
            return int(conn.execute(insert).scalar_one())

    def finish_policy_action(self, action_id: int, status: str, detail: str | None) -> None:
        with self._write() as conn:
            conn.execute(
                update(t.policy_actions)
                .where(t.policy_actions.c.id == action_id)
                .values(status=status, detail=detail, finished_at=time.time())
            )

    # -- retention ----------------------------------------------------------------------

    def prune(
        self,
        now: float,
        telemetry_s: float,
        predictions_s: float,
        dedupe_s: float,
    ) -> dict[str, int]:
        """Drop time series older than their retention; returns rows deleted per table."""
        removed: dict[str, int] = {}
        dropped_rows = 0
        if self.partitioned:
            # Whole days go by DROP, in a transaction of its own (it locks the table, so
            # briefly); the DELETE below then touches only the day that straddles the cut-off.
            with self._write() as conn:
                dropped, dropped_rows = partitions.drop_before(conn, now - telemetry_s)
            self._days = {d for d in self._days if partitions.partition_name(d) not in dropped}
            if dropped:
                log.info("retention dropped telemetry partitions %s", ", ".join(dropped))
        with self._write() as conn:
            for table, column, keep in (
                (t.telemetry, t.telemetry.c.ts, telemetry_s),
                (t.prediction_buckets, t.prediction_buckets.c.bucket_start, predictions_s),
                # Visits stand in for a camera's per-frame predictions: kept as long, counted
                # from their arrival (a replayed recording may be older than the retention).
                (t.visits, t.visits.c.received_at, predictions_s),
                (t.stream_events, t.stream_events.c.received_at, predictions_s),
                (t.received, t.received.c.received_at, dedupe_s),
            ):
                result = conn.execute(delete(table).where(column < now - keep))
                removed[table.name] = int(result.rowcount)
            removed["telemetry"] += dropped_rows
        if any(removed.values()):
            log.info("retention pruned %s", removed)
        return removed

    # -- reads --------------------------------------------------------------------------

    def devices(self, now: float | None = None, **filters: Any) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        return self.read(
            lambda c: queries.list_devices(
                c, now=now, offline_after_s=self.offline_after_s, **filters
            )
        )

    def commands_in_state(self, cmd_ids: list[str], status: str) -> set[str]:
        """Those of ``cmd_ids`` whose status is ``status`` now."""
        c = t.commands.c

        def matching(conn: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(cmd_ids), 1000):
                chunk = cmd_ids[start : start + 1000]
                query = select(c.cmd_id).where(c.cmd_id.in_(chunk), c.status == status)
                found.update(str(i) for (i,) in conn.execute(query))
            return found

        return self.read(matching)

    def heard_from(self, since: float) -> list[tuple[str, str]]:
        """(site, device_id) of every device that sent anything since ``since`` (epoch s),
        whatever state it declared; by the ``(site, device_id)`` index."""
        d = t.devices.c
        query = (
            select(d.site, d.device_id).where(d.last_seen >= since).order_by(d.site, d.device_id)
        )
        return self.read(lambda c: [(str(s), str(i)) for s, i in c.execute(query)])

    def device_page(
        self, limit: int | None, offset: int, now: float | None = None, **filters: Any
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the device listing and how many devices match (one connection)."""
        now = time.time() if now is None else now
        kw = {"now": now, "offline_after_s": self.offline_after_s, **filters}

        def page(conn: Connection) -> tuple[list[dict[str, Any]], int]:
            rows = queries.list_devices(conn, limit=limit, offset=offset, **kw)
            if limit is None and offset == 0:
                return rows, len(rows)
            return rows, queries.count_devices(conn, **kw)

        return self.read(page)

    def device(self, device_id: str, now: float | None = None) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        found = self.read(lambda c: queries.get_device(c, device_id))
        return None if found is None else queries.with_presence(found, now, self.offline_after_s)

    def counts(self) -> dict[str, int]:
        return self.read(queries.table_counts)


def _command_row(command: Command) -> dict[str, Any]:
    return {
        "cmd_id": command.cmd_id,
        "device_id": command.device_id,
        "action": command.action,
        "args": dict(command.args),
        "issued_by": command.issued_by,
        "issued_at": command.ts.timestamp(),
        "expires_at": None if command.expires_at is None else command.expires_at.timestamp(),
        "status": "sent",
    }
