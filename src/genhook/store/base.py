"""The store's foundation: the engine, write and read transactions, and the row type."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from genhook.clock import Clock, SystemClock
from genhook.store import migrate
from genhook.store.batch import GroupCommitter
from genhook.store.db import create_engine

Row = dict[str, Any]


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
        self._batcher = GroupCommitter(self._write)

    def migrate(self) -> None:
        """Create or upgrade the schema."""
        migrate.upgrade(self.engine)

    def close(self) -> None:
        """Finish queued inserts and release every connection."""
        self._batcher.close()
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self._read() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True
