"""Frozen records the store returns: a row that crosses the store's edge, typed.

A row read as ``dict[str, Any]`` lets a misspelled column name through to run time; these
types make mypy check each one, and being frozen, nothing downstream can change what the
store read. Each is built from a row by ``from_row`` at the store's edge, so the columns it
needs are named in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genhook.errors import ErrorCode
from genhook.status import AttemptOutcome, DeliveryAttemptState, DeliveryStatus, JobStatus


@dataclass(frozen=True, slots=True)
class Service:
    """A requesting service: who an API key belongs to, and the secret its callbacks carry.

    The key's hash is not kept here: once a key has been looked up, nothing needs it.
    """

    id: str
    name: str
    api_key_prefix: str
    webhook_secret: str = field(repr=False)  # never in a log line or a traceback
    rate_limit: str | None
    daily_budget: float | None
    paused_at: float | None
    created_at: float
    queue_limit: int | None = None  # None: GENHOOK_QUEUE_LIMIT (10,000)
    on_budget: str = "hold"  # hold | fail
    sandbox: bool = False  # --test: procedural at 0 credits, "test": true in payloads
    paused_reason: str | None = None
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_until: float | None = None
    key_rotated_at: float | None = None
    retention: str | None = None  # e.g. "30d"; None: GENHOOK_RETENTION

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Service:
        """The service of a ``services`` row."""
        return cls(
            id=row["id"],
            name=row["name"],
            api_key_prefix=row["api_key_prefix"],
            webhook_secret=row["webhook_secret"],
            rate_limit=row["rate_limit"],
            daily_budget=row["daily_budget"],
            paused_at=row["paused_at"],
            created_at=row["created_at"],
            queue_limit=row["queue_limit"],
            on_budget=row["on_budget"],
            sandbox=bool(row["sandbox"]),
            paused_reason=row["paused_reason"],
            previous_secret=row["previous_secret"],
            previous_secret_until=row["previous_secret_until"],
            key_rotated_at=row["key_rotated_at"],
            retention=row.get("retention"),
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A job as a worker claimed it: what it needs to run one attempt and account for it.

    ``claimed_at`` is this attempt's start on the store's clock; ``attempts`` already counts
    this attempt; ``processing_seconds`` and ``credit_cost`` are the earlier attempts' sums.
    """

    id: str
    service_id: str
    workflow_id: str
    workflow_version: int
    status: JobStatus
    input: dict[str, Any]
    external_id: str | None
    attempts: int
    processing_seconds: float
    credit_cost: float
    cancel_requested: bool
    created_at: float
    claimed_at: float
    backend: str | None = None
    estimate: float = 0.0
    reserved: float = 0.0
    spared_attempts: int = 0  # attempts that do not count against the retry schedule
    refusal: ErrorCode | None = None  # claimed only to be ended at once (budget_exceeded)
    sandbox: bool = False  # procedural at 0 credits, "test": true in its payloads
    envelope: dict[str, Any] | None = None  # the trigger envelope but callback_url
    callback_url: str | None = None
    batch_id: str | None = None  # the batch that created it (its end may end the batch)

    @property
    def client_metadata(self) -> dict[str, Any] | None:
        """The trigger's ``client_metadata``, echoed in every payload (None: none sent)."""
        return envelope_metadata(self.envelope)

    @property
    def counted_attempts(self) -> int:
        """The attempts that count against the retry schedule (this one included)."""
        return self.attempts - self.spared_attempts

    @classmethod
    def from_row(
        cls, row: Mapping[Any, Any], *, claimed_at: float, refusal: ErrorCode | None = None
    ) -> Job:
        """The job of a ``jobs`` row claimed at ``claimed_at``."""
        return cls(
            id=row["id"],
            service_id=row["service_id"],
            workflow_id=row["workflow_id"],
            workflow_version=int(row["workflow_version"]),
            status=JobStatus(row["status"]),
            input=dict(row["input"]),
            external_id=row["external_id"],
            attempts=int(row["attempts"]),
            processing_seconds=float(row["processing_seconds"]),
            credit_cost=float(row["credit_cost"]),
            cancel_requested=bool(row["cancel_requested"]),
            created_at=float(row["created_at"]),
            claimed_at=claimed_at,
            backend=row["backend"],
            estimate=float(row["estimate"] or 0.0),
            reserved=float(row["reserved"] or 0.0),
            spared_attempts=int(row["spared_attempts"] or 0),
            refusal=refusal,
            sandbox=bool(row["sandbox"]),
            envelope=None if row.get("envelope") is None else dict(row["envelope"]),
            callback_url=row.get("callback_url"),
            batch_id=row.get("batch_id"),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery as an outbox leased it: what one attempt at sending it needs.

    ``attempt`` is this attempt's number (already in the log as ``sending``). A ``callback``
    (a job's payload) is signed with its service's ``webhook_secret``, and also with
    ``previous_secret`` while a rotated secret's overlap lasts (None otherwise);
    ``callback_private`` is the callback policy taken when the trigger was accepted (the sender
    applies that decision, not its own process's setting). An ``alert`` (an operator event) has
    no job, no service and no secret here: the outbox signs it with ``GENHOOK_ALERT_SECRET``,
    and it follows the sending process's callback policy.
    """

    id: str
    job_id: str | None
    service_id: str | None
    url: str
    body: bytes = field(repr=False)
    attempt: int
    webhook_secret: str | None = field(repr=False)  # never in a log line or a traceback
    callback_private: bool
    kind: str = "callback"  # callback | alert
    endpoint: str | None = None  # scheme://host:port of url
    previous_secret: str | None = field(default=None, repr=False)

    @property
    def is_alert(self) -> bool:
        return self.kind == "alert"

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, now: float) -> Delivery:
        """The delivery of a ``deliveries`` row (outer-)joined with its service's secrets and
        its job's callback policy, leased at ``now`` (which says whether the service's previous
        secret still signs)."""
        until = row["previous_secret_until"]
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            service_id=row["service_id"],
            url=row["url"],
            body=bytes(row["body"]),
            attempt=int(row["attempts"]),
            webhook_secret=row["webhook_secret"],
            callback_private=bool(row["callback_private"]),
            kind=row["kind"],
            endpoint=row["endpoint"],
            previous_secret=row["previous_secret"] if until is not None and now < until else None,
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a job: who ran it, when, and how it ended (open while ``ended_at`` is
    None, so ``outcome`` is None too)."""

    number: int
    worker: str
    started_at: float
    ended_at: float | None
    outcome: AttemptOutcome | None
    error_code: str | None
    error_description: str | None
    backend: str | None = None
    made: dict[str, float] | None = None  # {"image": 6, "video_seconds": 0.0}
    credit_cost: float = 0.0

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Attempt:
        """The attempt of a ``job_attempts`` row."""
        outcome = row["outcome"]
        return cls(
            number=int(row["number"]),
            worker=row["worker"],
            started_at=float(row["started_at"]),
            ended_at=row["ended_at"],
            outcome=None if outcome is None else AttemptOutcome(outcome),
            error_code=row["error_code"],
            error_description=row["error_description"],
            backend=row["backend"],
            made=None if row["made"] is None else dict(row["made"]),
            credit_cost=float(row["credit_cost"] or 0.0),
        )


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as the store holds it: every column the API's views and the callers read.

    ``deduplicated`` is no column: it says the trigger matched this earlier job by its dedup
    key (set only on the job that :meth:`~genhook.store.jobs.JobStore.submit` returns).
    """

    id: str
    service_id: str
    workflow_id: str
    workflow_version: int
    status: JobStatus
    input: dict[str, Any]
    external_id: str | None
    callback_url: str | None
    callback_private: bool
    envelope: dict[str, Any] | None
    created_at: float
    updated_at: float
    run_after: float
    first_claimed_at: float | None
    finished_at: float | None
    attempts: int
    processing_seconds: float
    cancel_requested: bool
    credit_cost: float
    error_code: str | None
    result: dict[str, Any] | None
    hold_reason: str | None
    priority: int
    backend: str | None
    deduplicated: bool = False
    retry_of: str | None = None  # the ended job POST /v1/jobs/{id}/retry made this one from
    batch_id: str | None = None  # the batch that created it (POST .../batches)
    sandbox: bool = False  # a sandbox service's job: "test": true in every payload

    @property
    def client_metadata(self) -> dict[str, Any] | None:
        """The trigger's ``client_metadata``, echoed in every payload (None: none sent)."""
        return envelope_metadata(self.envelope)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any], *, deduplicated: bool = False) -> StoredJob:
        """The job of a ``jobs`` row."""
        result = row["result"]
        envelope = row["envelope"]
        return cls(
            id=row["id"],
            service_id=row["service_id"],
            workflow_id=row["workflow_id"],
            workflow_version=int(row["workflow_version"]),
            status=JobStatus(row["status"]),
            input=dict(row["input"]),
            external_id=row["external_id"],
            callback_url=row["callback_url"],
            callback_private=bool(row["callback_private"]),
            envelope=None if envelope is None else dict(envelope),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            run_after=float(row["run_after"]),
            first_claimed_at=row["first_claimed_at"],
            finished_at=row["finished_at"],
            attempts=int(row["attempts"]),
            processing_seconds=float(row["processing_seconds"]),
            cancel_requested=bool(row["cancel_requested"]),
            credit_cost=float(row["credit_cost"]),
            error_code=row["error_code"],
            result=None if result is None else dict(result),
            hold_reason=row["hold_reason"],
            priority=int(row["priority"]),
            backend=row["backend"],
            deduplicated=deduplicated,
            retry_of=row.get("retry_of"),
            batch_id=row.get("batch_id"),
            sandbox=bool(row.get("sandbox") or False),
        )


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One state change of a job (an ``events`` row): ``detail`` is the completion payload of
    a terminal one, else what the change adds (a retry's reason and time), or None."""

    id: int
    job_id: str
    at: float
    status: JobStatus
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> JobEvent:
        """The event of an ``events`` row."""
        detail = row["detail"]
        return cls(
            id=int(row["id"]),
            job_id=row["job_id"],
            at=float(row["at"]),
            status=JobStatus(row["status"]),
            detail=None if detail is None else dict(detail),
        )


@dataclass(frozen=True, slots=True)
class DeliveryAttemptRecord:
    """One attempt of a delivery (a ``delivery_attempts`` row): written as ``sending`` before
    its request goes out, ``done`` with its answer (``duration_ms`` None until then)."""

    number: int
    at: float
    state: DeliveryAttemptState
    status_code: int | None
    error: str | None
    duration_ms: float | None
    manual: bool

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> DeliveryAttemptRecord:
        """The attempt of a ``delivery_attempts`` row."""
        return cls(
            number=int(row["number"]),
            at=float(row["at"]),
            state=DeliveryAttemptState(row["state"]),
            status_code=row["status_code"],
            error=row["error"],
            duration_ms=row["duration_ms"],
            manual=bool(row["manual"]),
        )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery as the store holds it (no lease, no body's secrets), with its attempt log
    when read by :meth:`~genhook.store.deliveries.DeliveryStore.deliveries` (empty otherwise)."""

    id: str
    job_id: str | None
    service_id: str | None
    kind: str
    endpoint: str | None
    url: str
    body: bytes = field(repr=False)
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None
    created_at: float
    delivered_at: float | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: tuple[DeliveryAttemptRecord, ...] = ()

    @classmethod
    def from_row(
        cls, row: Mapping[Any, Any], attempt_log: tuple[DeliveryAttemptRecord, ...] = ()
    ) -> DeliveryRecord:
        """The delivery of a ``deliveries`` row."""
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            service_id=row["service_id"],
            kind=row["kind"],
            endpoint=row["endpoint"],
            url=row["url"],
            body=bytes(row["body"]),
            status=DeliveryStatus(row["status"]),
            attempts=int(row["attempts"]),
            next_attempt_at=row["next_attempt_at"],
            created_at=float(row["created_at"]),
            delivered_at=row["delivered_at"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            attempt_log=attempt_log,
        )


def envelope_metadata(envelope: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``client_metadata`` of a stored envelope (the ``jobs.envelope`` column), or None."""
    found = None if envelope is None else envelope.get("client_metadata")
    return dict(found) if isinstance(found, Mapping) else None
