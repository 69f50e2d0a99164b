"""Telemetry partitioned by day on PostgreSQL.

A new PostgreSQL store creates ``telemetry`` as a range-partitioned table on ``ts`` (float
seconds since the epoch, UTC) with one partition per UTC day, named ``telemetry_dYYYYMMDD``.
The writer makes sure today's and tomorrow's partitions exist, and those of the days its
batch carries (a replayed backlog, a device clock off by a day): partitions are created on
demand, there is no default partition. Retention drops whole day partitions past the
cut-off and deletes only what is older in the one partition that straddles it.

A store an earlier release created with a plain ``telemetry`` table keeps working
unpartitioned (retention deletes rows there), with a warning at start; docs/scaling.md says
how to move it to the partitioned layout. SQLite has no partitions: the plain table and
DELETE as before.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    text,
)

from cloud_trainer.fleet.store import schema as t

log = logging.getLogger(__name__)

DAY_S = 86400
# Serialises partition DDL between service instances sharing one database.
_LOCK_KEY = 0x7E1E_0D47
_NAME = re.compile(r"^telemetry_d(\d{8})$")


def _partitioned_table() -> Table:
    """The telemetry table as PostgreSQL holds it: a key that includes the partition key."""
    columns: list[Column[object]] = [Column("id", BigInteger, autoincrement=True, nullable=False)]
    for column in t.telemetry.columns:
        if column.name != "id":
            copy = column._copy()
            copy.primary_key = False
            columns.append(copy)
    indexes = [Index(index.name, *(c.name for c in index.columns)) for index in t.telemetry.indexes]
    return Table(
        "telemetry",
        MetaData(),
        *columns,
        PrimaryKeyConstraint("id", "ts", name="pk_telemetry"),
        *indexes,
        postgresql_partition_by="RANGE (ts)",
    )


def day_of(ts: float) -> int:
    """Days since the epoch (UTC) of a timestamp."""
    return int(ts // DAY_S)


def partition_name(day: int) -> str:
    return "telemetry_d" + datetime.fromtimestamp(day * DAY_S, UTC).strftime("%Y%m%d")


def is_partitioned(conn: Connection) -> bool:
    found = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
            "WHERE partrelid = to_regclass('telemetry'))"
        )
    ).scalar_one()
    return bool(found)


def prepare(conn: Connection) -> bool:
    """Create the partitioned telemetry table on a new store; True when it is partitioned."""
    exists = conn.execute(text("SELECT to_regclass('telemetry') IS NOT NULL")).scalar_one()
    if not exists:
        _partitioned_table().create(conn)
        log.info("fleet store: telemetry partitioned by day")
        return True
    if is_partitioned(conn):
        return True
    log.warning(
        "fleet store: the telemetry table is not partitioned (made by an earlier release); "
        "it keeps working and retention deletes rows. To partition it by day, see "
        "docs/scaling.md, 'Fleet store: PostgreSQL'."
    )
    return False


def ensure_days(conn: Connection, days: Iterable[int]) -> list[str]:
    """Create the day partitions missing among ``days``; returns the names created."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    present = set(partition_names(conn))
    created: list[str] = []
    for day in wanted:
        name = partition_name(day)
        if name in present:
            continue
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF telemetry "
            f"FOR VALUES FROM ({day * DAY_S}) TO ({(day + 1) * DAY_S})"
        )
        created.append(name)
    if created:
        log.info("fleet store: created telemetry partitions %s", ", ".join(created))
    return created


def partition_names(conn: Connection) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('telemetry') ORDER BY c.relname"
        )
    )
    return [str(name) for (name,) in rows]


def _day_of_name(name: str) -> int | None:
    match = _NAME.match(name)
    if match is None:
        return None
    moment = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return day_of(moment.timestamp())


def drop_before(conn: Connection, cutoff: float) -> tuple[list[str], int]:
    """Drop the day partitions wholly older than ``cutoff``; returns their names and rows."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    dropped: list[str] = []
    rows = 0
    for name in partition_names(conn):
        day = _day_of_name(name)
        if day is None or (day + 1) * DAY_S > cutoff:
            continue
        # name matched _NAME (telemetry_d + 8 digits): safe to splice.
        rows += int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())  # noqa: S608
        conn.exec_driver_sql(f"DROP TABLE {name}")
        dropped.append(name)
    return dropped, rows


def days_for(timestamps: Iterable[float], now: float | None = None) -> set[int]:
    """Today's and tomorrow's days, and each of ``timestamps``'s."""
    today = day_of(time.time() if now is None else now)
    return {today, today + 1, *(day_of(ts) for ts in timestamps)}
