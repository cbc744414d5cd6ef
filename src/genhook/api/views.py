"""The JSON shapes of jobs and deliveries as the API shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from genhook.status import DeliveryStatus, JobStatus
from genhook.store.jobs import PRIORITY_NAMES
from genhook.store.records import Attempt, DeliveryRecord, StoredJob


def iso(t: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with ``Z`` (millisecond precision)."""
    if t is None:
        return None
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def status_url(public_url: str, job_id: str) -> str:
    """Where to poll a job."""
    return f"{public_url}/v1/jobs/{job_id}"


def accepted(job: StoredJob, public_url: str) -> dict[str, Any]:
    """The answer to a trigger: ``{job_id, status, workflow_id, status_url, created_at}``,
    with ``deduplicated: true`` when a dedup key matched an earlier job."""
    answer: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "workflow_id": job.workflow_id,
        "status_url": status_url(public_url, job.id),
        "created_at": iso(job.created_at),
    }
    if job.deduplicated:
        answer["deduplicated"] = True
    return answer


def hold_of(job: StoredJob, paused: bool, now: float) -> tuple[str | None, str | None]:
    """``(hold_reason, eligible_at)`` of a job: while it waits, why (its service is paused; else
    the reason recorded while its eligible_at is still ahead) and from when it may start."""
    if job.status not in (JobStatus.QUEUED, JobStatus.RETRYING):
        return None, None
    if paused:
        return "paused", None
    reason = job.hold_reason
    if reason is not None and job.run_after <= now:
        reason = None
    return reason, iso(job.run_after)


def job_view(
    job: StoredJob,
    attempts: list[Attempt],
    public_url: str,
    *,
    paused: bool = False,
    now: float | None = None,
    retried_by: list[str] | None = None,
) -> dict[str, Any]:
    """``GET /v1/jobs/{id}``: status, while it waits ``hold_reason`` and ``eligible_at``,
    attempts with their error reasons, and the result; ``retry_of`` (the job it retries),
    ``retried_by`` (the jobs made by retrying it) and ``batch_id`` (the batch that made it)."""
    hold_reason, eligible_at = hold_of(job, paused, job.updated_at if now is None else now)
    return {
        **accepted(job, public_url),
        "hold_reason": hold_reason,
        "eligible_at": eligible_at,
        "priority": PRIORITY_NAMES.get(job.priority, "normal"),
        "credit_cost": job.credit_cost,
        "workflow_version": job.workflow_version,
        "external_id": job.external_id,
        "callback_url": job.callback_url,
        "client_metadata": job.client_metadata,
        "updated_at": iso(job.updated_at),
        "finished_at": iso(job.finished_at),
        "next_attempt_at": iso(job.run_after) if job.status == JobStatus.RETRYING else None,
        "cancel_requested": job.cancel_requested,
        "retry_of": job.retry_of,
        "batch_id": job.batch_id,
        "retried_by": retried_by or [],
        "attempts": [
            {
                "number": a.number,
                "worker": a.worker,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at),
                "outcome": a.outcome,
                "backend": a.backend,
                "made": a.made,
                "credit_cost": a.credit_cost,
                "error": None
                if a.error_code is None
                else {"error_code": a.error_code, "error_description": a.error_description},
            }
            for a in attempts
        ],
        "result": job.result,
    }


def delivery_view(row: DeliveryRecord) -> dict[str, Any]:
    """One delivery with every attempt (status code, error, duration)."""
    return {
        "delivery_id": row.id,
        "webhook_id": row.id,
        "job_id": row.job_id,
        "url": row.url,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at)
        if row.status == DeliveryStatus.PENDING
        else None,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
        "attempt_log": [
            {
                "number": a.number,
                "at": iso(a.at),
                "state": a.state,  # sending | done | interrupted (the sender died mid-attempt)
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": None if a.duration_ms is None else round(a.duration_ms, 1),
            }
            for a in row.attempt_log
        ],
    }
