"""A model of the job lifecycle: a Hypothesis rule-based state machine drives the real store
(SQLite and PostgreSQL, a fresh database per run, an injected clock) through triggers of two
services (one with a daily budget, one with a rate limit) on three backends (a plain one, one
capped at one running job, one whose breaker opens), claims by two workers (one at a time and
in batches), heartbeats, lease expiries and takeovers, successes, failures, retries, cancels,
budget settlements and raises, the day's turn, backend failures and probes, the outbox's claims
and answers (delivered, failed and retried on the schedule, gone), replays and retention's
purges, in random order, and checks the invariants after every step:

- a job ends once: its terminal status and end time never change afterwards;
- an ended job never runs again (no claim returns it);
- a worker that lost its lease (another worker took the job over) changes nothing;
- a job's credits equal the sum of its attempts' credits, and it has at most one open attempt
  (none once ended);
- every ended job has exactly one completion message in the outbox, a job still going none;
  a replay resends that message (same id, same body), it makes no second one;
- no budget is overspent by more than the estimates of the attempts in flight across the UTC
  midnight (every attempt costs at most its estimate here), and the credit ledger holds what
  the attempts spent and what the running jobs reserved;
- held jobs become eligible exactly when their reason lifts: after every step a claim is tried
  in a transaction that is rolled back, and what it takes must be what the model predicts from
  its own account of the reasons (the rate window's slots and real starts, the retry's wait,
  the budget's day and raises, the breaker, the capped backend's running job, the services'
  turns and the priorities), nothing when every waiting job is held;
- the outbox: a claim takes what is due (or was abandoned) and nothing else; each answer moves
  the delivery as the retry schedule says, on the injected clock, and only for the attempt that
  holds the lease;
- a purge removes, oldest first and at most its batch, exactly the ended jobs past the cutoff
  that owe no callback, with their attempts, events, deliveries and attempt logs; a purged job
  never comes back, and nothing is left that names a job that is not there.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import next_utc_midnight, utc_day
from genhook.retry import decide, delivery_policy
from genhook.status import TERMINAL, DeliveryOutcome, DeliveryStatus, JobStatus
from genhook.store.admit import Admission
from genhook.store.schema import (
    attempts,
    credit_ledger,
    deliveries,
    delivery_attempts,
    events,
    jobs,
    services,
)
from genhook.store.store import Store
from tests.databases import database_url

COVERED: Counter[str] = Counter()
"""What the runs reached (the test checks that each path was taken at least once)."""
STEPS: Counter[str] = Counter()
"""Rules run and examples, for the figures."""
LEASE = 60.0
WORKERS = ("w1", "w2")
OWNERS = ("o1", "o2")  # two outboxes
BUDGET = 10.0
PROBE = 30.0  # the backend breaker's probe interval
DELIVERY_LEASE = 30.0
SCHEDULE = (5.0, 60.0)  # the callbacks' waits: three attempts
POLICY = delivery_policy(SCHEDULE)
PLAIN, CAPPED, ENGINE = "procedural", "capped", "engine"  # CAPPED: one job at a time
MOST_WAITING = 10  # below the claim's candidate budget (JobStore.CLAIM_CANDIDATES)
WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)
BURST_ITEM = st.tuples(  # a trigger's priority, backend and estimate
    st.integers(min_value=0, max_value=2),
    st.sampled_from([PLAIN, CAPPED, ENGINE]),
    st.sampled_from([3.0, 0.0, 1.0, 4.0]),
)


class DryRunStore(Store):
    """The real store; while ``dry`` is set, every write transaction is rolled back (the
    model's look at what a claim would take now, without taking it)."""

    dry = False

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        if not self.dry:
            with super()._write() as conn:
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            transaction = conn.begin()
            try:
                yield conn
            finally:
                transaction.rollback()


@dataclass
class MService:
    id: str
    name: str
    rate: tuple[int, float] | None = None
    budget: float | None = None
    on_budget: str = "hold"
    last_served: float = 0.0
    slots: list[float] = field(default_factory=list)  # admission slots, in acceptance order
    starts: list[float] = field(default_factory=list)  # first starts, in order


@dataclass
class MJob:
    id: str
    service: str
    priority: int
    backend: str
    estimate: float
    slot: float | None = None  # the rate window's start slot given at acceptance
    state: str = "waiting"  # waiting | running | ended | purged
    started: bool = False
    first_start: float | None = None
    retry_at: float | None = None  # after a retry: when it may run again
    holder: str | None = None
    lease_until: float = 0.0
    budget_held_until: float | None = None  # held for the budget (lifts at midnight, a raise)
    reserved: float = 0.0
    reserved_day: str | None = None
    ended: tuple[str, float | None] | None = None  # status and finished_at, once ended


@dataclass
class MDelivery:
    id: str
    job_id: str
    body: bytes
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    next_at: float | None = None
    holder: str | None = None
    lease_until: float = 0.0
    purged: bool = False


class Lifecycle(RuleBasedStateMachine):
    """The store under random operations; ``KIND`` is the database."""

    KIND = "sqlite"
    submitted = Bundle("submitted")

    def __init__(self) -> None:
        super().__init__()
        STEPS["examples"] += 1
        self.stack = ExitStack()
        tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        url = self.stack.enter_context(database_url(self.KIND, tmp))
        self.store = DryRunStore(url)
        self.stack.callback(self.store.close)
        self.store.migrate()
        self.clock = ManualClock(start=1_800_000_000.0 + 8 * 3600)  # 16:00 UTC: 8 h to midnight
        self.store.clock = self.clock
        self.store.backend_concurrency = {CAPPED: 1}
        self.store.backend_breaker_failures = 2
        self.store.backend_probe_seconds = PROBE
        self.store.delivery_per_service = self.store.delivery_per_endpoint = 100
        self.store.endpoint_disable_seconds = 1e9  # the endpoint breaker is not modelled here
        self.services: dict[str, MService] = {}
        self.jobs: dict[str, MJob] = {}
        self.deliveries: dict[str, MDelivery] = {}
        self.in_flight: list[tuple[str, str, int]] = []  # (outbox, delivery, attempt number)
        self.breaker_open = False
        self.failures = 0
        self.probe_at = 0.0
        self.spent: defaultdict[tuple[str, str], float] = defaultdict(float)  # credits booked
        self.allowance: dict[tuple[str, str], float] = {}  # (service, day) -> budget + slack

    def teardown(self) -> None:
        self.stack.close()

    @initialize(
        target=submitted,
        on_budget=st.sampled_from(["hold", "fail"]),
        rate=st.sampled_from(["1/m", "2/m"]),
        first=st.lists(
            st.tuples(st.sampled_from(["budgeted", "paced"]), BURST_ITEM), min_size=2, max_size=4
        ),
    )
    def make_services(
        self, on_budget: str, rate: str, first: list[tuple[str, tuple[int, str, float]]]
    ) -> Any:
        """The two services, and a few jobs waiting to start with."""
        budgeted = self.store.create_service("budgeted", daily_budget=BUDGET, on_budget=on_budget)[
            "service_id"
        ]
        paced = self.store.create_service("paced", rate_limit=rate)["service_id"]
        self.services["budgeted"] = MService(budgeted, "budgeted", None, BUDGET, on_budget)
        self.services["paced"] = MService(paced, "paced", (int(rate[0]), 60.0))
        self.allowance[(budgeted, self._day())] = BUDGET
        return multiple(*(self._trigger(service, *one) for service, one in first))

    # -- the model's account ---------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.now()

    def _day(self) -> str:
        return utc_day(self._now())

    def _service_of(self, job: MJob) -> MService:
        return self.services[job.service]

    def _committed(self, svc: MService) -> float:
        day = self._day()
        reserved = sum(
            j.reserved
            for j in self.jobs.values()
            if j.service == svc.name and j.reserved_day == day
        )
        return self.spent.get((svc.id, day), 0.0) + reserved

    def _fits(self, svc: MService, estimate: float) -> bool:
        """The budget covers the estimate (one of 0: while anything is left)."""
        assert svc.budget is not None
        committed = self._committed(svc)
        if estimate > 0:
            return committed + estimate <= svc.budget + 1e-9
        return committed < svc.budget

    def _running(self, backend: str) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "running" and j.backend == backend)

    def _window_full(self, svc: MService) -> float | None:
        """When the rate window frees for a new start (None: it has room now)."""
        if svc.rate is None:
            return None
        count, period = svc.rate
        if len(svc.starts) >= count and svc.starts[-count] > self._now() - period:
            return svc.starts[-count] + period
        return None

    def _reasons(self, job: MJob) -> list[str]:
        """Why a waiting job may not start now, by the model's own account (none: it may)."""
        now, svc, why = self._now(), self._service_of(job), []
        if job.retry_at is not None:
            if now < job.retry_at:
                why.append("retry wait")
        elif job.slot is not None and now < job.slot:
            why.append("rate slot")
        if not job.started and self._window_full(svc) is not None:
            why.append("rate window")
        if job.backend == ENGINE and self.breaker_open:
            why.append("breaker")
        if job.backend == CAPPED and self._running(CAPPED) >= 1:
            why.append("capped")
        if svc.budget is not None:
            if job.budget_held_until is not None and now < job.budget_held_until:
                why.append("budget held")
            elif not self._fits(svc, job.estimate) and svc.on_budget == "hold":
                why.append("budget")
        return why

    def _expected(self, stalled: bool = True) -> tuple[str, set[str]]:
        """What a claim may take now: ``stalled`` (a lease that ran out first), ``fresh`` (the
        eligible jobs of the service whose turn it is, of its highest priority) or ``none``.
        ``stalled`` False: a later claim of a batch (it looks for a lease that ran out only
        once, first)."""
        now = self._now()
        running = [
            j
            for j in self.jobs.values()
            if stalled and j.state == "running" and j.lease_until < now
        ]
        if running:
            first = min(j.lease_until for j in running)
            return "stalled", {j.id for j in running if j.lease_until == first}
        eligible = []
        for j in self.jobs.values():
            if j.state != "waiting":
                continue
            why = self._reasons(j)
            if not why:
                eligible.append(j)
            else:
                for reason in why:
                    COVERED[f"held: {reason}"] += 1
        if not eligible:
            return "none", set()
        turn = min(
            {self._service_of(j).name for j in eligible},
            key=lambda n: (self.services[n].last_served, self.services[n].id),
        )
        top = max(j.priority for j in eligible if j.service == turn)
        return "fresh", {j.id for j in eligible if j.service == turn and j.priority == top}

    def _check_taken(self, job_id: str | None, expected: tuple[str, set[str]]) -> None:
        kind, ids = expected
        if job_id is None:
            assert kind == "none", f"nothing was claimed, yet the model expected {expected}"
            return
        assert job_id in self.jobs, "claimed a job nobody submitted"
        job = self.jobs[job_id]
        assert job.state not in ("ended", "purged"), f"an ended job ({job.ended}) ran again"
        assert kind != "none", f"claimed {job_id} while every job is held: {self._why(job)}"
        assert job_id in ids, (
            f"claimed {job_id} ({kind}), expected one of {sorted(ids)}: {self._why(job)}"
        )

    def _why(self, job: MJob) -> str:
        return f"{job} reasons={self._reasons(job)} now={self._now()}"

    def _snapshot_rows(self) -> dict[str, tuple[Any, Any]]:
        with self.store._read() as conn:
            return {
                r.id: (r.hold_reason, r.run_after)
                for r in conn.execute(
                    sa.select(jobs.c.id, jobs.c.hold_reason, jobs.c.run_after).where(
                        jobs.c.status.in_([str(s) for s in WAITING])
                    )
                )
            }

    def _take(self, job_id: str, worker: str, kind: str, refusal: ErrorCode | None) -> None:
        """The model's side of a claim of ``job_id``."""
        now, job = self._now(), self.jobs[job_id]
        svc = self._service_of(job)
        COVERED["takeover" if kind == "stalled" else "claim"] += 1
        job.state, job.holder, job.lease_until = "running", worker, now + LEASE
        if kind == "stalled":
            return
        svc.last_served = now
        if not job.started:
            job.started, job.first_start = True, now
            if svc.rate is not None:
                svc.starts.append(now)
        if svc.budget is not None and refusal is None and job.estimate > 0:
            job.reserved, job.reserved_day = job.estimate, self._day()

    def _check_holds(self, before: dict[str, tuple[Any, Any]], frames: list[Any]) -> None:
        """Every hold a claim wrote is one the model agrees with, at one of the claim's
        moments (``frames``: the rate window's next free time and whether the budget was
        full, before each job the claim took)."""
        after = self._snapshot_rows()
        for job_id, row in after.items():
            if before.get(job_id, row) == row:
                continue
            reason, run_after = row
            job = self.jobs[job_id]
            if reason == "rate_limit":
                COVERED["claim held: rate"] += 1
                assert any(f[0] == pytest.approx(run_after) for f in frames), (job, row, frames)
            elif reason == "budget":
                COVERED["claim held: budget"] += 1
                svc = self._service_of(job)
                assert svc.on_budget == "hold" and svc.budget is not None
                assert any(
                    (f[1] + job.estimate > svc.budget + 1e-9)
                    if job.estimate > 0
                    else f[1] >= svc.budget
                    for f in frames
                ), ("held for a budget that covers it", job, frames)
                assert run_after == pytest.approx(next_utc_midnight(self._now()))
                job.budget_held_until = run_after
            else:
                raise AssertionError(f"a claim changed {job_id}'s hold to {row} from {before}")

    def _frame(self) -> tuple[float | None, float]:
        """The claim's moment as the model sees it: when the paced service's rate window
        frees (None: it has room), and what the budgeted service has committed today."""
        return self._window_full(self.services["paced"]), self._committed(self.services["budgeted"])

    # -- jobs ------------------------------------------------------------------------------

    def _waiting(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "waiting")

    @precondition(lambda self: self._waiting() < MOST_WAITING)
    @rule(
        target=submitted,
        service=st.sampled_from(["budgeted", "paced"]),
        burst=st.lists(BURST_ITEM, min_size=1, max_size=3),
    )
    def trigger(self, service: str, burst: list[tuple[int, str, float]]) -> Any:
        """A burst of triggers of one service (each with its priority, backend, estimate)."""
        STEPS["trigger"] += 1
        return multiple(*(self._trigger(service, *one) for one in burst))

    def _trigger(self, service: str, priority: int, backend: str, estimate: float) -> str:
        svc, now = self.services[service], self._now()
        job, created = self.store.submit(
            service_id=svc.id,
            workflow_id="product-image",
            workflow_version=1,
            trigger={"product_name": "x"},
            external_id=None,
            callback_url="https://hooks.example.com/genhook",
            admission=Admission(priority=priority, estimate=estimate, backend=backend),
        )
        assert created
        model = self.jobs[job.id] = MJob(job.id, service, priority, backend, estimate)
        if svc.rate is not None:
            count, period = svc.rate
            back = svc.slots[-count] if len(svc.slots) >= count else None
            model.slot = now if back is None else max(now, back + period)
            svc.slots.append(model.slot)
        stored = self.store.job(job.id)
        assert stored is not None
        expected_hold = "rate_limit" if model.slot is not None and model.slot > now else None
        expected_at = model.slot if model.slot is not None else now
        if backend == ENGINE and self.breaker_open and expected_hold is None:
            expected_hold, expected_at = "backend_unavailable", max(expected_at, self.probe_at)
        assert (stored.hold_reason, stored.run_after) == (expected_hold, expected_at), stored
        if expected_hold == "rate_limit":
            COVERED["accepted: rate slot later"] += 1
        return job.id

    def _claim_one(self, worker: str) -> None:
        expected = self._expected()
        before, frames = self._snapshot_rows(), [self._frame()]
        job = self.store.claim(worker, LEASE)
        self._check_taken(None if job is None else job.id, expected)
        if job is not None:
            self._take(job.id, worker, expected[0], job.refusal)
        self._check_holds(before, frames)
        if job is not None and job.refusal is ErrorCode.BUDGET_EXCEEDED:
            COVERED["refused: budget"] += 1
            self._finish(job.id, worker, JobStatus.FAILED, 0.0)

    @rule(worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> None:
        STEPS["claim"] += 1
        self._claim_one(worker)

    @rule(worker=st.sampled_from(WORKERS), most=st.integers(min_value=2, max_value=4))
    def claim_many(self, worker: str, most: int) -> None:
        """A worker fills several slots in one transaction: each job it takes must be one a
        claim would have taken after the ones before it."""
        STEPS["claim_many"] += 1
        self._claim_batch(worker, most)

    def _claim_batch(self, worker: str, most: int) -> list[str]:
        """:meth:`claim_many`, checked; the jobs taken that run (a refused one is ended)."""
        first = self._expected()
        before, frames = self._snapshot_rows(), [self._frame()]
        taken = self.store.claim_many(worker, LEASE, most)
        assert len(taken) <= most
        if not taken:
            self._check_taken(None, first)
        for n, job in enumerate(taken):
            expected = self._expected(stalled=n == 0)
            self._check_taken(job.id, expected)
            self._take(job.id, worker, expected[0], job.refusal)
            frames.append(self._frame())
        if len(taken) > 1:
            COVERED["claimed a batch"] += 1
        self._check_holds(before, frames)
        running = []
        for job in taken:
            if job.refusal is ErrorCode.BUDGET_EXCEEDED:
                COVERED["refused: budget"] += 1
                self._finish(job.id, worker, JobStatus.FAILED, 0.0)
            else:
                running.append(job.id)
        return running

    @rule(
        worker=st.sampled_from(WORKERS),
        most=st.integers(min_value=1, max_value=3),
        then=st.lists(
            st.sampled_from(["run on", "succeed", "fail", "retry", "engine fault"]),
            min_size=3,
            max_size=3,
        ),
    )
    def work(self, worker: str, most: int, then: list[str]) -> None:
        """A worker's turn: it claims (a batch), then each job it took runs on, ends, is put
        back to retry, or its engine fails (a second outcome for the same jobs)."""
        STEPS["work"] += 1
        for job_id, what in zip(self._claim_batch(worker, most), then, strict=False):
            job = self.jobs[job_id]
            cost = min(1.0, job.estimate)
            if what == "succeed":
                self._finish(job_id, worker, JobStatus.SUCCEEDED, cost)
            elif what == "fail":
                self._finish(job_id, worker, JobStatus.FAILED, cost)
            elif what == "retry":
                self._retry(job, 5.0, cost, spared=False)
            elif what == "engine fault" and job.backend == ENGINE:
                self._engine_fault(job)

    def _held(self, pick: int, backend: str | None = None) -> MJob:
        held = sorted(
            (j for j in self.jobs.values() if j.holder is not None)
            if backend is None
            else (j for j in self.jobs.values() if j.holder is not None and j.backend == backend),
            key=lambda j: j.id,
        )
        return held[pick % len(held)]

    def _any_held(self) -> bool:
        return any(j.holder is not None for j in self.jobs.values())

    def _engine_held(self) -> bool:
        return any(j.holder is not None and j.backend == ENGINE for j in self.jobs.values())

    @precondition(_any_held)
    @rule(
        pick=st.integers(min_value=0, max_value=1000),
        holder=st.booleans(),
        succeeded=st.booleans(),
        cost=st.sampled_from([0.0, 0.5, 1.0, 3.0, 4.0]),
    )
    def finish(self, pick: int, holder: bool, succeeded: bool, cost: float) -> None:
        STEPS["finish"] += 1
        job = self._held(pick)
        assert job.holder is not None
        worker = job.holder if holder else next(w for w in WORKERS if w != job.holder)
        status = JobStatus.SUCCEEDED if succeeded else JobStatus.FAILED
        self._finish(job.id, worker, status, min(cost, job.estimate))

    @precondition(_any_held)
    @rule(pick=st.integers(min_value=0, max_value=1000), cost=st.sampled_from([0.0, 1.0, 3.0]))
    def succeed(self, pick: int, cost: float) -> None:
        """The holder ends its job successfully (the usual end)."""
        STEPS["finish"] += 1
        job = self._held(pick)
        assert job.holder is not None
        self._finish(job.id, job.holder, JobStatus.SUCCEEDED, min(cost, job.estimate))

    def _settled(self, job: MJob, cost: float) -> None:
        """An attempt of ``job`` ended with ``cost``: the reservation goes, the cost is booked
        today (an attempt reserved on an earlier day may overspend today by its estimate)."""
        svc, day = self._service_of(job), self._day()
        if svc.budget is not None and job.reserved_day not in (None, day):
            key = (svc.id, day)
            self.allowance[key] = self.allowance.get(key, svc.budget) + job.reserved
            COVERED["settled across midnight"] += 1
        if cost:
            self.spent[(svc.id, day)] += cost
        job.reserved, job.reserved_day = 0.0, None
        job.holder = None

    def _ended(self, job: MJob) -> None:
        stored = self.store.job(job.id)
        assert stored is not None and stored.status in TERMINAL, stored
        job.state, job.holder = "ended", None
        if job.ended is None:
            job.ended = (str(stored.status), stored.finished_at)

    @precondition(_any_held)
    @rule(
        pick=st.integers(min_value=0, max_value=1000),
        delay=st.sampled_from([0.0, 5.0, 120.0]),
        cost=st.sampled_from([0.0, 1.0, 3.0]),
    )
    def retry(self, pick: int, delay: float, cost: float) -> None:
        STEPS["retry"] += 1
        job = self._held(pick)
        self._retry(job, delay, min(cost, job.estimate), spared=False)

    def _retry(self, job: MJob, delay: float, cost: float, spared: bool) -> None:
        worker = job.holder
        assert worker is not None
        before = self._snapshot(job.id)
        result = self.store.retry(
            job.id,
            worker,
            error=GenhookError(ErrorCode.BACKEND_ERROR, "the engine hiccuped"),
            delay=delay,
            credit_cost=cost,
            work_seconds=1.0,
            cancelled=self._payload(job.id, "job.failed"),
            spared=spared,
        )
        if result is None:  # its lease ran out and someone took it: nothing may change
            assert self._snapshot(job.id) == before, "a worker without the lease wrote"
            return
        COVERED[f"retry {result}"] += 1
        self._settled(job, cost)
        if result is JobStatus.CANCELLED:
            self._ended(job)
        else:
            job.state, job.retry_at = "waiting", self._now() + delay

    @rule(job_id=submitted, chance=st.integers(min_value=0, max_value=2))
    def cancel(self, job_id: str, chance: int) -> None:
        if chance != 2:  # seldom (Hypothesis favours small numbers): most jobs should run
            return
        STEPS["cancel"] += 1
        job = self.jobs[job_id]
        if job.state == "purged":
            with pytest.raises(GenhookError) as info:
                self.store.cancel(job_id, lambda j: self._payload(j.id, "job.failed"))
            assert info.value.code is ErrorCode.NOT_FOUND
            COVERED["cancel purged"] += 1
            return
        status = self.store.cancel(job_id, lambda j: self._payload(j.id, "job.failed"))
        COVERED[f"cancel {status}"] += 1
        if job.state == "waiting":
            assert status is JobStatus.CANCELLED, (job, status)
            self._ended(job)
        elif job.state == "running":
            assert status is JobStatus.RUNNING, (job, status)
        else:
            assert job.ended is not None and str(status) == job.ended[0], (job, status)

    @precondition(_any_held)
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def heartbeat(self, pick: int) -> None:
        STEPS["heartbeat"] += 1
        job = self._held(pick)
        assert job.holder is not None
        lease = self.store.heartbeat(job.id, job.holder, LEASE)
        assert lease.owned, f"the holder of {job.id} lost a lease nobody took"
        job.lease_until = self._now() + LEASE

    @precondition(_any_held)
    @rule()
    def lease_runs_out(self) -> None:
        """Time passes beyond the leases of the running jobs (their workers went quiet)."""
        STEPS["lease_runs_out"] += 1
        self.clock.advance(LEASE + 1.0)

    @rule(
        seconds=st.sampled_from([1.0, 1.0, 5.0, 10.0, 20.0, LEASE + 1.0, 300.0]),
        probe_ok=st.booleans(),
    )
    def advance(self, seconds: float, probe_ok: bool) -> None:
        """Time passes; an idle worker probes an open backend whose probe is due."""
        STEPS["advance"] += 1
        self.clock.advance(seconds)
        if self.breaker_open:
            self._probe(probe_ok)

    @rule(budget=st.sampled_from([None, 6.0, 16.0, 10.0]), chance=st.integers(0, 3))
    def budget_day(self, budget: float | None, chance: int) -> None:
        """The UTC day turns (None), or an operator changes the daily budget: the jobs it
        held look again now."""
        if chance != 3:  # seldom: a day's budget should be spent first
            return
        if budget is None:
            self._next_day()
            return
        STEPS["change_budget"] += 1
        svc = self.services["budgeted"]
        self.store.update_service("budgeted", daily_budget=budget)
        svc.budget = budget
        key = (svc.id, self._day())
        self.allowance[key] = max(self.allowance.get(key, budget), budget)
        for job in self.jobs.values():
            if job.service == "budgeted" and job.budget_held_until is not None:
                job.budget_held_until = None
                COVERED["budget change lifts a hold"] += 1

    def _next_day(self) -> None:
        """The UTC day turns: the budget starts afresh and its holds lift."""
        STEPS["next_day"] += 1
        self.clock.advance(next_utc_midnight(self._now()) - self._now() + 1.0)
        budgeted = self.services["budgeted"]
        assert budgeted.budget is not None
        self.allowance.setdefault((budgeted.id, self._day()), budgeted.budget)
        COVERED["next day"] += 1

    # -- the backend breaker ---------------------------------------------------------------

    @precondition(_engine_held)
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def engine_fault(self, pick: int) -> None:
        """A running job's engine fails transiently: the worker tells the breaker, then puts
        the job back (when the breaker opened, spared, to wait for the probe)."""
        STEPS["engine_fault"] += 1
        self._engine_fault(self._held(pick, ENGINE))

    def _engine_fault(self, job: MJob) -> None:
        breaker = self.store.backend_failed(ENGINE, GenhookError(ErrorCode.BACKEND_ERROR))
        self.failures += 1
        if not self.breaker_open and self.failures >= 2:
            self.breaker_open, self.probe_at = True, self._now() + PROBE
            COVERED["breaker opened"] += 1
        assert (str(breaker.state) == "open") == self.breaker_open, breaker
        spared = self.breaker_open
        delay = max(0.0, self.probe_at - self._now()) if spared else 5.0
        self._retry(job, delay, 0.0, spared=spared)

    @precondition(lambda self: self.breaker_open)
    @rule(ok=st.booleans())
    def probe(self, ok: bool) -> None:
        self._probe(ok)

    def _probe(self, ok: bool) -> None:
        STEPS["probe"] += 1
        due = self.store.take_probe()
        if not (self.breaker_open and self.probe_at <= self._now()):
            assert due is None, (due, self.breaker_open, self.probe_at)
            return
        assert due == ENGINE
        self.probe_at = self._now() + PROBE
        self.store.probe_result(ENGINE, ok)
        if ok:
            self.breaker_open, self.failures = False, 0
            COVERED["breaker closed"] += 1

    # -- the outbox ------------------------------------------------------------------------

    @precondition(lambda self: bool(self.deliveries))
    @rule(owner=st.sampled_from(OWNERS), limit=st.integers(min_value=1, max_value=3))
    def claim_deliveries(self, owner: str, limit: int) -> None:
        STEPS["claim_deliveries"] += 1
        self._claim_deliveries(owner, limit)

    @precondition(lambda self: bool(self.deliveries))
    @rule(
        owner=st.sampled_from(OWNERS),
        limit=st.integers(min_value=1, max_value=3),
        answers=st.lists(
            st.sampled_from(
                [
                    DeliveryOutcome.DELIVERED,
                    DeliveryOutcome.RETRY,
                    DeliveryOutcome.RETRY,
                    DeliveryOutcome.GONE,
                    None,  # still in flight
                ]
            ),
            min_size=3,
            max_size=3,
        ),
    )
    def outbox_turn(self, owner: str, limit: int, answers: list[DeliveryOutcome | None]) -> None:
        """An outbox's turn: it claims what is due, and answers come back for some of it."""
        STEPS["outbox_turn"] += 1
        for (delivery_id, number), outcome in zip(
            self._claim_deliveries(owner, limit), answers, strict=False
        ):
            if outcome is not None:
                self.in_flight.remove((owner, delivery_id, number))
                self._answer(owner, delivery_id, number, outcome)

    def _claim_deliveries(self, owner: str, limit: int) -> list[tuple[str, int]]:
        """The outbox's claim, checked; each delivery leased with its attempt's number."""
        now = self._now()
        due = {
            d.id
            for d in self.deliveries.values()
            if not d.purged
            and (
                (d.status is DeliveryStatus.PENDING and d.next_at is not None and d.next_at <= now)
                or (d.status is DeliveryStatus.SENDING and d.lease_until <= now)
            )
        }
        got = self.store.claim_deliveries(limit, DELIVERY_LEASE, owner)
        assert {d.id for d in got} <= due, (sorted(d.id for d in got), sorted(due))
        assert len(got) == min(limit, len(due)), (len(got), limit, sorted(due))
        for leased in got:
            model = self.deliveries[leased.id]
            assert leased.attempt == model.attempts + 1 and leased.body == model.body
            if model.status is DeliveryStatus.SENDING:
                COVERED["delivery taken over"] += 1
            model.status, model.holder = DeliveryStatus.SENDING, owner
            model.lease_until, model.attempts = now + DELIVERY_LEASE, leased.attempt
            model.next_at = None
            self.in_flight.append((owner, leased.id, leased.attempt))
        return [(leased.id, leased.attempt) for leased in got]

    @precondition(lambda self: bool(self.in_flight))
    @rule(
        pick=st.integers(min_value=0, max_value=1000),
        outcome=st.sampled_from(
            [DeliveryOutcome.DELIVERED, DeliveryOutcome.RETRY, DeliveryOutcome.GONE]
        ),
    )
    def delivery_answer(self, pick: int, outcome: DeliveryOutcome) -> None:
        """An answer comes back and is recorded as the outbox records it: the schedule says
        when to try again (or not at all); only the attempt that holds the lease moves it."""
        STEPS["delivery_answer"] += 1
        owner, delivery_id, number = self.in_flight.pop(pick % len(self.in_flight))
        self._answer(owner, delivery_id, number, outcome)

    def _answer(self, owner: str, delivery_id: str, number: int, outcome: DeliveryOutcome) -> None:
        model, now = self.deliveries[delivery_id], self._now()
        next_at = None
        if outcome is not DeliveryOutcome.DELIVERED:
            again = decide(POLICY, number, retryable=outcome is DeliveryOutcome.RETRY)
            next_at = None if again.delay is None else now + again.delay
        moved = self.store.record_delivery(
            delivery_id,
            number=number,
            status_code={"delivered": 204, "retry": 500, "gone": 410}[str(outcome)],
            error=None if outcome is DeliveryOutcome.DELIVERED else "no",
            duration_ms=1.0,
            outcome=outcome,
            next_attempt_at=next_at,
            owner=owner,
        )
        holds = (
            model.status is DeliveryStatus.SENDING
            and model.holder == owner
            and model.attempts == number
        )
        assert moved == holds, ("the answer of a lost attempt moved the delivery", model, number)
        if not moved:
            COVERED["delivery answer too late"] += 1
            return
        if outcome is DeliveryOutcome.DELIVERED:
            model.status = DeliveryStatus.DELIVERED
        elif next_at is None:
            model.status = DeliveryStatus.FAILED
        else:
            model.status = DeliveryStatus.PENDING
        model.next_at, model.holder = next_at, None
        COVERED[f"delivery {model.status}"] += 1

    @precondition(lambda self: bool(self.deliveries))
    @rule(pick=st.integers(min_value=0, max_value=1000), chance=st.integers(0, 3))
    def replay(self, pick: int, chance: int) -> None:
        """POST /v1/deliveries/{id}/replay's store operation: the same message again now."""
        if chance != 3:  # seldom: most messages should run their schedule
            return
        STEPS["replay"] += 1
        model = self.deliveries[sorted(self.deliveries)[pick % len(self.deliveries)]]
        done = self.store.replay(model.id)
        if model.purged or model.status is DeliveryStatus.SENDING:
            assert not done, model
            COVERED["replay refused"] += 1
            return
        assert done, model
        COVERED[f"replay of {model.status}"] += 1
        model.status, model.next_at, model.holder = DeliveryStatus.PENDING, self._now(), None

    # -- retention -------------------------------------------------------------------------

    @precondition(lambda self: any(j.state == "ended" for j in self.jobs.values()))
    @rule(
        service=st.sampled_from(["budgeted", "paced"]),
        retention=st.sampled_from([0.0, 30.0, 120.0]),
        batch=st.integers(min_value=1, max_value=3),
    )
    def purge(self, service: str, retention: float, batch: int) -> None:
        """One bounded batch of retention's purge: the service's ended jobs that finished before
        the cutoff and owe no callback, oldest first."""
        STEPS["purge"] += 1
        svc, cutoff = self.services[service], self._now() - retention
        owed = {
            d.job_id
            for d in self.deliveries.values()
            if d.status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
        }
        candidates = sorted(
            (
                (j.ended[1], j.id)
                for j in self.jobs.values()
                if j.service == service
                and j.state == "ended"
                and j.ended is not None
                and j.ended[1] is not None
                and j.ended[1] < cutoff
                and j.id not in owed
                and not self._in_rate_window(j)
            ),
        )
        if any(
            j.service == service and j.state == "ended" and j.id in owed for j in self.jobs.values()
        ):
            COVERED["purge kept a job owing its callback"] += 1
        purged = self.store.purge_batch(svc.id, cutoff, batch)
        expected = [job_id for _, job_id in candidates[:batch]]
        assert sorted(purged["job_ids"]) == sorted(expected), (purged, candidates)
        for job_id in purged["job_ids"]:
            COVERED["purged"] += 1
            self.jobs[job_id].state = "purged"
            assert self.store.job(job_id) is None and self.store.purged_job(job_id) is not None
            for d in self.deliveries.values():
                if d.job_id == job_id:
                    d.purged = True

    def _in_rate_window(self, job: MJob) -> bool:
        """The job's rate slot or first start is inside its service's window: the window
        still reads it, so retention keeps it."""
        svc = self._service_of(job)
        if svc.rate is None:
            return False
        since = self._now() - svc.rate[1]
        inside = any(t is not None and t > since for t in (job.slot, job.first_start))
        if inside and job.state == "ended":
            COVERED["purge kept a job the rate window reads"] += 1
        return inside

    # -- helpers ---------------------------------------------------------------------------

    def _payload(self, job_id: str, event: str) -> dict[str, Any]:
        return {"schema_version": "1", "event": event, "job_id": job_id}

    def _snapshot(self, job_id: str) -> tuple[Any, ...]:
        job = self.store.job(job_id)
        assert job is not None
        tried = self.store.attempts(job_id)
        return (job.status, job.credit_cost, len(tried), [a.outcome for a in tried])

    def _finish(self, job_id: str, worker: str, status: JobStatus, cost: float) -> None:
        job = self.jobs[job_id]
        lost = job.holder != worker
        before = self._snapshot(job_id)
        event = "job.completed" if status is JobStatus.SUCCEEDED else "job.failed"
        error = None if status is JobStatus.SUCCEEDED else GenhookError(ErrorCode.BACKEND_ERROR)
        result = self.store.finish(
            job_id,
            worker,
            status=status,
            payload=self._payload(job_id, event),
            error=error,
            credit_cost=cost,
            work_seconds=1.0,
            cancelled=self._payload(job_id, "job.failed"),
        )
        if lost:
            COVERED["lost lease"] += 1
            assert result is None, "a worker that lost its lease ended the job"
            assert self._snapshot(job_id) == before, "a worker that lost its lease wrote"
            return
        assert result is not None, f"the holder of {job_id} could not end it"
        COVERED[f"ended {result}"] += 1
        if result is JobStatus.SUCCEEDED and job.backend == ENGINE and not self.breaker_open:
            self.failures = 0  # a success heals a closed breaker's count
        self._settled(job, cost)
        self._ended(job)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def every_job_obeys_the_rules(self) -> None:
        if not self.services:
            return
        with self.store._read() as conn:
            rows = conn.execute(
                sa.select(
                    jobs.c.id,
                    jobs.c.status,
                    jobs.c.finished_at,
                    jobs.c.credit_cost,
                    jobs.c.reserved,
                    jobs.c.reserved_day,
                )
            ).all()
            tried: dict[str, list[Any]] = {}
            for a in conn.execute(
                sa.select(attempts.c.job_id, attempts.c.credit_cost, attempts.c.ended_at)
            ):
                tried.setdefault(a.job_id, []).append(a)
            outbox: dict[str, int] = {}
            for job_id, body in conn.execute(
                sa.select(deliveries.c.job_id, deliveries.c.body).where(
                    deliveries.c.kind == "callback"
                )
            ):
                event = json.loads(bytes(body))["event"]
                if event in ("job.completed", "job.failed"):
                    outbox[job_id] = outbox.get(job_id, 0) + 1
            waiting = dict(conn.execute(sa.select(services.c.id, services.c.waiting)).all())
            ledger = conn.execute(sa.select(credit_ledger)).all()
        present = {j.id for j in self.jobs.values() if j.state != "purged"}
        assert {r.id for r in rows} == present, "a job appeared, vanished or came back"
        for row in rows:
            job, status = self.jobs[row.id], JobStatus(row.status)
            if status in TERMINAL:
                if job.ended is None:  # ended by the store on its own: none do here
                    raise AssertionError(f"{row.id} ended ({status}) without the model")
                assert job.ended == (str(status), row.finished_at), "a job ended twice"
                assert outbox.get(row.id, 0) == 1, f"{row.id} has {outbox.get(row.id)} messages"
            else:
                assert job.ended is None, f"ended job {row.id} came back as {status}"
                assert outbox.get(row.id, 0) == 0, "a completion message before the end"
                assert (status is JobStatus.RUNNING) == (job.state == "running"), (job, status)
            its = tried.get(row.id, [])
            assert row.credit_cost == pytest.approx(sum(a.credit_cost for a in its), abs=1e-9)
            still_open = [a for a in its if a.ended_at is None]
            assert len(still_open) <= (0 if status in TERMINAL else 1), its
            assert row.reserved == pytest.approx(job.reserved), (job, row)
            assert row.reserved_day == (job.reserved_day if job.reserved else None), (job, row)
        for svc in self.services.values():
            count = sum(
                1 for j in self.jobs.values() if j.service == svc.name and j.state == "waiting"
            )
            assert waiting[svc.id] == count, (
                f"{svc.name} counts {waiting[svc.id]} waiting, not {count}"
            )
        # the ledger: what the attempts spent and what the running jobs reserved, each day
        booked = {(r.service_id, r.day): r for r in ledger}
        for key, spent in self.spent.items():
            assert not spent or (key in booked and booked[key].spent == pytest.approx(spent)), (
                key,
                spent,
            )
        for (service_id, day), row in booked.items():
            assert row.spent == pytest.approx(self.spent.get((service_id, day), 0.0), abs=1e-9)
            reserved = sum(
                j.reserved
                for j in self.jobs.values()
                if self.services[j.service].id == service_id and j.reserved_day == day
            )
            assert row.reserved == pytest.approx(reserved, abs=1e-9), (day, row, reserved)
            limit = self.allowance.get((service_id, day))
            if limit is not None:
                assert row.spent <= limit + 1e-9, f"spent {row.spent} of {limit} on {day}"

    @invariant()
    def held_jobs_start_exactly_when_their_reason_lifts(self) -> None:
        """A claim now (rolled back) takes what the model predicts, nothing when all is held."""
        if not self.services:
            return
        expected = self._expected()
        self.store.dry = True
        try:
            job = self.store.claim("probe", LEASE)
        finally:
            self.store.dry = False
        self._check_taken(None if job is None else job.id, expected)
        COVERED[f"looked: {expected[0]}"] += 1

    @invariant()
    def the_outbox_matches(self) -> None:
        if not self.services:
            return
        with self.store._read() as conn:
            rows = {
                r.id: r
                for r in conn.execute(
                    sa.select(
                        deliveries.c.id,
                        deliveries.c.job_id,
                        deliveries.c.body,
                        deliveries.c.status,
                        deliveries.c.attempts,
                        deliveries.c.next_attempt_at,
                        deliveries.c.created_at,
                        deliveries.c.lease_expires,
                    ).where(deliveries.c.kind == "callback")
                )
            }
            job_ids = set(conn.execute(sa.select(jobs.c.id)).scalars())
            dangling = {
                "attempts": conn.execute(
                    sa.select(attempts.c.job_id).where(attempts.c.job_id.not_in(job_ids))
                ).all()
                if job_ids
                else conn.execute(sa.select(attempts.c.job_id)).all(),
                "events": conn.execute(
                    sa.select(events.c.job_id).where(events.c.job_id.not_in(job_ids))
                ).all()
                if job_ids
                else conn.execute(sa.select(events.c.job_id)).all(),
                "delivery attempts": conn.execute(
                    sa.select(delivery_attempts.c.delivery_id).where(
                        delivery_attempts.c.delivery_id.not_in(list(rows))
                    )
                ).all()
                if rows
                else conn.execute(sa.select(delivery_attempts.c.delivery_id)).all(),
            }
        for name, found in dangling.items():
            assert not found, f"{name} of jobs or deliveries that are gone: {found}"
        for delivery_id, row in rows.items():
            assert row.job_id in job_ids, f"delivery {delivery_id} of a job that is gone"
            model = self.deliveries.get(delivery_id)
            if model is None:  # a new completion message: its job just ended
                job = self.jobs[row.job_id]
                assert job.ended is not None and row.created_at == job.ended[1], (job, row)
                model = self.deliveries[delivery_id] = MDelivery(
                    delivery_id, row.job_id, bytes(row.body), next_at=row.created_at
                )
            assert not model.purged, f"purged delivery {delivery_id} came back"
            assert bytes(row.body) == model.body, "a message's body changed"
            assert (DeliveryStatus(row.status), row.attempts) == (model.status, model.attempts), (
                model,
                row,
            )
            if model.status is DeliveryStatus.PENDING:
                assert row.next_attempt_at == pytest.approx(model.next_at), (model, row)
        for model in self.deliveries.values():
            assert model.purged or model.id in rows, f"delivery {model.id} vanished"


class LifecyclePG(Lifecycle):
    KIND = "postgresql"


MODEL = settings(
    max_examples=int(os.environ.get("GENHOOK_MODEL_EXAMPLES", "25")),  # make reliability: more
    derandomize="GENHOOK_MODEL_EXAMPLES" not in os.environ,  # make test: the same runs each time
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
MUST_REACH = (
    "claim",
    "takeover",
    "ended succeeded",
    "ended failed",
    "retry retrying",
    "claimed a batch",
    "held: rate window",
    "held: capped",
    "delivery delivered",
    "purge kept a job owing its callback",
)
"""Paths every run reaches, on either store (the checks of each path are the invariants)."""


@pytest.mark.parametrize(
    "machine",
    [
        pytest.param(Lifecycle, id="sqlite"),
        pytest.param(LifecyclePG, id="postgresql"),
    ],
)
def test_the_job_lifecycle_keeps_its_invariants(machine: type[Lifecycle]) -> None:
    COVERED.clear()
    STEPS.clear()
    run_state_machine_as_test(
        machine,
        settings=MODEL
        if machine.KIND == "sqlite"
        else settings(MODEL, max_examples=max(20, MODEL.max_examples // 3)),
    )
    print(machine.KIND, dict(STEPS), dict(COVERED))
    for path in MUST_REACH:
        assert COVERED[path] > 0, (path, dict(COVERED))
