"""The worker: claim a job with a lease, heartbeat while running it, record what happened.

A worker learns of new jobs at once through an in-process signal (and polls every
``GENHOOK_POLL_SECONDS`` for jobs inserted by other processes and for retries falling due).
While a job runs, a heartbeat renews the lease every ``GENHOOK_HEARTBEAT_SECONDS``; a worker that
dies stops renewing, and once the lease (``GENHOOK_LEASE_SECONDS``) runs out another worker takes
the job over. Only the lease holder can end a job, so a job completes, and is delivered, once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from genhook import metrics
from genhook.backends.base import BackendStatus, probe
from genhook.config import Settings
from genhook.contract.completion import CompletionPayload, job_failure_payload
from genhook.engine import Engine, Outcome
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import BreakerState
from genhook.ids import new_id
from genhook.retry import decide, job_policy
from genhook.signals import Signal
from genhook.status import JobStatus
from genhook.storage import AttemptAssets, LocalStorage
from genhook.store.db import describe
from genhook.store.ports import WorkerStore
from genhook.store.records import Job

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


@dataclass
class _Running:
    job_id: str
    lost: bool = False
    cancel: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class Worker:
    """One claim / run / record loop. Run several, in threads or processes."""

    def __init__(
        self,
        store: WorkerStore,
        engine: Engine,
        storage: LocalStorage,
        settings: Settings,
        *,
        jobs_signal: Signal | None = None,
        deliveries_signal: Signal | None = None,
        events_signal: Signal | None = None,
        name: str | None = None,
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

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set."""
        while not stop.is_set():
            seen = self.jobs_signal.generation
            try:
                worked = self.run_once()
            except Exception as exc:  # keep the loop alive; the job's lease will run out
                _log_failure(f"worker {self.name}", exc)
                worked = False
                stop.wait(self.settings.poll_seconds)
            if not worked:
                self._probe_backends()
                self.jobs_signal.wait(self.settings.poll_seconds, seen=seen)

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
            _log_failure(f"probe by {self.name}", exc)

    def run_once(self) -> bool:
        """Claim and run one job; False when none was due."""
        job = self.store.claim(self.name, self.settings.lease_seconds)
        if job is None:
            return False
        self.events_signal.notify()
        try:
            self.process(job)
        finally:
            self.events_signal.notify()
        return True

    def process(self, job: Job) -> None:
        """Run a claimed job to its next state: succeeded, failed, cancelled or retrying.

        Working time is measured on the store's clock from the claim (``job.claimed_at``)
        to the end. The attempt's assets are staged under its own name and published only in
        the finishing transaction, so a worker that lost its lease never touches what the
        lease holder delivered.
        """
        state = _Running(job.id)
        clock = self.store.clock
        claimed_at = job.claimed_at

        def worked() -> float:
            return job.processing_seconds + clock.now() - claimed_at

        assets = self.storage.attempt(job.id, job.attempts)
        beat = threading.Thread(target=self._heartbeat, args=(state,), daemon=True)
        beat.start()
        try:
            outcome = self._execute(job, state, assets, worked)
        finally:
            state.done.set()
            beat.join()
        work = clock.now() - claimed_at
        try:
            if state.lost:
                log.warning(
                    "worker %s lost the lease on %s; dropping its result", self.name, job.id
                )
                return
            self._record(job, outcome, work, worked(), assets)
        finally:
            assets.discard()  # whatever was not published (a no-op after publishing)

    def _record(
        self,
        job: Job,
        outcome: Outcome,
        work: float,
        total: float,
        assets: AttemptAssets,
    ) -> None:
        """Store the attempt's outcome; if a cancel was recorded first, the job ends cancelled
        with the credits spent and the time worked, and its assets are not published."""
        cancelled = _failure(
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
                cancelled=cancelled,
                made=made,
                spared=spared,
            )
            if ended is JobStatus.RETRYING:
                metrics.retry(job.service_id, job.workflow_id)
            if ended is JobStatus.CANCELLED:
                self.deliveries_signal.notify()
            return
        if error is None:
            status = JobStatus.SUCCEEDED
        elif error.code is ErrorCode.CANCELLED:
            status = JobStatus.CANCELLED
        else:
            status = JobStatus.FAILED
        if self.store.finish(
            job.id,
            self.name,
            status=status,
            payload=outcome.payload.to_json(),
            error=error,
            credit_cost=outcome.credit_cost,
            work_seconds=work,
            cancelled=cancelled,
            publish=assets.publish if status is JobStatus.SUCCEEDED else None,
            made=made,
        ):
            self.deliveries_signal.notify()

    def _execute(
        self,
        job: Job,
        state: _Running,
        assets: AttemptAssets,
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
        checked = [0.0]

        def is_cancelled() -> bool:
            # the heartbeat learns of cancellation too, but asking (at most 4 times a second)
            # lets a cancel land between two nodes instead of at the next heartbeat
            if state.cancel or state.lost:
                return True
            now = time.monotonic()
            if now - checked[0] >= 0.25:
                checked[0] = now
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
        )

    def _refuse(self, job: Job, worked: Callable[[], float], error: GenhookError) -> Outcome:
        """End a claimed job without running it."""
        return Outcome(_failure(replace(job, processing_seconds=worked()), error), None, error)

    def _heartbeat(self, state: _Running) -> None:
        while not state.done.wait(self.settings.heartbeat_seconds):
            try:
                lease = self.store.heartbeat(state.job_id, self.name, self.settings.lease_seconds)
            except Exception as exc:
                _log_failure(f"heartbeat of {state.job_id}", exc)
                continue
            state.lost = not lease.owned
            state.cancel = lease.cancel_requested
            if state.lost:
                return


def _failure(job: Job, error: GenhookError) -> CompletionPayload:
    """The failed payload of a claimed job that ends without a result (refused, cancelled)."""
    return job_failure_payload(job, error)


def _log_failure(what: str, exc: Exception) -> None:
    """One line when the store is unavailable (an outage repeats it every poll), else the
    traceback of an unexpected error."""
    if isinstance(exc, GenhookError) and exc.code is ErrorCode.STORE_UNAVAILABLE:
        log.warning("%s: store unavailable: %s", what, describe(exc.__cause__ or exc))
    else:
        log.exception("%s: unexpected error", what, exc_info=exc)


def start_workers(count: int, factory: Any, stop: threading.Event) -> list[threading.Thread]:
    """Start ``count`` worker threads, each running ``factory(i).run(stop)``."""
    threads = []
    for i in range(count):
        worker = factory(i)
        thread = threading.Thread(target=worker.run, args=(stop,), name=f"genhook-worker-{i}")
        thread.daemon = True
        thread.start()
        threads.append(thread)
    return threads
