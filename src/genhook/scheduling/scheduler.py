"""The scheduler loop: every template schedule's due times, fired exactly once, on the clock.

Which processes run it: the API process of ``genhook serve`` and every standalone
``genhook worker`` (not the workers ``serve`` starts: their API process runs it). Any number
may run at once, on any number of machines: a due time is fired by whichever gets to it first,
in the transaction that records it (:meth:`genhook.store.schedules.ScheduleStore.record_fire`),
and the others find it done.

Each pass (:meth:`Scheduler.tick`), for each schedule of the catalog that is not paused and whose
stored next due time has come (a schedule first seen gets the first due time after now: it never
fires for the past):

* the due time to deal with is the latest one that has come, ``due``; the next due time is the
  first after now;
* ``due`` is *on time* while no more than the schedule's ``grace`` (default 60 s) has passed
  since it. On time, it fires, whatever the policy (earlier due times passed over while
  everything was down are not fired);
* later than that it was *missed* (nothing ran at the time): ``missed: skip`` (the default)
  records it skipped and fires nothing; ``missed: catch_up`` fires it, once, however many due
  times were missed;
* firing reads the items (or takes the fixed input), checks each as a trigger of the schedule's
  service (:func:`genhook.api.triggers.checked_submission`), and admits the valid ones, each
  with the idempotency key ``schedule:WORKFLOW:ID:DUE:INDEX``. An invalid item is refused on
  its own (its error kept with the fire); the others are still jobs;
* when the items cannot be read or the service does not exist, the due time is tried again on
  the next passes while it is on time, then recorded ``failed`` with the reason.

Passes run every :data:`POLL_SECONDS` at most, and at the next due time if sooner (a due time
whose items could not be read: again :data:`RETRY_SECONDS` later). Time is
the runtime's clock (:mod:`genhook.clock`), so tests move it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from genhook import metrics
from genhook.errors import ErrorCode, GenhookError
from genhook.scheduling.items import FETCH_TIMEOUT, MAX_BYTES, ItemsFetcher, ItemsUnreadable
from genhook.scheduling.items import read_items as _read_items
from genhook.scheduling.spec import ScheduleSpec, iso
from genhook.store.admit import Submission
from genhook.store.schedules import Fire, FireOutcome, ScheduleState

if TYPE_CHECKING:
    from genhook.runtime import Runtime
    from genhook.store.records import Service
    from genhook.workflow.template import Workflow

log = logging.getLogger("genhook.scheduler")

POLL_SECONDS = 5.0
"""The longest a scheduler waits between passes (a pause or resume elsewhere is seen by then)."""
RETRY_SECONDS = 5.0
"""How soon a due time whose items could not be read (or whose service is missing) is tried
again while it is on time."""
MISSED_COUNT_LIMIT = 10_000
"""Missed due times are counted up to this many (a fire row's ``missed``)."""


def all_specs(runtime: Runtime) -> list[ScheduleSpec]:
    """Every schedule of the runtime's catalog, by key."""
    specs = [s for wf in runtime.catalog.workflows.values() for s in wf.schedules]
    return sorted(specs, key=lambda s: s.key)


def idempotency_key(spec: ScheduleSpec, due: float, index: int) -> str:
    """The idempotency key of item ``index`` of due time ``due``."""
    return f"schedule:{spec.key}:{iso(due)}:{index}"


class Scheduler:
    """Fires the runtime's schedules; :meth:`tick` is one pass, :meth:`run` the loop."""

    def __init__(self, runtime: Runtime, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.clock = runtime.clock
        self.poll_seconds = poll_seconds
        self.specs = all_specs(runtime)
        self._fetcher: ItemsFetcher | None = None
        self._deferred: set[str] = set()  # due, but tried again later (items unreadable)

    @property
    def fetcher(self) -> ItemsFetcher:
        if self._fetcher is None:
            self._fetcher = ItemsFetcher(
                max_bytes=MAX_BYTES,
                timeout=FETCH_TIMEOUT,
                allow_private=self.runtime.settings.allow_private_callbacks,
                resolver=self.runtime.resolver,
            )
        return self._fetcher

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()

    # -- one pass ---------------------------------------------------------------------------

    def tick(self) -> list[Fire]:
        """One pass over every schedule: the fires this process recorded (due times another
        process dealt with first are not among them)."""
        states = self.store.schedule_states()
        fires: list[Fire] = []
        self._deferred.clear()
        for spec in self.specs:
            now = self.clock.now()
            state = states.get(spec.key)
            if state is None or state.spec_hash != spec.spec_hash or state.next_due_at is None:
                state = self.store.track_schedule(
                    key=spec.key,
                    workflow_id=spec.workflow_id,
                    schedule_id=spec.id,
                    spec_hash=spec.spec_hash,
                    next_due_at=spec.next_due(now),
                )
            if state.paused_at is not None or state.next_due_at is None:
                continue
            if state.next_due_at > now:
                continue
            try:
                fire = self._deal_with(spec, state, now)
            except GenhookError as exc:
                if exc.code is ErrorCode.STORE_UNAVAILABLE:
                    raise  # the whole pass waits for the store
                log.warning("schedule %s: not fired now: %s", spec.key, exc)
                continue
            except Exception:  # one schedule's fault never stops the others
                log.exception("schedule %s: not fired now", spec.key)
                continue
            if fire is not None:
                fires.append(fire)
        return fires

    def next_wake(self) -> float:
        """Seconds until the next pass: the soonest due time, at most :attr:`poll_seconds`."""
        now = self.clock.now()
        soonest = now + self.poll_seconds
        for state in self.store.schedule_states().values():
            if state.paused_at is None and state.next_due_at is not None:
                due = state.next_due_at
                if state.key in self._deferred and due <= now:
                    due = now + RETRY_SECONDS  # not a busy loop over an unreadable file
                soonest = min(soonest, due)
        return max(0.05, soonest - now)

    def _deal_with(self, spec: ScheduleSpec, state: ScheduleState, now: float) -> Fire | None:
        assert state.next_due_at is not None
        due = spec.latest_due(now, since=state.next_due_at) or state.next_due_at
        next_due = spec.next_due(now)
        passed_over = _count_between(spec, state.next_due_at, due)
        late = now - due > spec.grace
        if late and spec.missed == "skip":
            log.info("schedule %s: %s was missed; skipped (missed: skip)", spec.key, iso(due))
            return self.store.record_fire(
                key=spec.key,
                due_at=due,
                next_due_at=next_due,
                outcome=FireOutcome.SKIPPED,
                missed=passed_over + 1,
            )
        if self.store.fire_exists(spec.key, due):
            return None  # another scheduler fired it (and moved the next due time on)
        workflow = self.runtime.catalog.workflows[spec.workflow_id]
        service = self.store.service_by_name(spec.service)
        try:
            if service is None:
                raise ItemsUnreadable(f"no service named {spec.service!r}")
            bodies = [dict(spec.input)] if spec.input is not None else self.read_items(spec)
        except ItemsUnreadable as exc:
            if not late:
                log.warning("schedule %s: %s not fired yet: %s", spec.key, iso(due), exc)
                self._deferred.add(spec.key)
                return None  # tried again RETRY_SECONDS later while on time
            log.warning("schedule %s: %s failed: %s", spec.key, iso(due), exc)
            failed = self.store.record_fire(
                key=spec.key,
                due_at=due,
                next_due_at=next_due,
                outcome=FireOutcome.FAILED,
                service_id=None if service is None else service.id,
                missed=passed_over,
                error=str(exc),
                service_name=spec.service,
            )
            if failed is not None:
                self.runtime.deliveries_signal.notify()  # its operator event is due
            return failed
        items = asyncio.run(self._prepare(spec, service, workflow, bodies, due))
        fire = self.store.record_fire(
            key=spec.key,
            due_at=due,
            next_due_at=next_due,
            outcome=FireOutcome.FIRED,
            service_id=service.id,
            items=items,
            missed=passed_over,
        )
        if fire is not None:
            log.info(
                "schedule %s: fired %s as %s: %s jobs, %s refused",
                spec.key,
                iso(due),
                spec.service,
                fire.created,
                fire.refused,
            )
            for _ in range(fire.created):  # counted as the API counts its triggers
                metrics.trigger_accepted(service.id, workflow.id)
            for entry in fire.errors or []:
                metrics.trigger_refused(service.id, workflow.id, entry["error"]["error_code"])
            if fire.created:
                self.runtime.jobs_signal.notify()
        return fire

    def read_items(self, spec: ScheduleSpec) -> list[Any]:
        """The schedule's items now (``ItemsUnreadable`` if they cannot be read)."""
        assert spec.items is not None
        workflow = self.runtime.catalog.workflows[spec.workflow_id]
        fetcher = self.fetcher if spec.items.url is not None else None
        return _read_items(spec.items, workflow.input_schema, fetcher)

    async def _prepare(
        self,
        spec: ScheduleSpec,
        service: Service,
        workflow: Workflow,
        bodies: Sequence[Any],
        due: float,
    ) -> list[Submission | GenhookError]:
        """Each body checked as a trigger of ``service`` (input, envelope, callback target,
        media URLs), as the API checks one: its submission, or its error."""
        from genhook.api.triggers import _request_hash, checked_submission

        out: list[Submission | GenhookError] = []
        for index, body in enumerate(bodies):
            if isinstance(body, dict) and spec.callback_url and "callback_url" not in body:
                body = {**body, "callback_url": spec.callback_url}
            key = idempotency_key(spec, due, index)
            try:
                out.append(
                    await checked_submission(
                        self.runtime, service, workflow, body, key, _request_hash(workflow.id, body)
                    )
                )
            except GenhookError as exc:
                out.append(exc)
        return out

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Passes until ``stop`` is set; a store that does not answer is tried again."""
        if not self.specs:
            return
        log.info("scheduler: %s schedules", len(self.specs))
        while not stop.is_set():
            wait = self.poll_seconds
            try:
                self.tick()
                wait = self.next_wake()
            except GenhookError as exc:
                log.warning("scheduler: pass failed: %s", exc)
            except Exception:
                log.exception("scheduler: pass failed")
            stop.wait(wait)
        self.close()


def _count_between(spec: ScheduleSpec, first: float, due: float) -> int:
    """Due times ``d`` with ``first <= d < due`` (at most :data:`MISSED_COUNT_LIMIT`)."""
    count, t = 0, first
    while t < due and count < MISSED_COUNT_LIMIT:
        count += 1
        t = spec.next_due(t)
    return count


@contextlib.contextmanager
def running(runtime: Runtime) -> Iterator[Scheduler | None]:
    """The scheduler loop on a thread of its own while the block runs (nothing when the
    catalog has no schedule)."""
    scheduler = Scheduler(runtime)
    if not scheduler.specs:
        yield None
        return
    stop = threading.Event()
    thread = threading.Thread(
        target=scheduler.run, args=(stop,), name="genhook-scheduler", daemon=True
    )
    thread.start()
    try:
        yield scheduler
    finally:
        stop.set()
        thread.join(2)  # a pass in progress (a slow items URL) is not waited for longer
