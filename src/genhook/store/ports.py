"""Narrow store ports: the part of :class:`~genhook.store.store.Store` each role uses.

The worker, the outbox and the API each depend on a ``Protocol`` naming exactly the store
methods that role calls, with ``Store``'s signatures, instead of on the whole store. What a role
may do to durable state is then written in one place, mypy refuses a call outside it, and a
second store (a remote one, a fake for a load test) need only provide the port it serves.
Database errors never cross a port: the store translates them at its edge into
``store_unavailable`` (see :mod:`genhook.store.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from genhook.clock import Clock
from genhook.errors import GenhookError
from genhook.flow import Breaker
from genhook.review import ReviewBody
from genhook.status import DeliveryOutcome, JobStatus
from genhook.store.admit import Admission, Submission
from genhook.store.base import Health, Row
from genhook.store.batches import StoredBatch
from genhook.store.deliveries import DeliveryResult
from genhook.store.jobs import Finish, Lease
from genhook.store.listing import Cursor, JobFilter, Page
from genhook.store.ops import FailedDelivery, HeldJob, Resumed, Series, Summary
from genhook.store.records import (
    Attempt,
    Delivery,
    DeliveryRecord,
    Job,
    JobEvent,
    Service,
    StoredJob,
)
from genhook.store.retention import PurgedBatch, PurgedJob
from genhook.store.reviews import Decided, HeldReview, PayloadUrls

__all__ = ["ApiStore", "OutboxStore", "WorkerStore"]


class WorkerStore(Protocol):
    """What a worker does: claim a job, keep its lease, and record how the attempt ended."""

    @property
    def clock(self) -> Clock: ...

    def claim(self, worker: str, lease_seconds: float) -> Job | None: ...

    def claim_many(self, worker: str, lease_seconds: float, most: int) -> list[Job]: ...

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float) -> Lease: ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def finish(
        self,
        job_id: str,
        worker: str,
        *,
        status: JobStatus,
        payload: Mapping[str, Any],
        error: GenhookError | None,
        credit_cost: float,
        work_seconds: float,
        cancelled: Mapping[str, Any] | None = None,
        publish: Callable[[], None] | None = None,
        made: Mapping[str, float] | None = None,
    ) -> JobStatus | None: ...

    def finish_many(self, endings: Sequence[Finish]) -> list[JobStatus | None]: ...

    def retry(
        self,
        job_id: str,
        worker: str,
        *,
        error: GenhookError,
        delay: float,
        credit_cost: float,
        work_seconds: float,
        cancelled: Mapping[str, Any],
        made: Mapping[str, float] | None = None,
        spared: bool = False,
    ) -> JobStatus | None: ...

    def hold_for_review(
        self,
        job_id: str,
        worker: str,
        *,
        payload: Mapping[str, Any],
        quality: Sequence[Mapping[str, Any]],
        credit_cost: float,
        work_seconds: float,
        cancelled: Mapping[str, Any],
        publish: Callable[[], None] | None = None,
        made: Mapping[str, float] | None = None,
    ) -> JobStatus | None: ...

    def review_notes(self, job_id: str) -> list[str]: ...

    def backend_failed(self, backend: str, error: GenhookError) -> Breaker: ...

    def renew_leases(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> dict[str, bool]: ...

    def cancels_requested(self, job_ids: Sequence[str]) -> set[str]: ...

    def hand_back(self, worker: str, job_ids: Sequence[str]) -> list[str]: ...

    def record_progress(
        self, worker: str, progress: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> int: ...

    def recent_outputs(
        self,
        service_id: str,
        workflow_id: str,
        external_id: str,
        *,
        exclude: str = "",
        limit: int = 20,
    ) -> list[tuple[str, dict[str, Any]]]: ...

    def take_probe(self) -> str | None: ...

    def sweep_deadlines(self, limit: int = 200, batches: int = 10) -> int: ...

    def probe_result(self, backend: str, ok: bool, reason: str | None = None) -> None: ...


class OutboxStore(Protocol):
    """What the outbox does: lease due deliveries, renew and reclaim leases, log attempts (a
    turn's answers and its next claim in one transaction)."""

    def claim_deliveries(
        self, limit: int, lease_seconds: float, owner: str = ""
    ) -> list[Delivery]: ...

    def renew_deliveries(self, ids: Collection[str], owner: str, lease_seconds: float) -> int: ...

    def expire_dead_leases(self, is_dead: Callable[[str], bool]) -> int: ...

    def next_delivery_at(self, after: float | None = None) -> float | None: ...

    def record_delivery(
        self,
        delivery_id: str,
        *,
        number: int,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: DeliveryOutcome,
        next_attempt_at: float | None,
        owner: str = "",
    ) -> bool: ...

    def record_deliveries(
        self, results: Sequence[DeliveryResult], owner: str = ""
    ) -> list[bool]: ...

    def record_and_claim(
        self,
        results: Sequence[DeliveryResult],
        limit: int,
        lease_seconds: float,
        owner: str = "",
    ) -> tuple[list[bool], list[Delivery]]: ...


class ApiStore(Protocol):
    """What the HTTP API does: authenticate, accept or refuse triggers, read, cancel, replay."""

    def service_for_key(self, api_key: str) -> Service | None: ...

    def key_epoch(self) -> int | None: ...

    def submission(
        self,
        *,
        service_id: str,
        workflow_id: str,
        workflow_version: int,
        trigger: Mapping[str, Any],
        external_id: str | None,
        callback_url: str | None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        envelope: Mapping[str, Any] | None = None,
        callback_private: bool = False,
        job_id: str | None = None,
        admission: Admission | None = None,
    ) -> Submission: ...

    async def submit_async(self, item: Submission) -> tuple[StoredJob, bool]: ...

    def reject(
        self,
        *,
        job_id: str,
        service_id: str,
        workflow_id: str,
        workflow_version: int,
        body: Any,
        external_id: str | None,
        callback_url: str | None,
        error: GenhookError,
        payload: Mapping[str, Any],
        envelope: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        callback_private: bool = False,
    ) -> tuple[StoredJob, bool]: ...

    def job(self, job_id: str) -> StoredJob | None: ...

    def purged_job(self, job_id: str) -> PurgedJob | None: ...

    def purged_batch(self, batch_id: str) -> PurgedBatch | None: ...

    def paused(self, service_id: str) -> bool: ...

    def jobs_by_external_id(
        self, service_id: str, external_id: str, limit: int = 100
    ) -> list[StoredJob]: ...

    def attempts(self, job_id: str) -> list[Attempt]: ...

    # batches (store/batches.py): POST /v1/workflows/{id}/batches, GET /v1/batches/{id}
    def submit_batch(
        self,
        *,
        batch_id: str,
        service_id: str,
        workflow_id: str,
        items: Sequence[Submission | GenhookError],
        callback_url: str | None,
        callback_private: bool = False,
    ) -> list[dict[str, Any]]: ...

    def batch(self, batch_id: str) -> StoredBatch | None: ...

    # the listing and retries (store/listing.py): GET /v1/jobs, POST /v1/jobs/{id}/retry
    def list_jobs(
        self,
        service_id: str,
        filters: JobFilter | None = None,
        *,
        limit: int = ...,
        after: Cursor | None = None,
    ) -> Page: ...

    def retried_by(self, job_id: str) -> list[str]: ...

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]: ...

    def cancel(
        self, job_id: str, payload: Callable[[StoredJob], Mapping[str, Any]]
    ) -> JobStatus: ...

    def deliveries(self, job_id: str) -> list[DeliveryRecord]: ...

    def delivery(self, delivery_id: str) -> DeliveryRecord | None: ...

    def replay(self, delivery_id: str) -> bool: ...

    def endpoints(self) -> list[Row]: ...

    def enable_endpoint(self, service: str, endpoint: str) -> Row | None: ...

    # the operator's view (store/ops.py): /v1/ops and the dashboard
    def ops_summary(self, window: str = ...) -> Summary: ...

    def ops_series(self, window: str = ...) -> Series: ...

    def held_jobs(self, limit: int = 100) -> list[HeldJob]: ...

    def failed_deliveries(self, limit: int = 50) -> list[FailedDelivery]: ...

    def resume_service(self, service: str) -> Resumed | None: ...

    # the review queue (store/reviews.py): /v1/reviews, /v1/ops/reviews and the dashboard
    def held_reviews(
        self, service_id: str | None = None, limit: int = 100, urls: PayloadUrls | None = None
    ) -> list[HeldReview]: ...

    def decide_review(
        self,
        job_id: str,
        review: ReviewBody,
        *,
        by: str,
        urls: PayloadUrls | None = None,
    ) -> Decided: ...

    def cancel_held(
        self, job_id: str, payload: Callable[[StoredJob], Mapping[str, Any]]
    ) -> JobStatus | None: ...

    def health(self) -> Health: ...

    def breakers(self) -> dict[str, Breaker]: ...


if TYPE_CHECKING:
    # mypy proves here that the one concrete store serves every port (a signature that drifts
    # in Store or in a port fails the type check, not a deployment)
    from genhook.store.store import Store

    _worker_port: type[WorkerStore] = Store
    _outbox_port: type[OutboxStore] = Store
    _api_port: type[ApiStore] = Store
