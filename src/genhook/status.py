"""The states genhook stores: a job's status, how an attempt ended, where a delivery stands.

One vocabulary for the store, the worker, the outbox and the API, so that a misspelled state
is a mypy error rather than a query that silently matches nothing. Each is a ``StrEnum``: a
member equals its string, so what is stored in the database and written in JSON is unchanged.
Flow control adds states here (the review queue's ``awaiting_review``; the contract's
``expired``).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's ``status`` column (and the status its events record)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    AWAITING_REVIEW = "awaiting_review"  # a QC policy of on_fail: review holds it for a person
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # its trigger's deadline passed before it started


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)
"""A job in one of these has ended: nothing moves it again."""

CLAIMABLE: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RETRYING})
"""A worker may claim a job in one of these once its ``run_after`` has come."""

CLAIMABLE_ORDER: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.RETRYING)
"""CLAIMABLE as the partial indexes list it: SQLite uses a partial index only for a query whose
``IN`` list is the index's own, inline and in the same order (bound parameters scan the table)."""


class AttemptOutcome(StrEnum):
    """How one attempt of a job ended (an attempt row's ``outcome``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRYING = "retrying"
    LOST = "lost"  # its worker stopped renewing the lease
    AWAITING_REVIEW = "awaiting_review"  # it made outputs that QC failed: held for review
    HANDED_BACK = "handed_back"  # its worker shut down and gave the job back (not counted)


class DeliveryStatus(StrEnum):
    """A delivery's ``status`` column: waiting, in flight, or done for good."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"  # a non-terminal event (job.started, job.progress) its job outlived


class DeliveryOutcome(StrEnum):
    """How one attempt at sending a delivery ended, as its sender saw it."""

    DELIVERED = "delivered"  # a 2xx answer
    RETRY = "retry"  # anything else: tried again on the schedule while it lasts
    GONE = "gone"  # HTTP 410: no further attempts
    BLOCKED = "blocked"  # refused by the SSRF guard: no further attempts


class DeliveryAttemptState(StrEnum):
    """A delivery attempt row's ``state``: written before its request goes out."""

    SENDING = "sending"
    DONE = "done"
    INTERRUPTED = "interrupted"  # its sender stopped before the answer was recorded
