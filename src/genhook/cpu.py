"""The CPU gate: one process's CPU-bound steps, at most as many at once as it has cores.

A worker process runs many jobs at once (``genhook worker --concurrency N``) because most of a
job on a remote engine is waiting on a socket, which costs a thread and no core. The steps that
do cost a core (a local backend's rendering, quality checks, metadata, export and encode) take a
slot of the process's gate first, so 200 jobs in flight still render two at a time on two cores
instead of thrashing 200 threads over them (and holding 200 images in memory at once).

The gate knows which thread holds a slot: a step inside a held slot takes no second one (a
quality check that regenerates through a local backend), and a remote generation started from
inside one (a quality check regenerating on a hosted engine) gives its slot back while it waits
(:meth:`CpuGate.outside`) and takes one again before going on.

Slots: ``GENHOOK_CPU_SLOTS`` where set, else the cores this process may run on.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any


def cpu_slots(settings: Any = None) -> int:
    """``settings.cpu_slots`` where set (``GENHOOK_CPU_SLOTS``), else the usable cores."""
    configured = getattr(settings, "cpu_slots", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class CpuGate:
    """A counting semaphore of ``slots`` that knows which threads hold a slot."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a CPU gate needs at least one slot")
        self.slots = slots
        self._cond = threading.Condition()
        self._held = 0
        self._waiting = 0
        self._local = threading.local()

    @property
    def held(self) -> int:
        """Slots taken now."""
        with self._cond:
            return self._held

    @property
    def waiting(self) -> int:
        """Threads waiting for a slot now."""
        with self._cond:
            return self._waiting

    def _depth(self) -> int:
        depth: int = getattr(self._local, "depth", 0)
        return depth

    def _acquire(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self._held < self.slots)
            finally:
                self._waiting -= 1
                if self._waiting == 0:
                    self._cond.notify_all()  # wake wait_room
            self._held += 1

    def _release(self) -> None:
        with self._cond:
            self._held -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Run the block in a slot (waiting for one); nested holds of one thread take one."""
        depth = self._depth()
        if depth == 0:
            self._acquire()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._release()

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """Run the block (a wait on a remote engine) without this thread's slot, if it holds
        one, and take a slot again after it."""
        depth = self._depth()
        if depth == 0:
            yield
            return
        self._local.depth = 0
        self._release()
        try:
            yield
        finally:
            self._acquire()
            self._local.depth = depth

    def wait_room(self, timeout: float) -> bool:
        """Block until no thread waits for a slot (or ``timeout``); True if none waits. A worker
        claims another job only then, so that it does not hoard CPU-bound jobs it cannot run."""
        with self._cond:
            return self._cond.wait_for(lambda: self._waiting == 0, timeout=timeout)


_PROCESS_GATE: CpuGate | None = None
_PROCESS_LOCK = threading.Lock()


def process_gate(settings: Any = None) -> CpuGate:
    """This process's gate, made on first use (sized by ``settings`` then, see
    :func:`cpu_slots`); every engine of the process shares it."""
    global _PROCESS_GATE
    with _PROCESS_LOCK:
        if _PROCESS_GATE is None:
            _PROCESS_GATE = CpuGate(cpu_slots(settings))
        return _PROCESS_GATE
