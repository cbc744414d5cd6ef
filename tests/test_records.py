"""The store's typed vocabulary: statuses equal the strings stored and sent; a looked-up
service is a frozen record that keeps its webhook secret out of its repr (so out of logs); a
claim gives a frozen job carrying what the worker reads, a lease a frozen delivery; a job read
back, its events and its deliveries (with their attempt log) are frozen records too."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.status import (
    TERMINAL,
    AttemptOutcome,
    DeliveryAttemptState,
    DeliveryStatus,
    JobStatus,
)
from genhook.store.records import (
    Attempt,
    Delivery,
    DeliveryAttemptRecord,
    DeliveryRecord,
    Job,
    JobEvent,
    Service,
    StoredJob,
)
from genhook.store.schema import jobs
from genhook.store.store import Store
from tests.test_outbox import outboxed


def submitted(
    store: Store, *, version: int, trigger: dict[str, Any], external_id: str | None
) -> str:
    """The id of a queued job of workflow ``wf`` for a new service."""
    created = store.create_service(f"svc-{version}")
    job, _ = store.submit(
        service_id=created["service_id"],
        workflow_id="wf",
        workflow_version=version,
        trigger=trigger,
        external_id=external_id,
        callback_url=None,
    )
    return str(job.id)


def test_a_looked_up_key_gives_a_frozen_service_whose_repr_hides_the_secret(store: Store) -> None:
    created = store.create_service("crm", rate_limit="10/s", daily_budget=5.0)
    service = store.service_for_key(created["api_key"])
    assert isinstance(service, Service)
    assert service.id == created["service_id"]
    assert service.name == "crm"
    assert service.webhook_secret == created["webhook_secret"]
    assert (service.rate_limit, service.daily_budget, service.paused_at) == ("10/s", 5.0, None)
    assert created["webhook_secret"] not in repr(service)
    with pytest.raises(dataclasses.FrozenInstanceError):
        service.name = "other"  # type: ignore[misc]
    assert store.service_for_key(created["api_key"] + "x") is None


def test_statuses_are_stored_and_serialised_as_their_strings(store: Store) -> None:
    job_id = submitted(store, version=1, trigger={}, external_id=None)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
    assert type(stored) is str and stored == "queued" == JobStatus.QUEUED
    assert json.dumps({"status": JobStatus.QUEUED}) == '{"status": "queued"}'
    assert {str(s) for s in TERMINAL} == {"succeeded", "failed", "cancelled", "expired"}


def test_a_claim_gives_a_frozen_job_with_its_attempt_counted_and_its_start(store: Store) -> None:
    job_id = submitted(store, version=3, trigger={"product_name": "Mug"}, external_id="sku-1")
    before = store.clock.now()
    job = store.claim("w1", 30)
    assert isinstance(job, Job)
    assert (job.id, job.workflow_id, job.workflow_version) == (job_id, "wf", 3)
    assert job.status is JobStatus.RUNNING
    assert (job.input, job.external_id, job.attempts) == ({"product_name": "Mug"}, "sku-1", 1)
    assert (job.processing_seconds, job.credit_cost, job.cancel_requested) == (0.0, 0.0, False)
    assert before <= job.claimed_at <= store.clock.now()
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.attempts = 2  # type: ignore[misc]


def test_a_leased_delivery_is_a_frozen_record_with_its_attempt_and_policy(store: Store) -> None:
    stored = outboxed(store, "http://127.0.0.1:9/hook", private=True)
    [leased] = store.claim_deliveries(10, 30, "outbox-1")
    assert isinstance(leased, Delivery)
    assert (leased.id, leased.job_id, leased.url) == (
        stored.id,
        stored.job_id,
        "http://127.0.0.1:9/hook",
    )
    assert (leased.attempt, leased.callback_private) == (1, True)
    assert json.loads(leased.body)["job_id"] == stored.job_id
    assert leased.webhook_secret and leased.webhook_secret not in repr(leased)
    assert [a.state for a in store.deliveries(stored.job_id)[0].attempt_log] == [
        DeliveryAttemptState.SENDING
    ]


def test_attempts_are_frozen_records_open_until_their_outcome(store: Store) -> None:
    job_id = submitted(store, version=1, trigger={}, external_id=None)
    assert store.claim("w1", 30) is not None
    [open_attempt] = store.attempts(job_id)
    assert isinstance(open_attempt, Attempt)
    assert (open_attempt.number, open_attempt.worker) == (1, "w1")
    assert (open_attempt.ended_at, open_attempt.outcome) == (None, None)
    ended = store.finish(
        job_id,
        "w1",
        status=JobStatus.SUCCEEDED,
        payload={"job_id": job_id, "event": "job.completed"},
        error=None,
        credit_cost=0.0,
        work_seconds=0.01,
    )
    assert ended is JobStatus.SUCCEEDED
    [done] = store.attempts(job_id)
    assert done.outcome is AttemptOutcome.SUCCEEDED and done.ended_at is not None


def test_a_stored_job_its_events_and_its_deliveries_are_frozen_records(store: Store) -> None:
    """What the API reads crosses the store's edge typed: a refused trigger's job, its event
    and its delivery with the attempt log, each frozen, with the columns named as fields."""
    stored = outboxed(store, "http://127.0.0.1:9/hook", private=True)
    assert isinstance(stored, DeliveryRecord)
    assert stored.job_id is not None
    job = store.job(stored.job_id)
    assert isinstance(job, StoredJob)
    assert (job.status, job.error_code, job.callback_url) == (
        JobStatus.FAILED,
        "missing_field",
        "http://127.0.0.1:9/hook",
    )
    assert job.result is not None and job.result["job_id"] == job.id
    assert (job.first_claimed_at, job.deduplicated, job.priority) == (None, False, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.QUEUED  # type: ignore[misc]
    [event] = store.events(job.id)
    assert isinstance(event, JobEvent)
    assert (event.job_id, event.status, event.detail) == (job.id, JobStatus.FAILED, job.result)
    assert store.events(job.id, after=event.id) == []
    assert (stored.status, stored.attempts, stored.attempt_log) == (DeliveryStatus.PENDING, 0, ())
    store.claim_deliveries(10, 30, "outbox-1")
    [leased] = store.deliveries(job.id)
    [attempt] = leased.attempt_log
    assert isinstance(attempt, DeliveryAttemptRecord)
    assert (attempt.number, attempt.state, attempt.duration_ms) == (
        1,
        DeliveryAttemptState.SENDING,
        None,
    )
    one = store.delivery(stored.id)
    assert one is not None and (one.status, one.attempt_log) == (DeliveryStatus.SENDING, ())
    assert store.job("job_none") is None and store.delivery("msg_none") is None
