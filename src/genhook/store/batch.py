"""Group commit: concurrent job inserts share one transaction, so one ``fsync`` serves many.

Callers hand over an item (one accepted trigger) and wait until the transaction that wrote it
has committed: a 202 still goes out only after its job is durable. One thread takes everything
queued (up to ``limit`` items) and hands the whole batch to ``run_batch`` inside one write
transaction, which writes it with a few statements for the batch (one ``executemany`` per
table) rather than a few per item, and returns one outcome per item: a value, or the
``GenhookError`` that refused that item alone (say, an idempotency conflict; such an item must
be refused before anything of it is written). If the transaction itself fails (a constraint
raced by another process), each item of the batch is run again in a transaction of its own, so
a failure is its item's alone.

Waiting costs no thread: :meth:`GroupCommitter.run_async` returns when the batch committed,
and the committer wakes each event loop once per batch (one ``call_soon_threadsafe`` for all of
that loop's items), not once per item. :meth:`GroupCommitter.run` blocks a thread, for callers
outside an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from genhook.errors import GenhookError

Item = TypeVar("Item")
Outcome = Any  # a result, or the GenhookError that refused the item
RunBatch = Callable[[sa.Connection, Sequence[Item]], Sequence[Outcome]]


class _Waiter:
    """Where an item's outcome goes: a thread's future, or a future of an event loop."""

    __slots__ = ("future", "loop")

    def __init__(
        self,
        future: Future[Any] | asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.future = future
        self.loop = loop


def _settle(pairs: list[tuple[_Waiter, bool, Any]]) -> None:
    """Resolve each waiter's future (on its own loop's thread for asyncio futures)."""
    for waiter, ok, value in pairs:
        future = waiter.future
        if future.done():  # an asyncio waiter whose caller went away (cancelled)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class GroupCommitter(Generic[Item]):
    """Runs items from many threads and event loops in shared write transactions."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[sa.Connection]],
        run_batch: RunBatch[Item],
        limit: int = 256,
    ) -> None:
        self._begin = begin
        self._run_batch = run_batch
        self._limit = limit
        self._queue: queue.SimpleQueue[tuple[Item, _Waiter] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="genhook-group-commit", daemon=True)
        self._thread.start()

    def run(self, item: Item) -> Any:
        """Write ``item`` in the next shared transaction; its outcome once committed."""
        future: Future[Any] = Future()
        self._queue.put((item, _Waiter(future)))
        return future.result()

    async def run_async(self, item: Item) -> Any:
        """:meth:`run` for a coroutine: the event loop goes on serving while the batch commits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((item, _Waiter(future, loop)))
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(30)

    def _batches(self) -> Iterator[list[tuple[Item, _Waiter]]]:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._limit:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    self._queue.put(None)
                    break
                batch.append(entry)
            yield batch

    def _run(self) -> None:
        for batch in self._batches():
            items = [item for item, _ in batch]
            try:
                with self._begin() as conn:
                    outcomes = self._run_batch(conn, items)
            except Exception:
                self._deliver(self._one_by_one(batch))
                continue
            self._deliver(
                [
                    (waiter, not isinstance(outcome, GenhookError), outcome)
                    for (_, waiter), outcome in zip(batch, outcomes, strict=True)
                ]
            )

    def _one_by_one(self, batch: list[tuple[Item, _Waiter]]) -> list[tuple[_Waiter, bool, Any]]:
        settled: list[tuple[_Waiter, bool, Any]] = []
        for item, waiter in batch:
            try:
                with self._begin() as conn:
                    (outcome,) = self._run_batch(conn, [item])
            except Exception as exc:
                settled.append((waiter, False, exc))
            else:
                settled.append((waiter, not isinstance(outcome, GenhookError), outcome))
        return settled

    @staticmethod
    def _deliver(settled: list[tuple[_Waiter, bool, Any]]) -> None:
        """Threads' futures at once; each event loop woken once with all of its items."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, bool, Any]]] = {}
        for entry in settled:
            loop = entry[0].loop
            if loop is None:
                _settle([entry])
            else:
                by_loop.setdefault(loop, []).append(entry)
        for loop, pairs in by_loop.items():
            # a loop that closed while its requests waited has nobody left to tell
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, pairs)
