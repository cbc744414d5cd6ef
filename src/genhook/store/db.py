"""Database engines: SQLite tuned for a durable embedded queue, or PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from genhook.paths import private_dir


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=FULL`` and explicit write locks.

    SQLite: every connection runs in WAL mode with ``synchronous=FULL`` (an accepted job survives
    a power cut), foreign keys on, and a 30 s busy timeout. Transactions opened with the
    execution option ``immediate=True`` start with ``BEGIN IMMEDIATE``, taking the write lock up
    front, so concurrent writers queue instead of failing on a lock upgrade.

    The database holds every service's webhook signing secret: the SQLite file (and so its
    ``-wal`` and ``-shm``, which SQLite creates with the database's mode) is ``0600`` in a
    folder created ``0700``, and no engine puts SQL parameters (trigger bodies, secrets) into
    its error messages.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return sa.create_engine(
            url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True
        )
    path = sa.make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        private_file(Path(path))
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by its owner only, or tighten it and
    any ``-wal`` / ``-shm`` beside it to ``0600``."""
    private_dir(path.parent, tighten=False)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):  # a read-only file system: the store says so later
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
