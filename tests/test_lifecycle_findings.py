"""What the lifecycle model (tests/test_lifecycle_model.py) found, each reduced to a focused
test on the real store (SQLite and PostgreSQL, an injected clock)."""

from __future__ import annotations

from typing import Any

from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import BreakerState
from genhook.status import DeliveryOutcome, DeliveryStatus, JobStatus
from genhook.store.admit import Admission
from genhook.store.records import StoredJob
from genhook.store.store import Store
from tests.conftest import new_service


def _submit(store: Store, service_id: str, callback: bool = False, **admission: Any) -> StoredJob:
    job, _created = store.submit(
        service_id=service_id,
        workflow_id="product-image",
        workflow_version=1,
        trigger={"product_name": "x"},
        external_id=None,
        callback_url="https://hooks.example.com/genhook" if callback else None,
        admission=Admission(**admission),
    )
    return job


def _clock(store: Store) -> ManualClock:
    assert isinstance(store.clock, ManualClock)
    return store.clock


def _open_breaker(store: Store, backend: str) -> float:
    """Open ``backend``'s breaker now; its probe is due in 30 s."""
    store.backend_breaker_failures = 1
    store.backend_probe_seconds = 30.0
    state = store.backend_failed(backend, GenhookError(ErrorCode.BACKEND_ERROR))
    assert state.state is BreakerState.OPEN and state.probe_at is not None
    return state.probe_at


def _probe_succeeds(store: Store, backend: str, probe_at: float) -> None:
    _clock(store).advance(probe_at - store.clock.now())
    assert store.take_probe() == backend
    store.probe_result(backend, True)


def test_a_retry_waiting_out_its_back_off_still_waits_when_the_breaker_closes(flow: Store) -> None:
    """A job put back to retry in 120 s (say an engine's Retry-After) whose backend's breaker
    opens and closes meanwhile starts after its 120 s, not at the probe 30 s later: the probe
    lifts the breaker's hold only."""
    svc = new_service(flow, "retrier")
    job = _submit(flow, svc, backend="engine")
    assert flow.claim("w", 60) is not None
    assert (
        flow.retry(
            job.id,
            "w",
            error=GenhookError(ErrorCode.BACKEND_ERROR),
            delay=120.0,
            credit_cost=0.0,
            work_seconds=1.0,
            cancelled={"event": "job.failed"},
        )
        is JobStatus.RETRYING
    )
    retry_at = flow.clock.now() + 120.0
    _probe_succeeds(flow, "engine", _open_breaker(flow, "engine"))
    assert flow.claim("w", 60) is None, "the probe's success cut the retry's wait short"
    stored = flow.job(job.id)
    assert stored is not None and stored.run_after == retry_at
    _clock(flow).advance(retry_at - flow.clock.now())
    claimed = flow.claim("w", 60)
    assert claimed is not None and claimed.id == job.id


def test_a_rate_slot_still_holds_when_the_breaker_closes(flow: Store) -> None:
    """Under 1/m, the second of two triggers has its slot a minute on; when the first is
    cancelled and the backend's breaker opens and closes within that minute, the second still
    starts at its slot (its eligible_at), not at the probe."""
    svc = new_service(flow, "paced", rate_limit="1/m")
    first = _submit(flow, svc, backend="engine")
    second = _submit(flow, svc, backend="engine")
    slot = flow.job(second.id).run_after  # type: ignore[union-attr]
    assert slot == flow.clock.now() + 60.0
    assert flow.cancel(first.id, lambda j: {"event": "job.failed"}) is JobStatus.CANCELLED
    _probe_succeeds(flow, "engine", _open_breaker(flow, "engine"))
    assert flow.claim("w", 60) is None, "the probe's success cut the rate slot short"
    held = flow.job(second.id)
    assert held is not None and (held.hold_reason, held.run_after) == ("rate_limit", slot)
    _clock(flow).advance(slot - flow.clock.now())
    claimed = flow.claim("w", 60)
    assert claimed is not None and claimed.id == second.id


def _succeed(store: Store, job_id: str) -> None:
    """Worker ``w`` ends ``job_id`` succeeded (its callback outboxed)."""
    store.finish(
        job_id,
        "w",
        status=JobStatus.SUCCEEDED,
        payload={"event": "job.completed"},
        error=None,
        credit_cost=0.0,
        work_seconds=1.0,
    )


def _deliver_all(store: Store) -> None:
    for d in store.claim_deliveries(10, 30.0, "o"):
        assert store.record_delivery(
            d.id,
            number=d.attempt,
            status_code=204,
            error=None,
            duration_ms=1.0,
            outcome=DeliveryOutcome.DELIVERED,
            next_attempt_at=None,
            owner="o",
        )


def test_a_purge_does_not_make_the_rate_window_forget_its_starts(flow: Store) -> None:
    """1/h with a retention of a minute: a job that started, ended and was purged within the
    hour still counts in the window, so the next trigger waits for the window (at most N
    starts in any window, whatever the retention)."""
    svc = new_service(flow, "hourly", rate_limit="1/h")
    started_at = flow.clock.now()
    first = _submit(flow, svc, callback=True)
    assert flow.claim("w", 60) is not None
    _succeed(flow, first.id)
    _deliver_all(flow)
    _clock(flow).advance(120.0)
    flow.purge_batch(svc, flow.clock.now() - 60.0, 10)  # what a purge may take, it takes
    second = _submit(flow, svc)
    assert flow.claim("w", 60) is None, "two starts within an hour under 1/h"
    held = flow.job(second.id)
    assert held is not None and held.run_after == started_at + 3600.0
    _clock(flow).advance(started_at + 3600.0 - flow.clock.now())
    claimed = flow.claim("w", 60)
    assert claimed is not None and claimed.id == second.id


def test_a_late_answer_of_an_attempt_the_same_outbox_took_over_moves_nothing(
    flow: Store,
) -> None:
    """An outbox whose lease ran out and that took its own delivery over (attempt 2 in flight)
    then records attempt 1's late answer: the delivery stays with attempt 2."""
    svc = new_service(flow, "hooks")
    job = _submit(flow, svc, callback=True)
    assert flow.claim("w", 60) is not None
    _succeed(flow, job.id)
    [one] = flow.claim_deliveries(1, 30.0, "o")
    _clock(flow).advance(31.0)
    [two] = flow.claim_deliveries(1, 30.0, "o")
    assert (one.id, one.attempt, two.attempt) == (two.id, 1, 2)
    moved = flow.record_delivery(
        one.id,
        number=1,
        status_code=500,
        error="HTTP 500",
        duration_ms=1.0,
        outcome=DeliveryOutcome.RETRY,
        next_attempt_at=flow.clock.now() + 5.0,
        owner="o",
    )
    assert not moved, "attempt 1's answer moved the delivery while attempt 2 is in flight"
    record = flow.delivery(one.id)
    assert record is not None and (record.status, record.attempts) == (DeliveryStatus.SENDING, 2)
    assert flow.record_delivery(
        two.id,
        number=2,
        status_code=204,
        error=None,
        duration_ms=1.0,
        outcome=DeliveryOutcome.DELIVERED,
        next_attempt_at=None,
        owner="o",
    )
    record = flow.delivery(one.id)
    assert record is not None and record.status is DeliveryStatus.DELIVERED
