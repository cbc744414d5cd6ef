"""The outbox loop: lease due deliveries from the store, send them, log every attempt.

It wakes at once when a job ends in this process (an in-process signal), else when the earliest
pending delivery falls due, and at least every ``poll_seconds`` for deliveries that other
processes wrote.

Turns: one transaction at a time records the answers that came back and leases what there is
room for (see :class:`Outbox`); an answer is acted on (delivered, retried, given up) only by the
turn that records it.

Crashes: every attempt is in the delivery log before its request goes out (the claim writes it,
state ``sending``). A lease (``lease_seconds``, 30 s) is renewed every third of itself until the
attempt's answer is recorded, so a sender that dies, answers unrecorded included, is taken over
within one lease, by any outbox on any host. On start-up an outbox also ends at once the leases
of outboxes on this host whose process is gone (:func:`owner_is_dead`), so a restarted service
resends what it had in flight at once instead of after the lease.

Isolation: the store's claim leases only what fits under the per-service and per-endpoint caps
on attempts in flight (across every outbox), serving services in turns; what the caps hold back
is claimed when an attempt ends (this process) or at the next poll (another's). Operator events
(deliveries of kind ``alert``) are signed with ``alert_secret`` (``GENHOOK_ALERT_SECRET``), never
with a service's secret.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from genhook import metrics
from genhook.clock import Clock, SystemClock
from genhook.delivery.sender import AttemptResult, DeliverySender, DueDelivery
from genhook.ids import new_id
from genhook.retry import RetryPolicy, decide, delivery_policy
from genhook.signals import Signal
from genhook.status import DeliveryOutcome
from genhook.store.db import log_failure
from genhook.store.deliveries import DeliveryResult
from genhook.store.ports import OutboxStore
from genhook.store.records import Delivery

log = logging.getLogger("genhook.delivery")


def owner_name() -> str:
    """This outbox's lease-owner name: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('o')[-8:]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` names an outbox on this host whose process has ended.

    Owners on other hosts, in this process, or that cannot be parsed count as alive: their leases
    end on their own. A reused process id makes a dead owner look alive (the same: one lease).
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: gone all the same
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def outcome_label(outcome: DeliveryOutcome, next_attempt_at: float | None) -> str:
    """An attempt's outcome as the metrics name it: ``delivered``, ``failed`` (to be tried
    again), ``exhausted`` (its schedule is used up), ``gone`` (410) or ``blocked``."""
    if outcome == DeliveryOutcome.RETRY:
        return "failed" if next_attempt_at is not None else "exhausted"
    return str(outcome)


class Outbox:
    """Delivers completion payloads with at most ``concurrency`` requests in flight.

    ``policy`` is the callbacks' :class:`~genhook.retry.RetryPolicy` (a plain schedule is
    taken as :func:`~genhook.retry.delivery_policy` of it).

    One loop does all of the outbox's writing, a turn at a time: each turn is one transaction
    (:meth:`~genhook.store.deliveries.DeliveryStore.record_and_claim`) that records every
    answer that came back since the last turn and leases as many due deliveries as there is
    room for, so one commit serves many deliveries however many are in flight. The requests
    go out meanwhile from ``concurrency`` lanes (long-lived tasks, one request at a time each:
    that bounds the requests in flight); an answer waits in memory for the next turn, and
    nothing acts on it before that turn has committed: the delivery stays ``sending`` under
    this outbox's lease until then, so a crash in between loses nothing (the lease runs out, or
    is ended at the next start-up, and the delivery is sent again).

    Leasing ahead: a turn leases up to ``lease_ahead`` (default: three times ``concurrency``)
    deliveries more than there are free lanes; they wait in memory, leased and logged
    ``sending``, and each goes out the moment a lane frees. So the requests keep going out while
    the next turn commits (on SQLite its fsync is most of a turn's time), instead of the lanes
    idling until it has. Those leases count against the in-flight caps like any other (they are
    attempts logged and not yet recorded), are renewed like the rest, and after a crash are
    taken over like the rest; on ``stop`` they are still sent and recorded. ``lease_ahead=0``:
    lease only for free lanes. A deeper queue also makes turns larger (more answers wait for
    each), so a turn's fixed cost (the pick, the transaction) is shared by more deliveries: with
    32 lanes, 96 ahead took 0.170-0.200 ms of CPU per delivery against 0.205-0.270 ms with 32
    ahead, in each of four alternated pairs of ``bench/deliver.py``. (The in-flight caps, which
    count these leases, bind first unless they are raised past the lanes.)
    """

    def __init__(
        self,
        store: OutboxStore,
        sender: DeliverySender,
        policy: RetryPolicy | Sequence[float],
        *,
        signal: Signal | None = None,
        clock: Clock | None = None,
        concurrency: int = 64,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        name: str | None = None,
        alert_secret: str | None = None,
        gather_seconds: float = 0.010,
        lease_ahead: int | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.policy = policy if isinstance(policy, RetryPolicy) else delivery_policy(policy)
        self.signal = signal or Signal()
        self.clock = clock or SystemClock()
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.name = name or owner_name()
        self.alert_secret = alert_secret
        # leased beyond the free request slots, at most this many (None: 3 x ``concurrency``)
        self.lease_ahead = 3 * concurrency if lease_ahead is None else max(0, lease_ahead)
        self._queued: collections.deque[Delivery] = collections.deque()  # leased, not yet sent
        self._busy = 0  # lanes with a request in flight
        self._work = asyncio.Event()  # set when deliveries are queued for the lanes
        self._answered: list[DeliveryResult] = []  # answers the next turn records
        self._held: set[str] = set()  # leased here and not yet recorded: renewed
        self._answer: asyncio.Event | None = None  # set when an answer comes back
        self._all_answered = asyncio.Event()  # set when no request is in flight
        self.gather_seconds = gather_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; in-flight attempts finish, and are recorded, first."""
        loop = asyncio.get_running_loop()
        wake = self.signal.asyncio_event(loop)
        self._answer = asyncio.Event()
        try:
            taken = await asyncio.to_thread(self.store.expire_dead_leases, owner_is_dead)
            if taken:
                log.info("taking over %d deliveries whose sender died", taken)
        except Exception:
            log.exception("taking over dead senders' deliveries failed")
        renewals = asyncio.create_task(self._renew())
        lanes = [asyncio.create_task(self._lane()) for _ in range(max(1, self.concurrency))]
        try:
            while True:
                stopping = stop.is_set()
                if stopping and not (self._busy or self._queued or self._answered):
                    break
                wake.clear()
                self._answer.clear()
                answered, self._answered = self._answered, []
                room = 0 if stopping else self._room()
                claimed_at = self.clock.now()
                batch = await self._turn(answered, room)
                if batch:
                    self._held.update(row.id for row in batch)
                    self._queued.extend(batch)
                    self._work.set()  # the lanes send them, in the claim's order
                if room > 0 and len(batch) == room:
                    await asyncio.sleep(0)  # a full claim: more may be due at once
                    continue
                if not self._answered:
                    if not (stopping or room - len(batch) <= 0):
                        await self._nap(wake, stop, claimed_at)
                    elif self._busy:  # no room, or stopping: wait for the next answer
                        await self._answer.wait()
                if self._answered and self._busy and not self._queued:
                    await self._gather(wake)
        finally:
            for task in (renewals, *lanes):
                task.cancel()
            for task in (renewals, *lanes):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _room(self) -> int:
        """How many more deliveries to lease now: the free request slots, plus up to
        ``lease_ahead`` to wait for the next slot that frees."""
        return self.concurrency + self.lease_ahead - self._busy - len(self._queued)

    async def _lane(self) -> None:
        """One request slot: send the leased deliveries queued for the lanes, one at a time,
        oldest lease first; wait for more when none is left."""
        queued = self._queued
        while True:
            if not queued:
                self._work.clear()
                await self._work.wait()
                continue
            row = queued.popleft()
            self._busy += 1
            try:
                await self._deliver(row)
            except Exception:
                # no answer to record: left to its lease, which is no longer renewed
                self._held.discard(row.id)
                log.exception("sending delivery %s failed", row.id)
            finally:
                self._busy -= 1
                if self._answer is not None:
                    self._answer.set()  # a slot freed up, an answer waits to be recorded
                if not self._busy:
                    self._all_answered.set()

    async def _turn(self, answered: list[DeliveryResult], room: int) -> list[Delivery]:
        """One transaction: record ``answered`` and lease up to ``room`` due deliveries.

        If it fails, each answer is recorded again on its own (one that still cannot be is
        left to its lease, which runs out: the delivery is sent again), and nothing is leased.
        """
        if not answered and room <= 0:
            return []
        try:
            moved, batch = await asyncio.to_thread(
                self.store.record_and_claim, answered, room, self.lease_seconds, self.name
            )
        except Exception as exc:
            log_failure(log, f"recording {len(answered)} answers and claiming deliveries", exc)
            moved = [await self._record_alone(result) for result in answered]
            batch = []
        for result, kept in zip(answered, moved, strict=True):
            self._held.discard(result.delivery_id)
            if not kept:
                log.warning("delivery %s was taken over by another sender", result.delivery_id)
        return batch

    async def _record_alone(self, result: DeliveryResult) -> bool:
        try:
            [moved] = await asyncio.to_thread(self.store.record_deliveries, [result], self.name)
        except Exception as exc:
            log_failure(
                log, f"recording delivery {result.delivery_id} (its lease will expire)", exc
            )
            return True  # nothing more to do here: not a take-over
        return moved

    async def _gather(self, wake: asyncio.Event) -> None:
        """Let the answers still in flight join the next turn: wait until every request in
        flight has answered, new work is signalled, or ``gather_seconds`` have passed."""
        self._all_answered.clear()
        waiters = [
            asyncio.ensure_future(self._all_answered.wait()),
            asyncio.ensure_future(wake.wait()),
        ]
        try:
            await asyncio.wait(
                waiters, timeout=self.gather_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _renew(self) -> None:
        """Keep the leases of deliveries leased here and not yet recorded, every third of a
        lease."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = list(self._held)
            if not held:
                continue
            try:
                kept = await asyncio.to_thread(
                    self.store.renew_deliveries, held, self.name, self.lease_seconds
                )
            except Exception:
                log.exception("renewing delivery leases failed")
                continue
            if kept < len(held):
                log.warning("%d in-flight deliveries were taken over", len(held) - kept)

    async def _nap(self, wake: asyncio.Event, stop: asyncio.Event, claimed_at: float) -> None:
        """Wait for a wake-up, an answer, ``stop``, the next due delivery or the poll, whichever
        is first.

        A delivery that was due when the claim ran and is still pending was left by it (its
        service or endpoint is at its cap): it waits for an attempt to end here (which wakes
        this loop) or for the poll, instead of spinning on it.
        """
        assert self._answer is not None
        timeout = self.poll_seconds
        try:
            due = await asyncio.to_thread(self.store.next_delivery_at, claimed_at)
        except Exception:
            due = None
        if due is not None:
            timeout = max(0.0, min(timeout, due - self.clock.now()))
        waiters = [
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._answer.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _deliver(self, row: Delivery) -> None:
        """Send one attempt and leave its answer for the next turn to record."""
        number = row.attempt  # this attempt, already in the log as "sending"
        secret = self.alert_secret if row.is_alert else row.webhook_secret
        if not secret:
            result = AttemptResult(
                DeliveryOutcome.RETRY,
                None,
                "no GENHOOK_ALERT_SECRET to sign this operator event with",
                0.0,
                None,
            )
        else:
            due = DueDelivery(
                delivery_id=row.id,
                url=row.url,
                body=row.body,
                secret=secret,
                attempt=number,
                # an operator event goes where the operator said, under this process's policy
                allow_private=True if row.is_alert else row.callback_private,
                also_secrets=(row.previous_secret,) if row.previous_secret else (),
            )
            result = await self.sender.send(due)
        next_at = None
        if result.outcome is not DeliveryOutcome.DELIVERED:
            retry = decide(
                self.policy,
                number,
                retryable=result.outcome is DeliveryOutcome.RETRY,
                retry_after=result.retry_after,
            )
            next_at = None if retry.delay is None else self.clock.now() + retry.delay
        metrics.delivery(
            row.service_id, outcome_label(result.outcome, next_at), result.duration_ms / 1e3
        )
        self._answered.append(
            DeliveryResult(
                row.id,
                number,
                result.outcome,
                result.status_code,
                result.error,
                result.duration_ms,
                next_at,
            )
        )
