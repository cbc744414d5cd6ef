"""Flow-control policies, as pure functions and as the store applies them (an injected clock,
real SQLite and PostgreSQL): the rate window, the storm breaker, the fair claim, priority, the
queue limit, dedup, the budget's reservation and thresholds, and the backend breaker."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import (
    Breaker,
    BreakerState,
    BudgetDecision,
    RateLimit,
    Storm,
    budget_decision,
    next_utc_midnight,
    thresholds_crossed,
    utc_day,
)
from genhook.status import JobStatus
from genhook.store.admit import Admission
from genhook.store.records import StoredJob
from genhook.store.schema import credit_ledger, jobs, operator_events, services
from genhook.store.store import Store
from tests.conftest import new_service

# ---- pure policies ---------------------------------------------------------------------------


def test_rate_slots_allow_a_burst_of_n_then_wait_a_full_window() -> None:
    limit = RateLimit.parse("3/m")
    assert limit == RateLimit(3, 60.0)
    slots: list[float] = []
    for _ in range(7):
        nth = slots[-3] if len(slots) >= 3 else None
        slots.append(limit.slot(100.0, nth))
    assert slots == [100.0, 100.0, 100.0, 160.0, 160.0, 160.0, 220.0]
    # no window of 60 s holds more than 3 slots
    for start in slots:
        assert sum(start <= s < start + 60 for s in slots) <= 3


def test_storm_counts_the_last_hour_across_two_buckets() -> None:
    limit = RateLimit(10, 3600.0)  # 10/h: the breaker trips past 30 in the last hour
    storm = Storm(None, 0, 0)
    t = 7200.0
    for _ in range(30):
        storm = storm.add(t)
    assert not storm.tripped(t, limit)
    assert storm.add(t).tripped(t, limit)
    # half an hour into the next bucket, half of the previous hour still counts
    later = storm.add(t + 5400.0)
    assert later.count == 1 and later.previous == 30
    assert later.last_hour(t + 5400.0) == pytest.approx(1 + 15)
    # two hours later nothing is left
    assert storm.add(t + 7300.0).last_hour(t + 7300.0) == 1
    assert not Storm(None, 0, 0).add(t).tripped(t, None)


def test_a_limit_over_a_long_period_trips_only_past_three_times_its_own_count() -> None:
    """1/d is 1/24 an hour: three times that is under one trigger, so the hourly figure alone
    paused such a service at its first trigger. The rate limit itself lets a burst of its count
    through, so the breaker waits for more than three times the count in an hour."""
    t = 7200.0
    for limit in (RateLimit(1, 86400.0), RateLimit(5, 7 * 86400.0)):
        storm = Storm(None, 0, 0)
        for _ in range(3 * limit.count):
            storm = storm.add(t)
            assert not storm.tripped(t, limit)
        assert storm.add(t).tripped(t, limit)
        assert limit.storm_threshold == 3 * limit.count
    # limits of an hour or less keep the contract's "three times the hourly rate"
    assert RateLimit(10, 60.0).storm_threshold == 3 * 600
    assert RateLimit(10, 3600.0).storm_threshold == 30


def test_budget_reserves_only_what_fits_and_holds_or_fails_past_it() -> None:
    assert budget_decision(None, 1e9, 0, 5, "hold") is BudgetDecision.RESERVE
    assert budget_decision(10, 4, 4, 2, "hold") is BudgetDecision.RESERVE
    assert budget_decision(10, 4, 4, 2.5, "hold") is BudgetDecision.HOLD
    assert budget_decision(10, 4, 4, 2.5, "fail") is BudgetDecision.FAIL
    # a free job may run until the budget is used up, not after
    assert budget_decision(10, 9.9, 0, 0, "hold") is BudgetDecision.RESERVE
    assert budget_decision(10, 10, 0, 0, "hold") is BudgetDecision.HOLD


def test_thresholds_fire_once_each() -> None:
    assert thresholds_crossed(10, 7.9, False, False) == []
    assert thresholds_crossed(10, 8, False, False) == [0.8]
    assert thresholds_crossed(10, 10, False, False) == [0.8, 1.0]
    assert thresholds_crossed(10, 10, True, False) == [1.0]
    assert thresholds_crossed(10, 10, True, True) == []
    assert thresholds_crossed(None, 10, False, False) == []


def test_utc_days() -> None:
    t = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert utc_day(t) == "2027-01-15"
    assert utc_day(next_utc_midnight(t)) == "2027-01-16"
    assert next_utc_midnight(t) - t == 16 * 3600


def test_backend_breaker_opens_after_failures_in_a_row_and_closes_on_success() -> None:
    b = Breaker()
    for _ in range(2):
        b = b.failed(100.0, threshold=3, probe_seconds=30)
        assert b.state is BreakerState.CLOSED
    b = b.failed(100.0, threshold=3, probe_seconds=30)
    assert b.state is BreakerState.OPEN and b.probe_at == 130.0
    assert not b.probe_due(129.0) and b.probe_due(130.0)
    assert b.probe_failed(131.0, 30).probe_at == 161.0
    assert b.succeeded() == Breaker()


# ---- the store -------------------------------------------------------------------------------


def _submit(store: Store, service_id: str, **admission: Any) -> StoredJob:
    job, _created = store.submit(
        service_id=service_id,
        workflow_id="product-image",
        workflow_version=1,
        trigger={"product_name": "x"},
        external_id=None,
        callback_url=None,
        admission=Admission(**admission),
    )
    return job


def _finish(store: Store, job_id: str, worker: str, cost: float = 0.0) -> None:
    store.finish(
        job_id,
        worker,
        status=JobStatus.SUCCEEDED,
        payload={"job_id": job_id, "quality_warning": None},
        error=None,
        credit_cost=cost,
        work_seconds=1.0,
    )


def test_rate_limited_jobs_get_their_slot_and_start_when_the_window_allows(flow: Store) -> None:
    clock = flow.clock
    assert isinstance(clock, ManualClock)
    svc = new_service(flow, "limited", rate_limit="2/m")
    t0 = clock.now()
    jobs = [_submit(flow, svc) for _ in range(5)]
    assert [j.run_after - t0 for j in jobs] == [0, 0, 60, 60, 120]
    assert [j.hold_reason for j in jobs] == [
        None,
        None,
        "rate_limit",
        "rate_limit",
        "rate_limit",
    ]
    started = [flow.claim("w", 900), flow.claim("w", 900), flow.claim("w", 900)]
    assert {s.id for s in started if s} == {jobs[0].id, jobs[1].id}
    assert started[2] is None
    clock.advance(60)
    assert flow.claim("w", 900).id == jobs[2].id  # type: ignore[union-attr]


def test_the_claim_holds_a_backlog_to_the_window_of_real_starts(flow: Store) -> None:
    """Jobs whose slots passed while no worker was free still start at most N per window."""
    clock = flow.clock
    assert isinstance(clock, ManualClock)
    svc = new_service(flow, "late", rate_limit="2/m")
    jobs = [_submit(flow, svc) for _ in range(6)]
    clock.advance(600)  # every slot has passed
    first = [flow.claim("w", 900) for _ in range(3)]
    assert len({j.id for j in first if j}) == 2 and first[2] is None
    waiting = [flow.job(j.id) for j in jobs if j.id not in {f.id for f in first if f}]
    held = next(j for j in waiting if j and j.hold_reason == "rate_limit")
    assert held.run_after == pytest.approx(clock.now() + 60)


def test_fair_claim_serves_a_single_job_before_a_backlog(flow: Store) -> None:
    big = new_service(flow, "backlog")
    small = new_service(flow, "single")
    backlog = [_submit(flow, big) for _ in range(50)]
    assert flow.claim("w", 900).id == backlog[0].id  # type: ignore[union-attr]
    lone = _submit(flow, small)
    assert flow.claim("w", 900).id == lone.id  # type: ignore[union-attr]
    assert flow.claim("w", 900).id == backlog[1].id  # type: ignore[union-attr]


def test_priority_orders_within_a_service(flow: Store) -> None:
    svc = new_service(flow, "prio")
    low = _submit(flow, svc, priority=0)
    normal = _submit(flow, svc, priority=1)
    high = _submit(flow, svc, priority=2)
    order = [flow.claim("w", 900).id for _ in range(3)]  # type: ignore[union-attr]
    assert order == [high.id, normal.id, low.id]


def test_queue_limit_refuses_with_queue_full(flow: Store) -> None:
    svc = new_service(flow, "small-queue", queue_limit=3)
    for _ in range(3):
        _submit(flow, svc)
    with pytest.raises(GenhookError) as refused:
        _submit(flow, svc)
    assert refused.value.code is ErrorCode.QUEUE_FULL
    assert refused.value.retry_after is not None
    job = flow.claim("w", 900)  # one leaves the queue: room for one more
    _submit(flow, svc)
    assert job is not None
    # a retry comes back into the queue, a cancel leaves it: the count follows every move
    flow.retry(
        job.id,
        "w",
        error=GenhookError(ErrorCode.BACKEND_ERROR),
        delay=0,
        credit_cost=0,
        work_seconds=0,
        cancelled={},
    )
    with pytest.raises(GenhookError):
        _submit(flow, svc)
    flow.cancel(job.id, lambda row: {"job_id": row.id})
    with flow._read() as conn:
        waiting = conn.execute(
            sa.select(services.c.waiting).where(services.c.id == svc)
        ).scalar_one()
        counted = conn.execute(
            sa.select(sa.func.count()).where(
                jobs.c.service_id == svc, jobs.c.status.in_(["queued", "retrying"])
            )
        ).scalar_one()
    assert waiting == counted == 3


def test_dedup_returns_the_first_job_within_the_window(flow: Store) -> None:
    clock = flow.clock
    assert isinstance(clock, ManualClock)
    svc = new_service(flow, "dedup")
    first = _submit(flow, svc, dedup_key="k1", dedup_window=3600)
    again = _submit(flow, svc, dedup_key="k1", dedup_window=3600)
    assert again.id == first.id and again.deduplicated is True
    other = _submit(flow, svc, dedup_key="k2", dedup_window=3600)
    assert other.id != first.id
    clock.advance(3601)
    later = _submit(flow, svc, dedup_key="k1", dedup_window=3600)
    assert later.id != first.id and not later.deduplicated


def test_storm_pauses_the_service_holds_its_jobs_and_alerts(flow: Store) -> None:
    svc = new_service(flow, "stormy", rate_limit="2/h")  # trips past 6 in the last hour
    jobs = [_submit(flow, svc) for _ in range(7)]
    assert jobs[-1].hold_reason == "paused"
    assert flow.paused(svc)
    assert flow.claim("w", 900) is None  # nothing of a paused service starts
    with flow._read() as conn:
        events = conn.execute(sa.select(operator_events.c.event, operator_events.c.service)).all()
    assert [tuple(e) for e in events] == [("service.paused", "stormy")]


def test_budget_never_overshoots_with_concurrent_starts(flow: Store) -> None:
    svc = new_service(flow, "budgeted", daily_budget=5.0)
    jobs = [_submit(flow, svc, estimate=2.0) for _ in range(4)]
    started = [flow.claim(f"w{i}", 900) for i in range(4)]
    assert started[0] is not None and started[1] is not None
    assert started[2] is None and started[3] is None
    ran = {started[0].id, started[1].id}
    for j in jobs:
        if j.id not in ran:
            held = flow.job(j.id)
            assert held is not None and held.hold_reason == "budget"
    with flow._read() as conn:
        assert conn.execute(sa.select(credit_ledger.c.reserved)).scalar() == 4.0
    _finish(flow, started[0].id, "w0", cost=2.0)
    _finish(flow, started[1].id, "w1", cost=2.0)
    with flow._read() as conn:
        row = conn.execute(sa.select(credit_ledger)).one()
        events = conn.execute(
            sa.select(operator_events.c.event, operator_events.c.details).order_by(
                operator_events.c.at
            )
        ).all()
    assert row.spent == 4.0 and row.reserved == 0.0
    thresholds = [e.details["threshold"] for e in events if e.event == "budget.threshold"]
    # 1.0 when a job could not be covered, 0.8 when 4 of 5 credits were spent: each once
    assert sorted(thresholds) == [0.8, 1.0]


def test_budget_fail_policy_hands_the_job_to_be_ended(flow: Store) -> None:
    svc = new_service(flow, "strict", daily_budget=1.0, on_budget="fail")
    _submit(flow, svc, estimate=2.0)
    job = flow.claim("w", 900)
    assert job is not None and job.refusal is ErrorCode.BUDGET_EXCEEDED


def test_backend_breaker_holds_jobs_until_a_probe_succeeds(flow: Store) -> None:
    clock = flow.clock
    assert isinstance(clock, ManualClock)
    flow.backend_breaker_failures = 2
    flow.backend_probe_seconds = 30
    svc = new_service(flow, "engine-user")
    error = GenhookError(ErrorCode.BACKEND_UNAVAILABLE, "down")
    flow.backend_failed("openai", error)
    state = flow.backend_failed("openai", error)
    assert state.state is BreakerState.OPEN
    job = _submit(flow, svc, backend="openai")
    assert flow.claim("w", 900) is None
    held = flow.job(job.id)
    assert held is not None and held.hold_reason == "backend_unavailable"
    assert flow.take_probe() is None  # not due yet
    clock.advance(30)
    assert flow.take_probe() == "openai"
    assert flow.take_probe() is None  # one prober at a time
    flow.probe_result("openai", True)
    claimed = flow.claim("w", 900)
    assert claimed is not None and claimed.id == job.id
    with flow._read() as conn:
        events = [r[0] for r in conn.execute(sa.select(operator_events.c.event)).all()]
    assert sorted(events) == ["backend.recovered", "backend.unhealthy"]


def test_backend_concurrency_limit_holds_across_claims(flow: Store) -> None:
    flow.backend_concurrency = {"openai": 1}
    svc = new_service(flow, "capped")
    a = _submit(flow, svc, backend="openai")
    _submit(flow, svc, backend="openai")
    free = _submit(flow, svc, backend="procedural")
    assert flow.claim("w", 900).id == a.id  # type: ignore[union-attr]
    assert flow.claim("w", 900).id == free.id  # type: ignore[union-attr]
    assert flow.claim("w", 900) is None


def test_the_stores_storm_buckets_follow_the_policy(flow: Store) -> None:
    """The accept statement moves the storm buckets in SQL exactly as ``Storm.add`` does."""
    clock = flow.clock
    assert isinstance(clock, ManualClock)
    svc = new_service(flow, "buckets", rate_limit="1000/h")
    expected = Storm(None, 0, 0)
    for step in (0, 10, 3600, 3700, 3 * 3600, 3 * 3600 + 1, 7 * 3600):
        clock.advance(step - (clock.now() - 1_800_000_000.0))
        expected = expected.add(clock.now())
        _submit(flow, svc)
        with flow._read() as conn:
            row = conn.execute(
                sa.select(
                    services.c.storm_bucket, services.c.storm_count, services.c.storm_previous
                ).where(services.c.id == svc)
            ).one()
        assert Storm(row.storm_bucket, row.storm_count, row.storm_previous) == expected


def test_a_raised_budget_frees_the_jobs_it_held(flow: Store) -> None:
    svc = new_service(flow, "raise-me", daily_budget=1.0)
    first, second = (_submit(flow, svc, estimate=1.0) for _ in range(2))
    started = flow.claim("w", 900)
    assert started is not None and flow.claim("w", 900) is None  # the second is held
    waiting = next(j for j in (first, second) if j.id != started.id)
    assert flow.job(waiting.id).hold_reason == "budget"  # type: ignore[union-attr]
    flow.update_service("raise-me", daily_budget=5.0)
    claimed = flow.claim("w", 900)
    assert claimed is not None and claimed.id == waiting.id


def test_backend_rate_limit_counts_starts_across_claims(flow: Store) -> None:
    clock = flow.clock
    assert isinstance(clock, ManualClock)
    flow.backend_rates = {"openai": (2, 10.0)}  # 2 starts per 10 s
    svc = new_service(flow, "rated")
    for _ in range(3):
        _submit(flow, svc, backend="openai")
    assert flow.claim("w", 900) is not None
    assert flow.claim("w", 900) is not None
    assert flow.claim("w", 900) is None  # the third waits for the window
    clock.advance(10.5)
    assert flow.claim("w", 900) is not None
