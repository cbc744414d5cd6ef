"""The store's foundation: the engine, write and read transactions, the row type, and health.

Every transaction goes through :meth:`StoreBase._write` or :meth:`StoreBase._read`, which is
where database failures become ``store_unavailable`` (see :func:`genhook.store.db.unavailable`):
the store's edge, so no caller sees a driver's exception.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from genhook.clock import Clock, SystemClock
from genhook.store import migrate
from genhook.store.batch import GroupCommitter
from genhook.store.db import create_engine, describe, unavailable
from genhook.store.schema import store_probe

Row = dict[str, Any]
# a write that failed for want of the database keeps health at 503 this long: on a full disk a
# rolled-back probe writes nothing, so only real writes can tell
WRITE_FAILURE_MEMORY = 15.0
# the probe row spans a few pages, so a database that cannot grow (SQLITE_FULL) refuses it
PROBE_BYTES = 3 * 4096


@dataclass(frozen=True)
class Health:
    """What the store can do now: answer reads, and write; ``reason`` when it cannot."""

    answers: bool
    writable: bool
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.answers and self.writable


class StoreBase:
    """Connections and transactions shared by the job, delivery and service parts."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.clock = clock or SystemClock()
        # SQLite has one writer at a time: queue this process's writers on a lock instead of
        # in SQLite's busy handler, whose sleeps grow to 100 ms (other processes still use it)
        self._write_lock = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._batcher: GroupCommitter[Any] = GroupCommitter(self._write, self._write_batch)
        self._write_failure: tuple[float, str] | None = None
        # where operator events are outboxed (GENHOOK_ALERT_URL); None: logged only
        self.alert_url: str | None = None
        # waiting jobs past which a service's triggers get 429 queue_full (GENHOOK_QUEUE_LIMIT),
        # unless the service sets its own
        self.default_queue_limit = 10_000
        # per backend: most jobs running at once, and most starts per (count, period)
        self.backend_concurrency: Mapping[str, int] = {}
        self.backend_rates: Mapping[str, tuple[int, float]] = {}
        self.backend_breaker_failures = 5
        self.backend_probe_seconds = 30.0

    def _write_batch(self, conn: sa.Connection, items: Sequence[Any]) -> Sequence[Any]:
        """Write a group commit's batch of items in ``conn``'s transaction: one outcome per item
        (the job store's submissions; see :mod:`genhook.store.batch`)."""
        raise NotImplementedError

    def migrate(self) -> None:
        """Create or upgrade the schema; a database that cannot do it is ``store_unavailable``."""
        try:
            migrate.upgrade(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            error = unavailable(exc)
            if error is None:
                raise
            raise error from exc

    def close(self) -> None:
        """Finish queued inserts and release every connection."""
        self._batcher.close()
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); database failures leave it as
        ``store_unavailable``, and are remembered for :meth:`health`."""
        try:
            with self._write_lock, self.engine.connect() as conn:
                conn = conn.execution_options(immediate=True)
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            error = unavailable(exc)
            if error is None:
                raise
            self._write_failure = (self.clock.now(), describe(exc))
            raise error from exc

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A read transaction; database failures leave it as ``store_unavailable``."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            error = unavailable(exc)
            if error is None:
                raise
            raise error from exc

    def ping(self) -> bool:
        """True when the database answers and can write (see :meth:`health`)."""
        return self.health().ok

    def health(self) -> Health:
        """Whether the database answers, and whether it can write now.

        Writing is proven by a probe: a row of a few pages inserted in a write transaction that
        is rolled back (SQLite takes its write lock and must find room; PostgreSQL refuses it on
        a read-only server or a full disk). A write of the store's that failed for want of the
        database within the last ``WRITE_FAILURE_MEMORY`` seconds also counts as not writable.
        """
        for tries in (1, 2):
            try:
                with self._read() as conn:
                    conn.execute(sa.text("SELECT 1"))
                break
            except Exception as exc:
                cause = exc.__cause__ or exc
                if tries == 1 and _ended_by_the_server(cause):
                    continue  # a pooled connection the server had ended: asked again on a new one
                return Health(False, False, describe(cause))
        for tries in (1, 2):
            try:
                with self._write_lock, self.engine.connect() as conn, _spilling(conn):
                    probe = conn.execution_options(immediate=True).begin()
                    try:
                        conn.execute(store_probe.insert().values(data=os.urandom(PROBE_BYTES)))
                    finally:
                        probe.rollback()
                break
            except sa.exc.SQLAlchemyError as exc:
                if tries == 1 and _ended_by_the_server(exc):
                    continue
                return Health(True, False, describe(exc))
        failure = self._write_failure
        if failure is not None and self.clock.now() - failure[0] < WRITE_FAILURE_MEMORY:
            return Health(
                True,
                False,
                f"a write failed {self.clock.now() - failure[0]:.0f} s ago: {failure[1]}",
            )
        return Health(True, True)


def _ended_by_the_server(exc: BaseException) -> bool:
    """A pooled connection that the server (or a proxy) had closed while it rested: SQLAlchemy
    has discarded it and the pool's older ones, so the same question on a new one is fair.
    (Connections are pinged only after a rest, :mod:`genhook.store.db`.)"""
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


@contextmanager
def _spilling(conn: sa.Connection) -> Iterator[None]:
    """On SQLite, a one-page cache for the probe: SQLite would keep its uncommitted pages in
    memory, so a file system that turned read-only under open connections (an I/O error makes
    the kernel remount it) would pass. Spilled, they reach the WAL file as uncommitted frames,
    which the rollback discards."""
    raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
    if raw is None:
        yield
        return
    cursor = raw.cursor()
    try:
        cursor.execute("PRAGMA cache_size")
        row = cursor.fetchone()
        size = int(row[0]) if row else -2000
        cursor.execute("PRAGMA cache_size=1")
        try:
            yield
        finally:
            cursor.execute(f"PRAGMA cache_size={size}")
    finally:
        cursor.close()
