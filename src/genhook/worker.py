"""The worker: claim jobs with a lease, keep the leases while running them, record what happened.

A worker learns of new jobs at once through an in-process signal (and polls every
``GENHOOK_POLL_SECONDS`` for jobs inserted by other processes and for retries falling due).
One worker runs up to ``concurrency`` jobs at once (``genhook worker --concurrency N``): one
claiming loop, and a thread per job it runs. Threads, not asyncio: backends are synchronous, and
a thread blocked on a socket waiting for a remote engine holds the GIL no more than a coroutine
would; 200 such jobs cost 200 mostly idle stacks (a few MiB in all, see docs/benchmarks.md).
CPU-bound steps take the process's CPU gate (:mod:`genhook.cpu`), and the worker claims another
job only while nothing waits at the gate, so it never hoards jobs it has no core for.

Each job has its own lease. One :class:`LeaseKeeper` thread per worker keeps them all: every
``GENHOOK_HEARTBEAT_SECONDS`` it renews every lease it holds in one transaction, every quarter
second it asks in one read which of its jobs were cancelled, and it writes the jobs' throttled
progress events in one transaction per turn. A worker that dies stops renewing, and once a lease
(``GENHOOK_LEASE_SECONDS``) runs out another worker takes the job over. Only the lease holder can
end a job, so a job completes, and is delivered, once.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from genhook import metrics
from genhook.backends.base import BackendStatus, Progress, probe
from genhook.config import Settings
from genhook.contract.completion import CompletionPayload, job_failure_payload
from genhook.contract.events import PROGRESS
from genhook.engine import Engine, Outcome, backend_limits
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import BreakerState
from genhook.ids import new_id
from genhook.media import similarity
from genhook.media.similarity import RecentHash
from genhook.retry import decide, job_policy
from genhook.review import needs_review, quality_reports, wants_review
from genhook.signals import Signal
from genhook.status import JobStatus
from genhook.storage import AssetStorage, Staging
from genhook.store.callbacks import announces_start, asked
from genhook.store.db import log_failure
from genhook.store.expiry import SWEEP_SECONDS
from genhook.store.jobs import Finish
from genhook.store.ports import WorkerStore
from genhook.store.records import Job
from genhook.workflow.template import Workflow

WORKDIR = ".work"
"""The folder inside an attempt's staging area where its generations put their files (a dot
name: never published, removed with the attempt)."""

log = logging.getLogger("genhook.worker")

# transient failures that are the backend's (they count towards its breaker); a lost worker or
# an unavailable store are not
BACKEND_FAULTS = frozenset(
    {
        ErrorCode.BACKEND_UNAVAILABLE,
        ErrorCode.BACKEND_TIMEOUT,
        ErrorCode.BACKEND_RATE_LIMITED,
        ErrorCode.BACKEND_ERROR,
    }
)


RECENT_JOBS = 20
"""How many of the latest succeeded jobs of the same service, workflow and external id the
near_duplicate check compares a job's outputs with."""

PROGRESS_SECONDS = 2.0
"""At most one progress event per job this often (the last one is always written)."""
CANCEL_POLL_SECONDS = 0.25
"""How often the lease keeper asks which of its jobs were cancelled (one read for all)."""


GATHER_SECONDS = 0.005
"""After a claim that filled every free slot (more jobs are likely waiting), how long the
claiming loop waits for half its slots to be free before it claims again, so that one
transaction claims several jobs rather than one whenever a job ends."""


FINISH_BATCH = 64
"""Most job ends one finishing transaction commits (see :class:`Finisher`)."""


LeaseStore = WorkerStore
"""The worker's port (its batched lease, cancel and progress calls are on it)."""


@dataclass
class _Running:
    """A job this worker runs: what the lease keeper learnt of it, and its pending progress."""

    job_id: str
    lost: bool = False
    cancel: bool = False
    asked: bool = False  # the job's own first cancel check is done
    pending: dict[str, Any] | None = None  # progress not written yet
    written: dict[str, Any] | None = None  # the last progress written
    written_at: float = float("-inf")  # time.monotonic() of that write
    calls_back: bool = False  # its trigger asked for job.progress callbacks


def progress_detail(progress: Progress) -> dict[str, Any]:
    """A progress event's detail: ``step`` of ``total`` and the ``percent`` done."""
    total = max(1, progress.total)
    step = min(max(0, progress.step), total)
    detail: dict[str, Any] = {
        "step": step,
        "total": total,
        "percent": round(100.0 * step / total, 1),
    }
    if progress.message:
        detail["message"] = progress.message[:200]
    return detail


class LeaseKeeper:
    """One thread that keeps the leases of every job a worker runs (see the module docstring).

    It runs while the worker holds a job and ends when it holds none; :meth:`add` starts it
    again. A store that does not answer is logged and tried again on the next turn (a lease
    outlives two missed heartbeats)."""

    def __init__(
        self, store: LeaseStore, owner: str, settings: Settings, events_signal: Signal
    ) -> None:
        self.store = store
        self.owner = owner
        self.settings = settings
        self.events_signal = events_signal
        self._held: dict[str, _Running] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.deliveries_signal: Signal | None = None  # woken when progress is called back
        self.turns = 0  # renewals so far (tests and the bench read it)

    def add(self, state: _Running) -> None:
        """Keep ``state``'s lease from now on; a state of the same job held before (its lease
        ran out and this worker claimed the job again) is lost: its result is dropped."""
        with self._cond:
            before = self._held.get(state.job_id)
            if before is not None:
                before.lost = True
            self._held[state.job_id] = state
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"genhook-leases-{self.owner}", daemon=True
                )
                self._thread.start()

    def remove(self, state: _Running) -> None:
        """Stop keeping ``state``'s lease (the job ended or was lost)."""
        with self._cond:
            if self._held.get(state.job_id) is state:
                del self._held[state.job_id]

    def give_up(self) -> list[str]:
        """Stop keeping every lease now, each job's result to be dropped (the worker hands the
        jobs back); the ids of the jobs it held."""
        with self._cond:
            states, self._held = list(self._held.values()), {}
        for state in states:
            state.lost = True  # the job's next cancel check stops it; its result is not recorded
        return [state.job_id for state in states]

    @property
    def held(self) -> int:
        """Jobs whose leases it keeps now."""
        with self._cond:
            return len(self._held)

    def progress(self, state: _Running, progress: Progress) -> None:
        """A generation's progress: written on the keeper's next turn, at most one per job every
        :data:`PROGRESS_SECONDS` (a newer one replaces one still waiting)."""
        detail = progress_detail(progress)
        with self._cond:
            if detail != state.written:
                state.pending = detail

    def flush(self, state: _Running) -> None:
        """Write ``state``'s waiting progress now (a job about to end: its last progress comes
        before its end)."""
        with self._cond:
            detail, state.pending = state.pending, None
        if detail is not None and not state.lost:
            self._write_progress([(state, detail)])

    def _write_progress(self, items: list[tuple[_Running, dict[str, Any]]]) -> None:
        try:
            self.store.record_progress(self.owner, [(s.job_id, d) for s, d in items])
        except Exception as exc:  # progress is advisory
            log_failure(log, f"progress of {len(items)} jobs", exc)
            return
        now = time.monotonic()
        with self._cond:
            for state, detail in items:
                state.written, state.written_at = detail, now
        self.events_signal.notify()
        if self.deliveries_signal is not None and any(s.calls_back for s, _ in items):
            self.deliveries_signal.notify()  # a job.progress callback may be in the outbox

    def _run(self) -> None:
        beat = self.settings.heartbeat_seconds
        tick = min(CANCEL_POLL_SECONDS, beat)
        next_beat = time.monotonic() + beat
        while True:
            with self._cond:
                if not self._held:
                    self._thread = None
                    return
                self._cond.wait(tick)
                states = list(self._held.values())
            if not states:
                continue
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + beat
                    self._renew(states)
                else:
                    asked = self.store.cancels_requested([s.job_id for s in states])
                    for state in states:
                        state.cancel = state.cancel or state.job_id in asked
            except Exception as exc:  # keep going; the leases outlive a missed turn
                log_failure(log, f"leases of {self.owner}", exc)
            self._due_progress(states, now)

    def _renew(self, states: list[_Running]) -> None:
        owned = self.store.renew_leases(
            self.owner, [s.job_id for s in states], self.settings.lease_seconds
        )
        self.turns += 1
        for state in states:
            if state.job_id in owned:
                state.cancel = state.cancel or owned[state.job_id]
            else:
                state.lost = True

    def _due_progress(self, states: list[_Running], now: float) -> None:
        due: list[tuple[_Running, dict[str, Any]]] = []
        with self._cond:
            for state in states:
                if state.pending is not None and now - state.written_at >= PROGRESS_SECONDS:
                    due.append((state, state.pending))
                    state.pending = None
        if due:
            self._write_progress(due)


@dataclass
class _Ending:
    """A job's end waiting in the :class:`Finisher` for its transaction."""

    ending: Finish
    done: bool = False
    status: JobStatus | None = None
    error: Exception | None = None


@dataclass
class _Attempted:
    """A job's attempt that ran with its lease kept, to be recorded."""

    job: Job
    outcome: Outcome
    work: float  # this attempt's working time
    total: float  # every attempt's
    assets: Staging


class Finisher:
    """Group commit of a worker's job ends: the job threads that end at about the same time
    share one finishing transaction (:meth:`~genhook.store.jobs.JobStore.finish_many`), one
    commit for all, rather than one each.

    No thread of its own and no wait for company: a job thread that finds no transaction
    under way commits everything waiting, its own end included (at most :data:`FINISH_BATCH`);
    the ones that end while it commits wait for it and go in the next. Each end is as
    :meth:`~genhook.store.jobs.JobStore.finish` makes it alone (its own lease checked: a job
    whose lease was lost is skipped, and gets None). When a shared transaction fails, nothing
    of it was kept and each end is tried again alone, so one job's failure costs the others
    nothing; a job whose end still fails stays running until its lease runs out, and is
    retried (its thread gets the error). ``on_batch`` hears the statuses of each batch (the
    worker's wake-ups)."""

    def __init__(
        self,
        store: LeaseStore,
        on_batch: Callable[[list[JobStatus | None]], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._waiting: list[_Ending] = []
        self._busy = False
        self.batches = 0  # transactions so far (tests and the bench read them)
        self.ended = 0  # ends recorded in them

    def finish(self, ending: Finish) -> JobStatus | None:
        """Record ``ending`` (with the others waiting); its status, as ``finish`` returns it."""
        (mine,) = self.finish_all([ending])
        if mine.error is not None:
            raise mine.error
        return mine.status

    def finish_all(self, endings: Sequence[Finish]) -> list[_Ending]:
        """Record ``endings`` (with the others waiting, in as few transactions as fit); each
        one's status, or the error that kept it from being recorded."""
        items = [_Ending(ending) for ending in endings]
        with self._cond:
            self._waiting.extend(items)
            while not all(item.done for item in items):
                if self._busy:
                    self._cond.wait()
                    continue
                batch = self._waiting[:FINISH_BATCH]
                del self._waiting[:FINISH_BATCH]
                self._busy = True
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    for item in batch:
                        item.done = True
                    self._cond.notify_all()
        return items

    def _commit(self, batch: list[_Ending]) -> None:
        try:
            statuses = self.store.finish_many([item.ending for item in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            statuses = []
            for item in batch:  # each alone: one job's failure is not the others'
                try:
                    statuses.append(self.store.finish_many([item.ending])[0])
                except Exception as alone:
                    item.error = alone
                    statuses.append(None)
        for item, status in zip(batch, statuses, strict=True):
            item.status = status
        self.batches += 1
        self.ended += sum(status is not None for status in statuses)
        try:
            self.on_batch(statuses)
        except Exception as exc:  # a wake-up is advisory
            log_failure(log, "wake-ups after finishing", exc)


class Worker:
    """One claiming loop running up to ``concurrency`` jobs at once, each in a thread of its
    own; its leases kept by one :class:`LeaseKeeper`. Run one per process."""

    def __init__(
        self,
        store: LeaseStore,
        engine: Engine,
        storage: AssetStorage,
        settings: Settings,
        *,
        jobs_signal: Signal | None = None,
        deliveries_signal: Signal | None = None,
        events_signal: Signal | None = None,
        name: str | None = None,
        concurrency: int = 1,
    ) -> None:
        self.store = store
        self.engine = engine
        self.storage = storage
        self.settings = settings
        self.jobs_signal = jobs_signal or Signal()
        self.deliveries_signal = deliveries_signal or Signal()
        self.events_signal = events_signal or Signal()
        self.retry_policy = job_policy(settings.retry_schedule)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-8:]}"
        self.concurrency = max(1, concurrency)
        self.leases = LeaseKeeper(store, self.name, settings, self.events_signal)
        self.leases.deliveries_signal = self.deliveries_signal
        self._swept_at = float("-inf")  # time.monotonic() of the last deadline sweep
        self.finisher = Finisher(store, self._finished)
        # the job threads: a pool of at most ``concurrency``, each one job at a time
        self._room = threading.Condition()
        self._in_flight = 0  # jobs started and not ended
        self._idle = 0  # pool threads waiting for a job
        self._threads = 0
        self._work: queue.SimpleQueue[tuple[Job, _Running] | None] = queue.SimpleQueue()

    def run(self, stop: threading.Event) -> None:
        """Claim and run jobs, up to ``concurrency`` at once, until ``stop`` is set; then wait
        for the jobs in flight to end."""
        gate = self.engine.gate
        poll = self.settings.poll_seconds
        half = self.concurrency // 2
        full = False  # the last claim filled every free slot: more jobs are likely waiting
        while not stop.is_set():
            self._sweep_deadlines()
            with self._room:
                free = self.concurrency - self._in_flight
                if free <= 0:
                    self._room.wait(poll)
                    continue
                if full and free < half:  # gather slots for a batch, briefly
                    self._room.wait_for(
                        lambda: self.concurrency - self._in_flight >= half, GATHER_SECONDS
                    )
                    free = self.concurrency - self._in_flight
            if not gate.wait_room(poll):  # CPU-bound steps queue: claim nothing more now
                continue
            seen = self.jobs_signal.generation
            try:  # as many jobs as it has free slots, in one transaction
                claimed = self.store.claim_many(self.name, self.settings.lease_seconds, free)
                states = self._first_checks(claimed)
            except Exception as exc:  # keep the loop alive
                log_failure(log, f"worker {self.name}", exc)
                stop.wait(poll)
                continue
            full = len(claimed) == free
            if not claimed:
                self._probe_backends()
                self.jobs_signal.wait(poll, seen=seen)
                continue
            if any(announces_start(job) for job in claimed):
                self.deliveries_signal.notify()  # its job.started is in the outbox
            inline: list[tuple[Job, _Running]] = []
            for job, state in zip(claimed, states, strict=True):
                if self._inline(job):
                    inline.append((job, state))
                else:
                    self._start(job, state)
            if len(inline) < len(claimed):
                self.events_signal.notify()  # their running events
            if inline:  # a millisecond or two: one wake-up after, for their running and end events
                self._run_inline(inline)
        with self._room:
            self._room.wait_for(lambda: self._in_flight == 0)
            threads, self._threads, self._idle = self._threads, 0, 0
        for _ in range(threads):
            self._work.put(None)  # each pool thread ends at its next get

    def _first_checks(self, claimed: Sequence[Job]) -> list[_Running]:
        """The claimed jobs' states, each with its first cancel check done by the claim's own
        read of the flag: a cancel recorded before the claim either ended the job in the queue
        or flagged it running (a job handed back or taken over carries the flag), so it stops
        the job before any step. One recorded after the claim is seen by the lease keeper's
        next read (every :data:`CANCEL_POLL_SECONDS`), as during any later step."""
        states = [self._state(job) for job in claimed]
        for state in states:
            state.asked = True
        return states

    @staticmethod
    def _state(job: Job) -> _Running:
        return _Running(
            job.id,
            cancel=job.cancel_requested,
            calls_back=job.callback_url is not None and asked(job.envelope, PROGRESS),
        )

    def _inline(self, job: Job) -> bool:
        """Does ``job`` run in the claiming loop itself: a workflow whose every step is quick
        local work (:meth:`~genhook.engine.Engine.runs_inline`), not refused at once?"""
        workflow = self.engine.workflows.get(job.workflow_id)
        return job.refusal is None and workflow is not None and self.engine.runs_inline(workflow)

    def _run_inline(self, claimed: Sequence[tuple[Job, _Running]]) -> None:
        """Run quick jobs one after another in this thread (no thread hop for a job that waits
        on nothing), then record them together: their ends in one finishing transaction."""
        with self._room:
            self._in_flight += len(claimed)
        attempted: list[_Attempted] = []
        try:
            for job, state in claimed:
                try:
                    if (done := self._attempt(job, state)) is not None:
                        attempted.append(done)
                except Exception as exc:  # its lease runs out and another worker retries it
                    log_failure(log, f"job {job.id} on {self.name}", exc)
            if attempted:
                self._conclude(attempted)
        except Exception as exc:
            log_failure(log, f"jobs on {self.name}", exc)
        finally:
            with self._room:
                self._in_flight -= len(claimed)
                self._room.notify_all()

    def _start(self, job: Job, state: _Running) -> None:
        """Run a claimed job in a thread of the pool (a new one when none is idle)."""
        with self._room:
            self._in_flight += 1
            spawn = self._idle == 0
            if spawn:
                self._threads += 1
            else:
                self._idle -= 1  # the job is that thread's
        self._work.put((job, state))
        if spawn:
            threading.Thread(target=self._serve, name="genhook-job", daemon=True).start()

    def _serve(self) -> None:
        """A pool thread: run the jobs it is given, one after another, until told to end."""
        while (item := self._work.get()) is not None:
            self._run_claimed(*item)

    def _run_claimed(self, job: Job, state: _Running) -> None:
        try:
            self.process(job, state)
        except Exception as exc:  # the job's lease will run out and another worker retries
            log_failure(log, f"job {job.id} on {self.name}", exc)
        finally:
            with self._room:
                self._in_flight -= 1
                self._idle += 1
                self._room.notify_all()

    def _finished(self, statuses: list[JobStatus | None]) -> None:
        """After a finishing transaction: the jobs' end events (one wake-up for the whole
        batch; the outbox's is :meth:`_conclude`'s, where something was outboxed)."""
        del statuses
        self.events_signal.notify()

    def hand_back(self) -> list[str]:
        """Give back every job still running here (a shutdown past its bound): another worker
        may claim each at once, the attempt not counted (see ``Store.hand_back``); this
        worker's threads stop at their next cancel check and record nothing. The ids given
        back."""
        held = self.leases.give_up()
        if not held:
            return []
        handed = self.store.hand_back(self.name, held)
        log.warning(
            "worker %s: handed back %d running job(s) at shutdown: %s",
            self.name,
            len(handed),
            ", ".join(handed) or "none still held",
        )
        self.jobs_signal.notify()
        return handed

    @property
    def in_flight(self) -> int:
        """Jobs running now in this worker's threads."""
        with self._room:
            return self._in_flight

    def _sweep_deadlines(self) -> None:
        """Every :data:`~genhook.store.expiry.SWEEP_SECONDS`, end the waiting jobs past their
        trigger's deadline (``expired``; see :mod:`genhook.store.expiry`), and wake the outbox
        for their callbacks."""
        now = time.monotonic()
        if now - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = now
        try:
            if self.store.sweep_deadlines():
                self.deliveries_signal.notify()
                self.events_signal.notify()
        except Exception as exc:  # the next sweep tries again
            log_failure(log, f"deadline sweep by {self.name}", exc)

    def _probe_backends(self) -> None:
        """Probe a backend whose breaker is open when its probe is due (one worker of all
        processes takes each probe); a ready answer closes it and frees its held jobs."""
        try:
            name = self.store.take_probe()
            if name is None:
                return
            found = self.engine.backends.find(name)
            status = probe(found) if found is not None else BackendStatus(False, "not installed")
            self.store.probe_result(name, status.ready, status.detail)
            if status.ready:
                log.warning("backend %s answers its probe again: its jobs resume", name)
                self.jobs_signal.notify()
        except Exception as exc:
            log_failure(log, f"probe by {self.name}", exc)

    def run_once(self) -> bool:
        """Claim and run one job; False when none was due."""
        job = self.store.claim(self.name, self.settings.lease_seconds)
        if job is None:
            return False
        if announces_start(job):
            self.deliveries_signal.notify()
        self.events_signal.notify()
        try:
            self.process(job)
        finally:
            self.events_signal.notify()
        return True

    def process(self, job: Job, state: _Running | None = None) -> None:
        """Run a claimed job to its next state: succeeded, failed, cancelled or retrying
        (``state``: its first cancel check done already, by the claiming loop).

        Working time is measured on the store's clock from the claim (``job.claimed_at``)
        to the end. The attempt's assets are staged under its own name and published only in
        the finishing transaction, so a worker that lost its lease never touches what the
        lease holder delivered.
        """
        attempted = self._attempt(job, state)
        if attempted is not None:
            self._conclude([attempted])

    def _attempt(self, job: Job, state: _Running | None) -> _Attempted | None:
        """:meth:`process` up to the record: the run, with the job's lease kept; None when
        the lease was lost meanwhile (its result dropped, its assets discarded)."""
        state = state or self._state(job)
        clock = self.store.clock
        claimed_at = job.claimed_at

        def worked() -> float:
            return job.processing_seconds + clock.now() - claimed_at

        assets = self.storage.attempt(job.id, job.attempts)
        self.leases.add(state)
        try:
            outcome = self._execute(job, state, assets, worked)
            self.leases.flush(state)
        except BaseException:
            assets.discard()
            raise
        finally:
            self.leases.remove(state)
        if state.lost:
            log.warning("worker %s lost the lease on %s; dropping its result", self.name, job.id)
            assets.discard()
            return None
        return _Attempted(job, outcome, clock.now() - claimed_at, worked(), assets)

    def _conclude(self, attempted: Sequence[_Attempted]) -> None:
        """Record the attempts' outcomes: the retries and holds each in its transaction, the
        ends all together through the :class:`Finisher`; then discard what each staged and
        did not publish. One job's failure is logged (its lease runs out and it is retried)
        and is not the others'; a single attempt's failure is raised."""
        ends: list[tuple[_Attempted, Finish]] = []
        failures: list[tuple[Job, Exception]] = []
        try:
            for a in attempted:
                try:
                    ending = self._record(a.job, a.outcome, a.work, a.total, a.assets)
                except Exception as exc:
                    failures.append((a.job, exc))
                    continue
                if ending is not None:
                    ends.append((a, ending))
            if ends:
                done = self.finisher.finish_all([ending for _, ending in ends])
                if any(_outboxes(a, item.status) for (a, _), item in zip(ends, done, strict=True)):
                    self.deliveries_signal.notify()  # a payload, a batch's or an alert waits
                for (a, _), item in zip(ends, done, strict=True):
                    if item.error is not None:
                        failures.append((a.job, item.error))
        finally:
            for a in attempted:
                a.assets.discard()  # whatever was not published (a no-op after publishing)
        if len(attempted) == 1 and failures:
            raise failures[0][1]
        for job, failure in failures:
            log_failure(log, f"job {job.id} on {self.name}", failure)

    def _record(
        self,
        job: Job,
        outcome: Outcome,
        work: float,
        total: float,
        assets: Staging,
    ) -> Finish | None:
        """Store the attempt's outcome; if a cancel was recorded first, the job ends cancelled
        with the credits spent and the time worked, and its assets are not published. A retry
        or a hold is recorded here; an end is returned, for the :class:`Finisher`."""

        def cancelled_payload() -> dict[str, Any]:
            return _failure(
                replace(
                    job,
                    processing_seconds=total,
                    credit_cost=round(job.credit_cost + outcome.credit_cost, 6),
                ),
                GenhookError(ErrorCode.CANCELLED),
            ).to_json()

        error = outcome.error
        made = getattr(outcome, "made", None)
        delay = None
        spared = False
        if error is not None:
            retry = decide(
                self.retry_policy,
                job.counted_attempts,
                retryable=error.retryable,
                retry_after=error.retry_after,
            )
            delay = retry.delay
            if error.retryable and job.backend and error.code in BACKEND_FAULTS:
                state = self.store.backend_failed(job.backend, error)
                if state.state is BreakerState.OPEN:
                    # the backend is down, not the job: wait for the probe, spend no retry
                    delay = max(0.0, (state.probe_at or 0.0) - self.store.clock.now())
                    spared = True
        if error is not None and delay is not None:
            ended = self.store.retry(
                job.id,
                self.name,
                error=error,
                delay=delay,
                credit_cost=outcome.credit_cost,
                work_seconds=work,
                cancelled=cancelled_payload(),
                made=made,
                spared=spared,
            )
            if ended is JobStatus.RETRYING:
                metrics.retry(job.service_id, job.workflow_id)
            if ended is JobStatus.CANCELLED:
                self.deliveries_signal.notify()
            self.events_signal.notify()
            return None
        result = outcome.result
        if error is None and result is not None and needs_review(result):
            # a QC policy of on_fail: review: held for a person, not delivered (genhook.review)
            held = self.store.hold_for_review(
                job.id,
                self.name,
                payload=outcome.payload.to_json(),
                quality=quality_reports(result),
                credit_cost=outcome.credit_cost,
                work_seconds=work,
                cancelled=cancelled_payload(),
                publish=assets.publish,
                made=made,
            )
            if held is JobStatus.CANCELLED:
                self.deliveries_signal.notify()
            self.events_signal.notify()
            return None
        if error is None:
            status = JobStatus.SUCCEEDED
        elif error.code is ErrorCode.CANCELLED:
            status = JobStatus.CANCELLED
        else:
            status = JobStatus.FAILED
        # with the other jobs ending now, in one transaction (its wake-ups: Worker._finished)
        return Finish(
            job.id,
            self.name,
            status=status,
            payload=outcome.payload.to_json(),
            error=error,
            credit_cost=outcome.credit_cost,
            work_seconds=work,
            cancelled=cancelled_payload,  # built only if a cancel was asked first
            publish=assets.publish if status is JobStatus.SUCCEEDED else None,
            made=made,
        )

    def _execute(
        self,
        job: Job,
        state: _Running,
        assets: Staging,
        worked: Callable[[], float],
    ) -> Outcome:
        workflow = self.engine.workflows.get(job.workflow_id)
        if workflow is None:
            return self._refuse(
                job,
                worked,
                GenhookError(
                    ErrorCode.UNKNOWN_WORKFLOW,
                    f"workflow {job.workflow_id!r} is no longer installed",
                ),
            )
        if job.refusal is not None:
            return self._refuse(job, worked, GenhookError(job.refusal))
        if job.counted_attempts > self.retry_policy.max_attempts:
            # earlier attempts were all lost with their workers: a job that kills its worker
            # every time must end, like any other failure, once the schedule is spent
            return self._refuse(
                job,
                worked,
                GenhookError(
                    ErrorCode.WORKER_LOST,
                    f"every one of {job.attempts - 1} attempts lost its worker",
                ),
            )

        try:
            recent = self._recent_hashes(job, workflow)
            # a job a reviewer rejected: its notes go into the prompts (read only for a
            # workflow that holds for review, on an attempt after the first)
            wanted = job.attempts > 1 and wants_review(workflow)
            notes = self.store.review_notes(job.id) if wanted else []
        except GenhookError as exc:  # the store unavailable: retried like any transient failure
            return self._refuse(job, worked, exc)

        def is_cancelled() -> bool:
            # the lease keeper asks for every job 4 times a second, in one read; the job asks
            # once itself first, so a cancel recorded before the claim stops it before any step
            if state.cancel or state.lost:
                return True
            if not state.asked:
                state.asked = True
                state.cancel = self.store.cancel_requested(job.id)
            return state.cancel

        return self.engine.execute(
            workflow,
            job.input,
            assets,
            job_id=job.id,
            attempts=job.attempts,
            is_cancelled=is_cancelled,
            worked=worked,
            credit_before=job.credit_cost,
            sandbox=job.sandbox,
            on_progress=lambda progress: self.leases.progress(state, progress),
            # text nodes only (Engine.runs_inline) use no work folder: the staging folder is
            # then never named, and the attempt's publish and discard touch no file
            workdir=None if self.engine.runs_inline(workflow) else assets.folder / WORKDIR,
            recent_hashes=recent,
            review_notes=notes,
            client_metadata=job.client_metadata,
        )

    def _recent_hashes(self, job: Job, workflow: Workflow) -> list[RecentHash]:
        """The output hashes of the last :data:`RECENT_JOBS` succeeded jobs of this job's
        service, workflow and external id (newest first, this job's own earlier attempts never
        among them), read only for a workflow whose quality check looks for near duplicates."""
        if job.external_id is None or not wants_recent_hashes(workflow):
            return []
        found = self.store.recent_outputs(
            job.service_id, job.workflow_id, job.external_id, exclude=job.id, limit=RECENT_JOBS
        )
        return output_hashes(found)

    def _refuse(self, job: Job, worked: Callable[[], float], error: GenhookError) -> Outcome:
        """End a claimed job without running it."""
        return Outcome(_failure(replace(job, processing_seconds=worked()), error), None, error)


def _outboxes(attempted: _Attempted, status: JobStatus | None) -> bool:
    """Did recording this end put something in the outbox: its payload (a callback), its
    batch's callback (its last job), an alert of its service's budget (credits booked)?"""
    job = attempted.job
    return status is not None and bool(
        job.callback_url or job.batch_id or attempted.outcome.credit_cost
    )


def wants_recent_hashes(workflow: Workflow) -> bool:
    """Whether a quality_check node of ``workflow`` turns the near_duplicate check on."""
    return any(
        spec.kind == "quality_check" and spec.params.get("near_duplicate") is not None
        for spec in workflow.nodes.values()
    )


def output_hashes(payloads: Sequence[tuple[str, Mapping[str, Any]]]) -> list[RecentHash]:
    """Each (job id, stored payload)'s outputs' valid ``phash``, in order, without repeats
    (every output cut from one image carries its hash)."""
    found = (
        RecentHash(job_id, output["phash"])
        for job_id, payload in payloads
        for output in payload.get("outputs") or ()
        if isinstance(output, Mapping) and similarity.valid(output.get("phash"))
    )
    return list(dict.fromkeys(found))


def _failure(job: Job, error: GenhookError) -> CompletionPayload:
    """The failed payload of a claimed job that ends without a result (refused, cancelled)."""
    return job_failure_payload(job, error)


def apply_backend_limits(store: Any, engine: Engine) -> dict[str, int]:
    """Each backend's declared ``max_concurrency`` becomes its limit of jobs running at once
    (across every worker) where ``GENHOOK_BACKEND_CONCURRENCY`` names none for it; returns
    the limits in force."""
    limits = {**backend_limits(engine.backends), **dict(store.backend_concurrency)}
    store.backend_concurrency = limits
    return limits
