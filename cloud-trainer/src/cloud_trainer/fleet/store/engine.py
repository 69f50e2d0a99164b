"""Opening the fleet database: SQLite by default, PostgreSQL by URL, with portable upserts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from cloud_trainer.fleet.store import partitions
from cloud_trainer.fleet.store.schema import metadata

log = logging.getLogger(__name__)

_WRITE = "fleet_write"
# Two service instances starting on one new PostgreSQL database create its tables in turn.
_SCHEMA_LOCK = 0x7E1E_5C4E


class StoreError(RuntimeError):
    """The fleet database URL is invalid, or the database cannot be reached or prepared."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _prepare_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling would start writes with a plain BEGIN, so two
    # writers (two service instances on one file) could deadlock instead of waiting.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def open_engine(url: str) -> Engine:
    """Create the engine for ``url`` and the tables if missing, or raise StoreError."""
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise StoreError(f"invalid database URL {url!r}: {e}") from e
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"future": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        elif parsed.database is not None:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=5)
    else:
        raise StoreError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise StoreError(f"cannot open {parsed.render_as_string(hide_password=True)}: {e}") from e
    if backend == "sqlite":
        _prepare_sqlite(engine)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if backend == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
                    partitions.prepare(conn)
                metadata.create_all(conn)
                add_missing_columns(conn)
                add_missing_indexes(conn)
    except OperationalError as e:
        engine.dispose()
        where = parsed.render_as_string(hide_password=True)
        raise StoreError(f"cannot reach the fleet database {where}: {e.orig}") from e
    except StoreError:
        engine.dispose()
        raise
    log.info("fleet store ready: %s", parsed.render_as_string(hide_password=True))
    return engine


def add_missing_columns(conn: Connection) -> None:
    """Bring a database an older release made up to this schema.

    ``create_all`` adds missing tables but never alters one that exists, so columns added to
    a table since (always nullable, e.g. the telemetry's ``accuracy``) are added here, with
    NULL in the rows already there. Anything else missing is refused, not guessed at.
    """
    inspector = inspect(conn)
    preparer = conn.dialect.identifier_preparer
    if_not_exists = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key or column.server_default is not None:
                raise StoreError(
                    f"the fleet database's {table.name} table lacks column {column.name}, "
                    "which cannot be added to the rows already there"
                )
            conn.exec_driver_sql(
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {if_not_exists}"
                f"{preparer.format_column(column)} {column.type.compile(dialect=conn.dialect)}"
            )
            log.warning("fleet store: added column %s.%s", table.name, column.name)


def add_missing_indexes(conn: Connection) -> None:
    """Create the indexes added to a table since an older release made it (``create_all``
    creates a table's indexes only with the table)."""
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing/update`` on the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
