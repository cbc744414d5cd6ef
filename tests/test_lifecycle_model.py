"""A model of the job lifecycle: a Hypothesis rule-based state machine drives the real store
(SQLite and PostgreSQL, a fresh database per run, an injected clock) through triggers, claims
by two workers, heartbeats, lease expiries and takeovers, successes, failures, retries, cancels
and budget settlements in random order, and checks the invariants after every step:

- a job ends once: its terminal status and end time never change afterwards;
- an ended job never runs again (no claim returns it);
- a worker that lost its lease (another worker took the job over) changes nothing;
- a job's credits equal the sum of its attempts' credits, and it has at most one open attempt
  (none once ended);
- every ended job has exactly one completion message in the outbox, a job still going none;
- the daily budget is never overspent (every attempt costs at most its estimate here, so the
  reservation must keep concurrent starts within it).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from contextlib import ExitStack
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
    precondition,
    rule,
    run_state_machine_as_test,
)

from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.status import TERMINAL, JobStatus
from genhook.store.admit import Admission
from genhook.store.schema import deliveries, jobs, services
from genhook.store.store import Store
from tests.databases import database_url

COVERED: Counter[str] = Counter()
"""What the runs reached (the test checks that each path was taken at least once)."""
LEASE = 60.0
WORKERS = ("w1", "w2")
BUDGET = 10.0
ESTIMATE = 3.0


class Lifecycle(RuleBasedStateMachine):
    """The store under random operations; ``KIND`` is the database."""

    KIND = "sqlite"
    submitted = Bundle("submitted")

    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        url = self.stack.enter_context(database_url(self.KIND, tmp))
        self.store = Store(url)
        self.stack.callback(self.store.close)
        self.store.migrate()
        self.clock = ManualClock(start=1_800_000_000.0 + 8 * 3600)  # 08:00 UTC: one day
        self.store.clock = self.clock
        self.service_id = ""
        self.holder: dict[str, str | None] = {}  # who holds each running job's lease now
        self.ended: dict[str, tuple[JobStatus, float | None]] = {}  # status, finished_at

    def teardown(self) -> None:
        self.stack.close()

    @initialize(on_budget=st.sampled_from(["hold", "fail"]))
    def service(self, on_budget: str) -> None:
        self.service_id = self.store.create_service("model")["service_id"]
        with self.store._write() as conn:
            conn.execute(
                services.update()
                .where(services.c.id == self.service_id)
                .values(daily_budget=BUDGET, on_budget=on_budget)
            )

    # -- operations ------------------------------------------------------------------------

    @rule(target=submitted, priority=st.integers(min_value=0, max_value=2))
    def trigger(self, priority: int) -> str:
        job, created = self.store.submit(
            service_id=self.service_id,
            workflow_id="product-image",
            workflow_version=1,
            trigger={"product_name": "x"},
            external_id=None,
            callback_url="https://hooks.example.com/genhook",
            admission=Admission(priority=priority, estimate=ESTIMATE, backend="procedural"),
        )
        assert created
        self.holder[job.id] = None
        return job.id

    @rule(worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> None:
        job = self.store.claim(worker, LEASE)
        if job is None:
            return
        assert job.id in self.holder, "claimed a job nobody submitted"
        assert job.id not in self.ended, f"an ended job ({self.ended[job.id]}) ran again"
        COVERED["takeover" if self.holder[job.id] else "claim"] += 1
        self.holder[job.id] = worker  # a takeover when someone held it before
        if job.refusal is ErrorCode.BUDGET_EXCEEDED:  # the worker ends it at once, as it does
            self._finish(job.id, worker, JobStatus.FAILED, 0.0)

    def _held(self, pick: int) -> str:
        held = sorted(j for j, w in self.holder.items() if w is not None)
        return held[pick % len(held)]

    def _any_held(self) -> bool:
        return any(w is not None for w in self.holder.values())

    @precondition(_any_held)
    @rule(
        pick=st.integers(min_value=0, max_value=1000),
        holder=st.booleans(),
        succeeded=st.booleans(),
        cost=st.floats(min_value=0.0, max_value=ESTIMATE),
    )
    def finish(self, pick: int, holder: bool, succeeded: bool, cost: float) -> None:
        job_id = self._held(pick)
        current = self.holder[job_id]
        assert current is not None
        worker = current if holder else next(w for w in WORKERS if w != current)
        self._finish(job_id, worker, JobStatus.SUCCEEDED if succeeded else JobStatus.FAILED, cost)

    @precondition(_any_held)
    @rule(
        pick=st.integers(min_value=0, max_value=1000),
        delay=st.sampled_from([0.0, 5.0, 120.0]),
        cost=st.floats(min_value=0.0, max_value=ESTIMATE),
    )
    def retry(self, pick: int, delay: float, cost: float) -> None:
        job_id = self._held(pick)
        worker = self.holder[job_id]
        assert worker is not None
        before = self._snapshot(job_id)
        result = self.store.retry(
            job_id,
            worker,
            error=GenhookError(ErrorCode.BACKEND_ERROR, "the engine hiccuped"),
            delay=delay,
            credit_cost=cost,
            work_seconds=1.0,
            cancelled=self._payload(job_id, "job.failed"),
        )
        if result is None:
            assert self._snapshot(job_id) == before, "a worker without the lease wrote"
            return
        self.holder[job_id] = None
        COVERED[f"retry {result}"] += 1
        if result is JobStatus.CANCELLED:
            self._record_end(job_id)

    @rule(job_id=submitted, chance=st.integers(min_value=0, max_value=3))
    def cancel(self, job_id: str, chance: int) -> None:
        if chance != 3:  # seldom (Hypothesis favours small numbers): most jobs should run
            return
        status = self.store.cancel(job_id, lambda job: self._payload(job.id, "job.failed"))
        COVERED[f"cancel {status}"] += 1
        if status in TERMINAL:
            self._record_end(job_id)
            self.holder[job_id] = None

    @precondition(_any_held)
    @rule(pick=st.integers(min_value=0, max_value=1000))
    def heartbeat(self, pick: int) -> None:
        job_id = self._held(pick)
        worker = self.holder[job_id]
        if worker is not None and job_id not in self.ended:
            self.store.heartbeat(job_id, worker, LEASE)

    @precondition(_any_held)
    @rule()
    def lease_runs_out(self) -> None:
        """Time passes beyond the leases of the running jobs (their workers went quiet)."""
        self.clock.advance(LEASE + 1.0)

    @rule(seconds=st.sampled_from([1.0, 1.0, 5.0, 10.0, 20.0, LEASE + 1.0, 300.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- helpers ---------------------------------------------------------------------------

    def _payload(self, job_id: str, event: str) -> dict[str, Any]:
        return {"schema_version": "1", "event": event, "job_id": job_id}

    def _snapshot(self, job_id: str) -> tuple[Any, ...]:
        job = self.store.job(job_id)
        assert job is not None
        attempts = self.store.attempts(job_id)
        return (job.status, job.credit_cost, len(attempts), [a.outcome for a in attempts])

    def _finish(self, job_id: str, worker: str, status: JobStatus, cost: float) -> None:
        lost = self.holder.get(job_id) != worker
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
        if result is None:  # its lease ran out and the store refused: nothing may change
            COVERED["lease ran out"] += 1
            assert self._snapshot(job_id) == before
            return
        self.holder[job_id] = None
        COVERED[f"ended {result}"] += 1
        self._record_end(job_id)

    def _record_end(self, job_id: str) -> None:
        job = self.store.job(job_id)
        assert job is not None and job.status in TERMINAL, job
        if job_id not in self.ended:
            self.ended[job_id] = (job.status, job.finished_at)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def every_job_obeys_the_rules(self) -> None:
        if not self.service_id:
            return
        with self.store._read() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.status, jobs.c.finished_at, jobs.c.credit_cost).where(
                    jobs.c.service_id == self.service_id
                )
            ).all()
            outbox: dict[str, int] = {}
            for job_id, body in conn.execute(
                sa.select(deliveries.c.job_id, deliveries.c.body).where(
                    deliveries.c.service_id == self.service_id, deliveries.c.kind == "callback"
                )
            ):
                event = json.loads(bytes(body))["event"]
                if event in ("job.completed", "job.failed"):
                    outbox[job_id] = outbox.get(job_id, 0) + 1
        assert {r.id for r in rows} == set(self.holder)
        spent = 0.0
        for job_id, status, finished_at, credit_cost in rows:
            status = JobStatus(status)
            if status in TERMINAL:
                self.ended.setdefault(job_id, (status, finished_at))
                assert self.ended[job_id] == (status, finished_at), "a job ended twice"
                assert outbox.get(job_id, 0) == 1, f"{job_id} has {outbox.get(job_id)} messages"
            else:
                assert job_id not in self.ended, f"ended job {job_id} came back as {status}"
                assert outbox.get(job_id, 0) == 0, "a completion message before the end"
            attempts = self.store.attempts(job_id)
            assert credit_cost == pytest.approx(sum(a.credit_cost for a in attempts), abs=1e-9)
            still_open = [a for a in attempts if a.ended_at is None]
            assert len(still_open) <= (0 if status in TERMINAL else 1), attempts
            spent += credit_cost
        assert spent <= BUDGET + 1e-9, f"spent {spent} of a budget of {BUDGET}"


class LifecyclePG(Lifecycle):
    KIND = "postgresql"


MODEL = settings(
    max_examples=int(os.environ.get("GENHOOK_MODEL_EXAMPLES", "25")),  # make reliability: more
    derandomize="GENHOOK_MODEL_EXAMPLES" not in os.environ,  # make test: the same runs each time
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize(
    "machine",
    [
        pytest.param(Lifecycle, id="sqlite"),
        pytest.param(LifecyclePG, id="postgresql"),
    ],
)
def test_the_job_lifecycle_keeps_its_invariants(machine: type[Lifecycle]) -> None:
    COVERED.clear()
    run_state_machine_as_test(
        machine,
        settings=MODEL
        if machine.KIND == "sqlite"
        else settings(MODEL, max_examples=max(10, MODEL.max_examples // 2)),
    )
    print(dict(COVERED))
    for path in ("claim", "takeover", "lost lease", "ended succeeded", "ended failed"):
        assert COVERED[path] > 0, (path, dict(COVERED))
    assert COVERED["retry retrying"] > 0 and COVERED["cancel cancelled"] > 0, dict(COVERED)
