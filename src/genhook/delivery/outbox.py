"""The outbox loop: lease due deliveries from the store, send them, log every attempt.

It wakes at once when a job ends in this process (an in-process signal), else when the earliest
pending delivery falls due, and at least every ``poll_seconds`` for deliveries that other
processes wrote.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from genhook.clock import Clock, SystemClock
from genhook.delivery.sender import DeliverySender, DueDelivery, next_delay
from genhook.signals import Signal
from genhook.store.store import Row, Store

log = logging.getLogger("genhook.delivery")


class Outbox:
    """Delivers completion payloads with at most ``concurrency`` requests in flight."""

    def __init__(
        self,
        store: Store,
        sender: DeliverySender,
        schedule: Sequence[float],
        *,
        signal: Signal | None = None,
        clock: Clock | None = None,
        concurrency: int = 64,
        lease_seconds: float = 120.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.sender = sender
        self.schedule = tuple(schedule)
        self.signal = signal or Signal()
        self.clock = clock or SystemClock()
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; in-flight attempts finish first."""
        wake = self.signal.asyncio_event(asyncio.get_running_loop())
        while not stop.is_set():
            wake.clear()
            room = self.concurrency - len(self._inflight)
            batch: list[Row] = []
            if room > 0:
                try:
                    batch = await asyncio.to_thread(
                        self.store.claim_deliveries, room, self.lease_seconds
                    )
                except Exception:
                    log.exception("claiming deliveries failed")
            for row in batch:
                task = asyncio.create_task(self._deliver(row))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if batch and len(batch) == room:
                await asyncio.sleep(0)
                continue
            await self._nap(wake, stop)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self.signal.notify()  # a slot freed up: look for more work

    async def _nap(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        timeout = self.poll_seconds
        try:
            due = await asyncio.to_thread(self.store.next_delivery_at)
        except Exception:
            due = None
        if due is not None:
            timeout = max(0.0, min(timeout, due - self.clock.now()))
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _deliver(self, row: Row) -> None:
        number = int(row["attempts"]) + 1
        due = DueDelivery(
            delivery_id=row["id"],
            url=row["url"],
            body=bytes(row["body"]),
            secret=row["webhook_secret"],
            attempt=number,
        )
        result = await self.sender.send(due)
        next_at = None
        if result.outcome == "retry":
            delay = next_delay(number, self.schedule, result.retry_after)
            next_at = None if delay is None else self.clock.now() + delay
        try:
            await asyncio.to_thread(
                self.store.record_delivery,
                row["id"],
                number=number,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
                outcome=result.outcome,
                next_attempt_at=next_at,
            )
        except Exception:
            log.exception("recording delivery %s failed; its lease will expire", row["id"])
