"""Database engines: SQLite tuned for a durable embedded queue, or PostgreSQL; and the one
mapping of their failures to genhook's error vocabulary."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from genhook.errors import ErrorCode, GenhookError
from genhook.paths import private_dir

# What each role can have inside the store at once (one connection each), which is what its
# PostgreSQL pool is sized to (GENHOOK_DB_POOL_SIZE overrides it; see docs/operations.md):
API_THREADS = 40
"""The API's sync routes and ``run_in_threadpool`` calls run on AnyIO's thread limiter (40
tokens by default, which genhook keeps): each may hold a connection."""
GROUP_COMMIT = 1
"""The group committer's one thread (accepted triggers)."""
OUTBOX_CONNECTIONS = 3
"""An outbox's turn (record and claim), its lease renewal and its next-due read; it sends its
requests in flight without the store, so this does not grow with ``--concurrency``."""
WORKER_OWN = 2
"""A worker process's claiming loop and its lease keeper, beside one per job it runs."""
HEALTH_CHECKS = 1
"""A role's health server answers one check at a time from the store's view."""
KEPT_CONNECTIONS = 10
"""Of a pool's connections, how many stay open between bursts (the rest close on return)."""


@dataclass(frozen=True)
class PoolPlan:
    """How a process uses PostgreSQL: its pool's size and the timeouts of its connections.

    ``size`` is the most connections the process holds at once (``None``: the default of a
    process that names no role, 30); a caller that finds none free waits ``timeout`` seconds and
    gets ``store_unavailable``. ``statement_timeout``, ``lock_timeout`` and
    ``idle_in_transaction_session_timeout`` (seconds, 0: none) are set on every connection as it
    opens, through libpq's ``options``. The last ends the session of a process that stops inside
    a transaction (frozen, or its host gone quiet), so the locks it held come free: genhook never
    waits on anything but the database while a transaction is open.
    """

    size: int | None = None
    timeout: float = 10.0
    statement_timeout: float = 30.0
    lock_timeout: float = 10.0
    idle_in_transaction_timeout: float = 120.0


_plan = PoolPlan()


def configure(plan: PoolPlan) -> None:
    """Use ``plan`` for every engine this process creates from now on (a role's start-up calls
    this before it opens its store)."""
    global _plan
    _plan = plan


def pool_size(role: str, concurrency: int = 1) -> int:
    """The connections a role can use at once: ``api`` (its threads, the group committer, the
    outbox of ``genhook serve``, the health routes), ``worker`` (one per job of
    ``concurrency``, the claiming loop, the lease keeper, the health server) or ``sender`` (its
    outbox and health server; the requests in flight hold no connection)."""
    if role == "api":
        return API_THREADS + GROUP_COMMIT + OUTBOX_CONNECTIONS
    if role == "worker":
        return max(1, concurrency) + WORKER_OWN + HEALTH_CHECKS
    if role == "sender":
        return OUTBOX_CONNECTIONS + HEALTH_CHECKS
    raise ValueError(f"unknown role {role!r}")


def configure_role(settings: Any, role: str, concurrency: int = 1) -> PoolPlan:
    """Configure this process for ``role`` from its settings (``GENHOOK_DB_POOL_SIZE``, else
    :func:`pool_size`; the pool, statement and lock timeouts); the plan applied."""
    plan = PoolPlan(
        size=settings.db_pool_size or pool_size(role, concurrency),
        timeout=settings.db_pool_timeout,
        statement_timeout=settings.db_statement_timeout,
        lock_timeout=settings.db_lock_timeout,
        idle_in_transaction_timeout=settings.db_idle_transaction_timeout,
    )
    configure(plan)
    return plan


def pool_limit(engine: sa.Engine) -> int:
    """The most connections ``engine``'s pool opens at once (kept plus overflow)."""
    pool: Any = engine.pool
    return int(pool.size()) + max(0, int(getattr(pool, "_max_overflow", 0)))


def _pg_options(url: sa.URL, plan: PoolPlan) -> dict[str, Any]:
    """libpq ``options`` setting the plan's timeouts, before any the URL gives (a later ``-c``
    wins, so the operator's URL can still override them)."""
    settings = [
        f"-c statement_timeout={round(plan.statement_timeout * 1000)}",
        f"-c lock_timeout={round(plan.lock_timeout * 1000)}",
        f"-c idle_in_transaction_session_timeout={round(plan.idle_in_transaction_timeout * 1000)}",
    ]
    given = url.query.get("options")
    if isinstance(given, tuple):
        given = " ".join(given)
    if given:
        settings.append(given)
    return {"options": " ".join(settings)}


PING_AFTER_IDLE = 1.0
"""Seconds a pooled PostgreSQL connection may rest before its next checkout pings it first."""


def _pg_engine(url: str, plan: PoolPlan) -> sa.Engine:
    size = plan.size or 30
    kept = min(size, KEPT_CONNECTIONS)
    engine = sa.create_engine(
        url,
        pool_size=kept,
        max_overflow=size - kept,
        pool_timeout=plan.timeout,
        hide_parameters=True,
        connect_args=_pg_options(sa.make_url(url), plan),
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: sa.Engine) -> None:
    """``pool_pre_ping``, only for a connection that rested :data:`PING_AFTER_IDLE` or more
    since it was last returned: a busy process takes its connections back within milliseconds,
    and a round trip per transaction was a large share of a short one's cost. A connection
    the server ended while it rested (a restart, ``pg_terminate_backend``) is replaced before
    use as with pre-ping; one that dies in the second after its last use fails its statement
    instead, which SQLAlchemy takes as a disconnect (the pool's older connections are all
    replaced) and the caller sees as ``store_unavailable`` once."""

    @event.listens_for(engine, "checkin")
    def _rested_from(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["rested_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_rested(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("rested_from")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool drops it and checks out another
            raise sa.exc.DisconnectionError("the pooled connection did not answer") from exc
        if not alive:
            raise sa.exc.DisconnectionError("the pooled connection did not answer")


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=FULL`` and explicit write locks.

    SQLite: every connection runs in WAL mode with ``synchronous=FULL`` (an accepted job survives
    a power cut), foreign keys on, and a 30 s busy timeout. Transactions opened with the
    execution option ``immediate=True`` start with ``BEGIN IMMEDIATE``, taking the write lock up
    front, so concurrent writers queue instead of failing on a lock upgrade.

    PostgreSQL: a pool sized by this process's :class:`PoolPlan` (:func:`configure`), a
    connection that rested a while checked before use (:func:`_ping_when_idle`), each opened
    with the plan's statement and lock timeouts; a statement past them is cancelled by the
    server, and the caller gets ``store_unavailable`` saying so rather than waiting on it.

    The database holds every service's webhook signing secret: the SQLite file (and so its
    ``-wal`` and ``-shm``, which SQLite creates with the database's mode) is ``0600`` in a
    folder created ``0700``, and no engine puts SQL parameters (trigger bodies, secrets) into
    its error messages.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith("sqlite"):
        return _pg_engine(url, _plan)
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
        ErrorCode.STORE_UNAVAILABLE, _why(exc, state), retry_after=STORE_RETRY_AFTER
    )


def _why(exc: BaseException, state: str) -> str:
    """The ``store_unavailable`` description: a timeout of this process's names its setting."""
    if isinstance(exc, sa.exc.TimeoutError):
        return (
            f"no database connection came free within {_plan.timeout:g} s "
            "(GENHOOK_DB_POOL_TIMEOUT); nothing was changed, try again"
        )
    if state == "57014" and "statement timeout" in str(getattr(exc, "orig", exc)):
        return (
            f"the database did not finish within {_plan.statement_timeout:g} s "
            "(GENHOOK_DB_STATEMENT_TIMEOUT) and cancelled the statement; nothing was changed, "
            "try again"
        )
    if state == "25P03":
        return (
            "this process left a transaction idle past "
            f"{_plan.idle_in_transaction_timeout:g} s (GENHOOK_DB_IDLE_TRANSACTION_TIMEOUT) and "
            "the database ended its session; nothing of it was changed, try again"
        )
    if state == "55P03":
        return (
            f"a database lock was not granted within {_plan.lock_timeout:g} s "
            "(GENHOOK_DB_LOCK_TIMEOUT); nothing was changed, try again"
        )
    return "the database does not answer or cannot write now; nothing was changed, try again"


def describe(exc: BaseException) -> str:
    """One line saying what the database said (no SQL, no parameters): for the logs."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else 'no message'}"[:300]


def log_failure(logger: logging.Logger, what: str, exc: Exception) -> None:
    """One line when the store is unavailable (an outage repeats it every poll or turn), else
    the traceback of an unexpected error."""
    if isinstance(exc, GenhookError) and exc.code is ErrorCode.STORE_UNAVAILABLE:
        logger.warning("%s: store unavailable: %s", what, describe(exc.__cause__ or exc))
    else:
        logger.exception("%s: unexpected error", what, exc_info=exc)
