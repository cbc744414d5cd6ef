"""Database engines: SQLite tuned for a durable embedded queue, or PostgreSQL; and the one
mapping of their failures to genhook's error vocabulary."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from genhook.errors import ErrorCode, GenhookError
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


# PostgreSQL SQLSTATEs that say the server cannot do the work now, whatever the request:
# connection (08), read-only transaction (25006), resources such as a full disk (53), operator
# intervention such as a shutdown (57), system errors (58)
_UNAVAILABLE_STATES = ("08", "25006", "53", "57", "58")
# SQLite primary result codes of the same kind: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL,
# CANTOPEN, PROTOCOL (SQLite reports "no such table" and other bugs as OperationalError too)
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
STORE_RETRY_AFTER = 2.0


def unavailable(exc: BaseException) -> GenhookError | None:
    """The ``store_unavailable`` error for a database failure that is no fault of the request
    (down, unreachable, full, read-only, locked past the busy timeout); None for any other.

    The one mapping of database errors: the store's transactions raise what this returns, so
    the API answers 503 with ``Retry-After`` and the worker logs one line. Integrity and data
    errors (a raced unique key, a value the database refuses) and SQL that does not fit the
    schema are not mapped: they are the store's own business or a bug.
    """
    orig = getattr(exc, "orig", None)
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    state = str(getattr(orig, "sqlstate", None) or "")
    if isinstance(exc, sa.exc.TimeoutError):  # no pooled connection came free in time
        mapped = True
    elif not isinstance(exc, sa.exc.DBAPIError):
        mapped = False
    elif sqlite_code is not None:
        mapped = int(sqlite_code) & 0xFF in _SQLITE_UNAVAILABLE
    elif isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError | sa.exc.ProgrammingError):
        mapped = False
    else:
        mapped = (
            exc.connection_invalidated
            or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
            or state.startswith(_UNAVAILABLE_STATES)
        )
    if not mapped:
        return None
    return GenhookError(
        ErrorCode.STORE_UNAVAILABLE,
        "the database does not answer or cannot write now; nothing was changed, try again",
        retry_after=STORE_RETRY_AFTER,
    )


def describe(exc: BaseException) -> str:
    """One line saying what the database said (no SQL, no parameters): for the logs."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else 'no message'}"[:300]
