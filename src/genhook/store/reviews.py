"""The review queue's part of the store: hold a job for review, list the held jobs, and carry
out a person's decision, each one transaction (see :mod:`genhook.review`).

A held job is ``awaiting_review``: out of the queue (it is not waiting, so no queue limit
counts it and no worker claims it), its lease released, its attempt closed
(``awaiting_review``) and its credits settled; the ``job_reviews`` row of its round holds the
candidate payload. It has not ended (``finished_at`` is None), so retention never purges a held
job: its retention starts when it ends. Approving ends it ``succeeded`` (outboxing the payload
as any end does); rejecting puts it back in the queue; cancelling it ends it ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from genhook.errors import ErrorCode, GenhookError
from genhook.ids import new_id
from genhook.review import ReviewBody, approved_payload
from genhook.status import AttemptOutcome, JobStatus
from genhook.store.jobs import _CANCELLED, _REQUEUE, Encoded, JobStore
from genhook.store.records import StoredJob
from genhook.store.schema import job_reviews, jobs, services

PayloadUrls = Callable[[Mapping[str, Any]], dict[str, Any]]
"""Makes a payload's asset URLs afresh (presigned URLs signed again), as approving applies."""


@dataclass(frozen=True, slots=True)
class HeldReview:
    """A job held for review now: its candidate payload and quality reports, the round it is
    in, and the earlier rounds' decisions (``history``: round, decision, note, when, by)."""

    job_id: str
    service_id: str
    service: str
    workflow_id: str
    external_id: str | None
    round: int
    held_at: float
    payload: dict[str, Any]
    quality: list[dict[str, Any]]
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Decided:
    """What a review did: the job's status afterwards (``succeeded`` or ``queued``) and the
    round decided."""

    job_id: str
    decision: str
    status: JobStatus
    round: int


class ReviewStore(JobStore):
    """Holding jobs for review and the decisions on them."""

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
    ) -> JobStatus | None:
        """Hold a job the worker still holds for review, in one transaction: released
        ``awaiting_review`` with the attempt's credits settled and its time counted, its
        outputs published (``publish``), its attempt closed, the candidate ``payload`` and the
        ``quality`` reports stored as the job's next review round. Nothing is outboxed.

        A cancel recorded first wins, as in ``finish``: the job ends ``cancelled`` (outboxing
        ``cancelled``) and nothing is published. Returns ``awaiting_review``, ``cancelled``, or
        None when the worker no longer held the lease."""
        now = self.clock.now()
        encoded = Encoded.of(payload)
        with self._write() as conn:
            done = self._release(
                conn,
                job_id,
                worker,
                credit_cost,
                work_seconds,
                cancel_requested=False,
                status=JobStatus.AWAITING_REVIEW,
                updated_at=now,
            )
            if done is None:
                return self._end_cancelled(
                    conn, job_id, worker, credit_cost, work_seconds, cancelled, now, made
                )
            if publish is not None:
                publish()  # inside the transaction: the files go live only if this commits
            self._close_attempt(
                conn,
                job_id,
                AttemptOutcome.AWAITING_REVIEW,
                None,
                now,
                credit_cost=credit_cost,
                made=made,
            )
            last = conn.execute(
                sa.select(sa.func.max(job_reviews.c.round)).where(job_reviews.c.job_id == job_id)
            ).scalar()
            round_ = int(last or 0) + 1
            conn.execute(
                job_reviews.insert().values(
                    id=new_id("rev"),
                    job_id=job_id,
                    service_id=done.service_id,
                    round=round_,
                    held_at=now,
                    payload=encoded.parsed,
                    quality=[dict(q) for q in quality],
                )
            )
            detail = {
                "review_round": round_,
                "quality_warning": encoded.parsed.get("quality_warning"),
            }
            self._event(conn, job_id, JobStatus.AWAITING_REVIEW, detail, now)
        return JobStatus.AWAITING_REVIEW

    def review_notes(self, job_id: str) -> list[str]:
        """The notes of the job's rejected review rounds, oldest first (a worker folds them
        into the prompts of the job's next attempt)."""
        with self._read() as conn:
            notes = conn.execute(
                sa.select(job_reviews.c.note)
                .where(job_reviews.c.job_id == job_id, job_reviews.c.decision == "reject")
                .order_by(job_reviews.c.round)
            ).scalars()
            return [n for n in notes if n]

    def held_reviews(
        self, service_id: str | None = None, limit: int = 100, urls: PayloadUrls | None = None
    ) -> list[HeldReview]:
        """The jobs held for review now (of one service, or of all), longest held first, each
        with its earlier rounds; each candidate payload's asset URLs made afresh by ``urls``
        where given (presigned URLs signed at hold time expire while a job waits)."""
        pending = (
            sa.select(
                job_reviews,
                jobs.c.workflow_id,
                jobs.c.external_id,
                services.c.name.label("service"),
            )
            .join(jobs, jobs.c.id == job_reviews.c.job_id)
            .join(services, services.c.id == job_reviews.c.service_id)
            .where(job_reviews.c.decided_at.is_(None), jobs.c.status == JobStatus.AWAITING_REVIEW)
            .order_by(job_reviews.c.held_at, job_reviews.c.id)
            .limit(limit)
        )
        if service_id is not None:
            pending = pending.where(job_reviews.c.service_id == service_id)
        with self._read() as conn:
            rows = conn.execute(pending).all()
            ids = [r.job_id for r in rows if r.round > 1]
            earlier: dict[str, list[dict[str, Any]]] = {}
            if ids:
                for past in conn.execute(
                    sa.select(job_reviews)
                    .where(job_reviews.c.job_id.in_(ids), job_reviews.c.decided_at.is_not(None))
                    .order_by(job_reviews.c.job_id, job_reviews.c.round)
                ):
                    earlier.setdefault(past.job_id, []).append(
                        {
                            "round": past.round,
                            "decision": past.decision,
                            "note": past.note,
                            "decided_at": past.decided_at,
                            "decided_by": past.decided_by,
                            "prompt_used": (past.payload.get("metadata") or {}).get("prompt_used"),
                        }
                    )
        return [
            HeldReview(
                job_id=r.job_id,
                service_id=r.service_id,
                service=r.service,
                workflow_id=r.workflow_id,
                external_id=r.external_id,
                round=int(r.round),
                held_at=float(r.held_at),
                payload=dict(r.payload) if urls is None else urls(r.payload),
                quality=list(r.quality or ()),
                history=tuple(earlier.get(r.job_id, ())),
            )
            for r in rows
        ]

    def decide_review(
        self,
        job_id: str,
        review: ReviewBody,
        *,
        by: str,
        urls: PayloadUrls | None = None,
    ) -> Decided:
        """Carry out a review of a held job in one transaction: approve ends it ``succeeded``
        with the held payload as edited (outboxed to its callback), its asset URLs made afresh
        by ``urls`` where given (presigned S3 URLs signed at hold time may have expired while
        it was held: :func:`genhook.storage_s3.url_refresher`); reject puts it back in the
        queue now (its retry schedule afresh: the attempts so far are spared), the note kept
        for its next attempt's prompts. ``not_awaiting_review`` (nothing changed) when the job
        is not held now (never was, or another decision came first); ``not_found`` for no
        such job."""
        now = self.clock.now()
        with self._write() as conn:
            status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
            if status is None:
                raise GenhookError(ErrorCode.NOT_FOUND, "no such job")
            pending = conn.execute(
                sa.select(job_reviews)
                .where(job_reviews.c.job_id == job_id, job_reviews.c.decided_at.is_(None))
                .order_by(job_reviews.c.round.desc())
                .limit(1)
                .with_for_update()
            ).first()
            if status != JobStatus.AWAITING_REVIEW or pending is None:
                raise GenhookError(
                    ErrorCode.NOT_AWAITING_REVIEW, f"the job is {status}, not awaiting review"
                )
            held = jobs.c.status == JobStatus.AWAITING_REVIEW
            if review.decision == "approve":
                when = datetime.fromtimestamp(now, UTC)
                approved = approved_payload(pending.payload, review, when=when)
                encoded = Encoded.of(approved if urls is None else urls(approved))
                done = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, held)
                    .values(
                        status=JobStatus.SUCCEEDED,
                        result=encoded.parsed,
                        error_code=None,
                        finished_at=now,
                        updated_at=now,
                    )
                    .returning(*jobs.c)
                ).first()
                after = JobStatus.SUCCEEDED
            else:
                done = conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, held)
                    .values(
                        status=JobStatus.QUEUED,
                        run_after=now,
                        hold_reason=None,
                        updated_at=now,
                        spared_attempts=jobs.c.attempts,
                    )
                    .returning(jobs.c.service_id)
                ).first()
                after = JobStatus.QUEUED
            if done is None:
                raise GenhookError(ErrorCode.NOT_AWAITING_REVIEW, "another decision came first")
            conn.execute(
                job_reviews.update()
                .where(job_reviews.c.id == pending.id)
                .values(
                    decision=review.decision,
                    note=review.note,
                    alt_text=review.alt_text,
                    caption=review.caption,
                    decided_by=by[:100],
                    decided_at=now,
                )
            )
            if review.decision == "approve":
                self._ended(conn, job_id, done, JobStatus.SUCCEEDED, encoded, None, now)
            else:
                conn.execute(_REQUEUE, {"service_id": done.service_id})
                detail = {
                    "review": {"round": pending.round, "decision": "reject", "note": review.note}
                }
                self._event(conn, job_id, JobStatus.QUEUED, detail, now)
        return Decided(job_id, review.decision, after, int(pending.round))

    def cancel_held(
        self, job_id: str, payload: Callable[[StoredJob], Mapping[str, Any]]
    ) -> JobStatus | None:
        """Cancel a job held for review: it ends ``cancelled`` (its cancelled payload, built by
        ``payload`` from its record, outboxed), its review round closed ``cancelled``. None
        when the job is not held now (nothing changed)."""
        now = self.clock.now()
        with self._write() as conn:
            row = (
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, jobs.c.status == JobStatus.AWAITING_REVIEW)
                    .values(
                        status=JobStatus.CANCELLED,
                        cancel_requested=True,
                        error_code=ErrorCode.CANCELLED.value,
                        finished_at=now,
                        updated_at=now,
                    )
                    .returning(*jobs.c)
                )
            ).first()
            if row is None:
                return None
            encoded = Encoded.of(payload(StoredJob.from_row(row._mapping)))
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(result=encoded.parsed))
            conn.execute(
                job_reviews.update()
                .where(job_reviews.c.job_id == job_id, job_reviews.c.decided_at.is_(None))
                .values(decision="cancelled", decided_by="cancel", decided_at=now)
            )
            self._ended(conn, job_id, row, JobStatus.CANCELLED, encoded, _CANCELLED, now)
        return JobStatus.CANCELLED
