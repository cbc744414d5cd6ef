"""Group commit: concurrent job inserts share one transaction, so one ``fsync`` serves many.

Each caller hands over a unit of work (a function of the open connection) and blocks until the
transaction that ran it has committed: a 202 still goes out only after its job is durable. One
thread takes everything queued (up to ``limit`` units), runs the units in one write transaction
and commits. A unit that raises ``GenhookError`` (say, an idempotency conflict) must do so
before it writes anything; it fails alone. If the transaction itself fails (a constraint raced by
another process), each unit of the batch is run again in a transaction of its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa

from genhook.errors import GenhookError

Unit = Callable[[sa.Connection], Any]


class GroupCommitter:
    """Runs units of work from many threads in shared write transactions."""

    def __init__(
        self, begin: Callable[[], AbstractContextManager[sa.Connection]], limit: int = 256
    ) -> None:
        self._begin = begin
        self._limit = limit
        self._queue: queue.SimpleQueue[tuple[Unit, Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="genhook-group-commit", daemon=True)
        self._thread.start()

    def run(self, unit: Unit) -> Any:
        """Run ``unit`` in the next shared transaction; return its result once committed."""
        future: Future[Any] = Future()
        self._queue.put((unit, future))
        return future.result()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(30)

    def _batches(self) -> Iterator[list[tuple[Unit, Future[Any]]]]:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._limit:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            yield batch

    def _run(self) -> None:
        for batch in self._batches():
            outcomes: list[tuple[Future[Any], bool, Any]] = []
            try:
                with self._begin() as conn:
                    for unit, future in batch:
                        try:
                            outcomes.append((future, True, unit(conn)))
                        except GenhookError as exc:
                            outcomes.append((future, False, exc))
            except Exception:
                self._one_by_one(batch)
                continue
            for future, ok, value in outcomes:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _one_by_one(self, batch: list[tuple[Unit, Future[Any]]]) -> None:
        for unit, future in batch:
            try:
                with self._begin() as conn:
                    result = unit(conn)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
