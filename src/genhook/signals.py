"""In-process wake-ups: a worker or the sender learns of new work at once, without a polling nap."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator


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

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener`` (nothing happens if it is not subscribed)."""
        with self._cond, contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def listener_count(self) -> int:
        """How many listeners are subscribed (a leak shows here)."""
        with self._cond:
            return len(self._listeners)

    def asyncio_event(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """An asyncio.Event of ``loop`` that is set on every notify (thread-safe), for as long as
        the process runs; a waiter that ends before that uses ``listening``."""
        event, wake = _event_setter(loop)
        self.subscribe(wake)
        return event

    @contextlib.contextmanager
    def listening(self, loop: asyncio.AbstractEventLoop) -> Iterator[asyncio.Event]:
        """``asyncio_event`` for the length of a block: its listener is removed at the end."""
        event, wake = _event_setter(loop)
        self.subscribe(wake)
        try:
            yield event
        finally:
            self.unsubscribe(wake)


def _event_setter(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Event, Callable[[], None]]:
    """An asyncio.Event of ``loop`` and a thread-safe function that sets it."""
    event = asyncio.Event()

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    return event, wake
