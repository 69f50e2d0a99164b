"""Throwaway databases on the test session's PostgreSQL (the ``postgres_admin_url`` fixture).

A test module takes the fixtures by importing them (and naming them in ``__all__``):
``postgres_url``, a database of the test's own, and ``store_url``, the fleet store's URL on
SQLite and then on PostgreSQL (the test runs once on each).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from cloud_trainer.fleet.store import sqlite_url


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database's URL (``postgresql+psycopg://``), dropped afterwards."""
    admin = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    name = f"fleet_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {admin_url} refused a test database: {e.orig}")
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A database of the test's own on the session's PostgreSQL, dropped afterwards."""
    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fleet store URL: a SQLite file of the test's own, then a ``postgres_url``."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "fleet.db")
    return str(request.getfixturevalue("postgres_url"))
