"""In-process wake-ups: a worker or the sender learns of new work at once, without a polling nap."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class Signal:
    """A counter that waiters block on; ``notify`` wakes every waiter (threads and event loops)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._listeners: list[Callable[[], None]] = []

    def notify(self) -> None:
        """Something changed: wake every waiter and listener."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    @property
    def generation(self) -> int:
        """How many notifies so far: pass it to ``wait`` to not miss one in between."""
        with self._cond:
            return self._generation

    def wait(self, timeout: float, seen: int | None = None) -> int:
        """Block until a notify after generation ``seen`` (or now), or ``timeout``; return gen."""
        with self._cond:
            start = self._generation if seen is None else seen
            self._cond.wait_for(lambda: self._generation != start, timeout=timeout)
            return self._generation

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the notifying thread) on every notify."""
        with self._cond:
            self._listeners.append(listener)

    def asyncio_event(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """An asyncio.Event of ``loop`` that is set on every notify (thread-safe)."""
        event = asyncio.Event()

        def wake() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

        self.subscribe(wake)
        return event
