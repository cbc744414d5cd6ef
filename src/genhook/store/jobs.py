"""Jobs: durable submit (group commit, idempotency), claim with a lease, heartbeat, finish or
retry, cancel, and the queries behind the API. Ending a job outboxes its payload in the same
transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genhook.contract.wire import decode_payload, encode_payload
from genhook.errors import ErrorCode, GenhookError
from genhook.ids import new_id, new_job_id
from genhook.status import CLAIMABLE, AttemptOutcome, DeliveryStatus, JobStatus
from genhook.store.base import Row, StoreBase
from genhook.store.records import Attempt, Job
from genhook.store.schema import attempts, deliveries, events, jobs

IDEMPOTENCY_WINDOW = 24 * 3600.0
_CANCELLED = GenhookError(ErrorCode.CANCELLED)


@dataclass(frozen=True)
class Encoded:
    """A payload encoded once: ``body``, the bytes outboxed (signed and POSTed as they are), and
    ``parsed``, the same bytes read back, which is what the job's ``result`` and its event hold."""

    body: bytes
    parsed: dict[str, Any]

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Encoded:
        body = encode_payload(payload)
        return cls(body, decode_payload(body))


@dataclass(frozen=True)
class Lease:
    """What a heartbeat learns: is the lease still ours, and was cancellation asked for."""

    owned: bool
    cancel_requested: bool


class JobStore(StoreBase):
    """The life of a job, one transaction per state change."""

    def submit(
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
    ) -> tuple[Row, bool]:
        """Durably insert a queued job; ``(job, created)``. A repeated idempotency key within
        24 h with the same request hash returns the first job (created False), whether it was
        accepted or rejected; with another hash it raises ``idempotency_conflict``.

        ``trigger`` is the workflow's checked input; ``callback_url`` and ``envelope`` (the
        envelope's other fields) are kept beside it, never in it. ``callback_private``: the
        callback was accepted with private callbacks allowed (the sender applies that decision).
        ``job_id``: the id the API minted for this trigger (a new one when None)."""
        now = self.clock.now()
        job_id = job_id or new_job_id()
        row = {
            "id": job_id,
            "service_id": service_id,
            "workflow_id": workflow_id,
            "workflow_version": workflow_version,
            "status": JobStatus.QUEUED,
            "input": dict(trigger),
            "external_id": external_id,
            "callback_url": callback_url,
            "callback_private": callback_private,
            "envelope": None if envelope is None else dict(envelope),
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "created_at": now,
            "updated_at": now,
            "run_after": now,
            "attempts": 0,
            "processing_seconds": 0.0,
            "cancel_requested": False,
            "credit_cost": 0.0,
        }

        def insert(conn: sa.Connection) -> tuple[Row, bool]:
            existing = self._replayed(conn, service_id, idempotency_key, request_hash, now)
            if existing is not None:
                return existing, False
            conn.execute(jobs.insert(), row)
            conn.execute(
                events.insert(),
                {"job_id": job_id, "at": now, "status": JobStatus.QUEUED, "detail": None},
            )
            return row, True

        for _ in range(3):
            try:
                result: tuple[Row, bool] = self._batcher.run(insert)
                return result
            except IntegrityError:
                continue  # another process won the idempotency key: read it on the next pass
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not insert the job")

    def _replayed(
        self,
        conn: sa.Connection,
        service_id: str,
        key: str | None,
        request_hash: str | None,
        now: float,
    ) -> Row | None:
        """The job first made for ``key`` (same hash), None if the key is new; 409 otherwise."""
        if key is None:
            return None
        existing = self._idempotent(conn, service_id, key, now)
        if existing is not None and existing["request_hash"] != request_hash:
            raise GenhookError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "this Idempotency-Key was used within 24 h with another body",
            )
        return existing

    def _idempotent(self, conn: sa.Connection, service_id: str, key: str, now: float) -> Row | None:
        found = (
            conn.execute(
                sa.select(jobs).where(
                    jobs.c.service_id == service_id, jobs.c.idempotency_key == key
                )
            )
            .mappings()
            .first()
        )
        if found is None:
            return None
        if found["created_at"] < now - IDEMPOTENCY_WINDOW:
            # expired: free the key for the new job, keep the old job
            conn.execute(jobs.update().where(jobs.c.id == found["id"]).values(idempotency_key=None))
            return None
        return dict(found)

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
    ) -> tuple[Row, bool]:
        """Record an invalid trigger as a failed job, and outbox its payload if it has a URL;
        ``(job, created)``. Idempotency as in :meth:`submit`: a retried request (same key, same
        hash) gets the job first recorded for it, and nothing is outboxed again.

        ``job_id`` is the id the API minted for this trigger (and put in ``payload``)."""
        now = self.clock.now()
        encoded = Encoded.of(payload)
        row: Row = {
            "id": job_id,
            "service_id": service_id,
            "workflow_id": workflow_id,
            "workflow_version": workflow_version,
            "status": JobStatus.FAILED,
            "input": body if isinstance(body, dict) else {"_body": body},
            "external_id": external_id,
            "callback_url": callback_url,
            "callback_private": callback_private,
            "envelope": None if envelope is None else dict(envelope),
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "created_at": now,
            "updated_at": now,
            "run_after": now,
            "finished_at": now,
            "attempts": 0,
            "processing_seconds": 0.0,
            "cancel_requested": False,
            "credit_cost": 0.0,
            "error_code": error.code.value,
            "result": encoded.parsed,
        }
        for _ in range(3):
            try:
                with self._write() as conn:
                    existing = self._replayed(conn, service_id, idempotency_key, request_hash, now)
                    if existing is not None:
                        return existing, False
                    conn.execute(jobs.insert().values(**row))
                    self._event(conn, job_id, JobStatus.FAILED, encoded.parsed, now)
                    if callback_url:
                        self._outbox(conn, job_id, service_id, callback_url, encoded, now)
                return row, True
            except IntegrityError:
                continue  # another process won the idempotency key: read it on the next pass
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not record the refused trigger")

    def claim(self, worker: str, lease_seconds: float) -> Job | None:
        """Take the next due job (or one whose worker's lease ran out) and lease it to ``worker``.

        The candidate select uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (ignored by SQLite,
        where ``BEGIN IMMEDIATE`` already serialises writers), so two workers never take one job;
        the update is conditional on the state it was chosen in, so it cannot take a job that a
        cancel ended meanwhile. The job returned carries ``claimed_at``, the attempt's start.
        """
        now = self.clock.now()
        with self._write() as conn:
            stalled = conn.execute(
                sa.select(jobs.c.id)
                .where(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires < now)
                .order_by(jobs.c.lease_expires)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            if stalled is not None:
                self._close_lost_attempt(conn, stalled, lease_seconds, now)
                job_id = stalled
                claimable = sa.and_(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires < now)
            else:
                job_id = conn.execute(
                    sa.select(jobs.c.id)
                    .where(jobs.c.status.in_(CLAIMABLE), jobs.c.run_after <= now)
                    .order_by(jobs.c.run_after)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).scalar()
                claimable = jobs.c.status.in_(CLAIMABLE)
            if job_id is None:
                return None
            claimed = (
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, claimable)
                    .values(
                        status=JobStatus.RUNNING,
                        lease_owner=worker,
                        lease_expires=now + lease_seconds,
                        attempts=jobs.c.attempts + 1,
                        first_claimed_at=sa.func.coalesce(jobs.c.first_claimed_at, now),
                        updated_at=now,
                    )
                    .returning(*jobs.c)
                )
                .mappings()
                .first()
            )
            if claimed is None:
                return None
            conn.execute(
                attempts.insert().values(
                    job_id=job_id, number=claimed["attempts"], worker=worker, started_at=now
                )
            )
            self._event(conn, job_id, JobStatus.RUNNING, {"attempt": claimed["attempts"]}, now)
        return Job.from_row(claimed, claimed_at=now)

    def _close_lost_attempt(
        self, conn: sa.Connection, job_id: str, lease_seconds: float, now: float
    ) -> None:
        """End the open attempt of a job whose worker stopped renewing its lease; it worked
        until its last heartbeat (lease end minus one lease)."""
        started = conn.execute(
            sa.select(attempts.c.started_at, jobs.c.lease_expires)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(attempts.c.job_id == job_id, attempts.c.ended_at.is_(None))
        ).first()
        if started is not None:
            worked = max(0.0, started.lease_expires - lease_seconds - started.started_at)
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(processing_seconds=jobs.c.processing_seconds + worked)
            )
        conn.execute(
            attempts.update()
            .where(attempts.c.job_id == job_id, attempts.c.ended_at.is_(None))
            .values(
                ended_at=now,
                outcome=AttemptOutcome.LOST,
                error_code=ErrorCode.WORKER_LOST.value,
                error_description="the worker stopped renewing its lease",
            )
        )

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float) -> Lease:
        """Renew ``worker``'s lease on a running job."""
        now = self.clock.now()
        with self._write() as conn:
            row = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.lease_owner == worker,
                    jobs.c.status == JobStatus.RUNNING,
                )
                .values(lease_expires=now + lease_seconds)
                .returning(jobs.c.cancel_requested)
            ).first()
        return Lease(owned=row is not None, cancel_requested=bool(row and row[0]))

    def cancel_requested(self, job_id: str) -> bool:
        """Has cancellation been asked for this job?"""
        with self._read() as conn:
            return bool(
                conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
            )

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
    ) -> JobStatus | None:
        """End a job the worker still holds, and outbox its payload, in one transaction.

        A cancel recorded before this transaction wins: the job ends ``cancelled`` with the
        ``cancelled`` payload (this attempt's credits and time counted), and ``publish`` (which
        makes the attempt's assets the job's) is not called. Returns the status the job ended
        with, or None when ``worker`` no longer held its lease (nothing changed).
        """
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
                status=status,
                result=encoded.parsed,
                error_code=error.code.value if error else None,
                finished_at=now,
                updated_at=now,
            )
            if done is not None and publish is not None:
                publish()  # inside the transaction: the files go live only if this commits
            if done is None:
                status, error = JobStatus.CANCELLED, _CANCELLED
                encoded = Encoded.of(cancelled) if cancelled else encoded
                done = self._release(
                    conn, job_id, worker, credit_cost, work_seconds, **self._cancelled(encoded, now)
                )
                if done is None:
                    return None
            self._ended(conn, job_id, done, status, encoded, error, now)
        return status

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
    ) -> JobStatus | None:
        """Put a job the worker holds back in the queue after ``delay`` seconds, or, when a
        cancel was recorded meanwhile, end it ``cancelled`` (outboxing ``cancelled``).
        Returns ``retrying`` or ``cancelled``, None when the lease was lost."""
        now = self.clock.now()
        with self._write() as conn:
            done = self._release(
                conn,
                job_id,
                worker,
                credit_cost,
                work_seconds,
                cancel_requested=False,
                status=JobStatus.RETRYING,
                run_after=now + delay,
                error_code=error.code.value,
                updated_at=now,
            )
            if done is not None:
                self._close_attempt(conn, job_id, AttemptOutcome.RETRYING, error, now)
                self._event(
                    conn,
                    job_id,
                    JobStatus.RETRYING,
                    {"error": error.to_dict(), "retry_at": now + delay},
                    now,
                )
                return JobStatus.RETRYING
            encoded = Encoded.of(cancelled)
            done = self._release(
                conn, job_id, worker, credit_cost, work_seconds, **self._cancelled(encoded, now)
            )
            if done is None:
                return None
            self._ended(conn, job_id, done, JobStatus.CANCELLED, encoded, _CANCELLED, now)
        return JobStatus.CANCELLED

    @staticmethod
    def _cancelled(encoded: Encoded, now: float) -> dict[str, Any]:
        """The columns of a job that ends cancelled (for :meth:`_release`)."""
        return {
            "cancel_requested": True,
            "status": JobStatus.CANCELLED,
            "result": encoded.parsed,
            "error_code": ErrorCode.CANCELLED.value,
            "finished_at": now,
            "updated_at": now,
        }

    def _ended(
        self,
        conn: sa.Connection,
        job_id: str,
        done: sa.Row[Any],
        status: JobStatus,
        encoded: Encoded,
        error: GenhookError | None,
        now: float,
    ) -> None:
        """What follows a job's end in its transaction: close the attempt, log, outbox."""
        self._close_attempt(conn, job_id, AttemptOutcome(status), error, now)
        self._event(conn, job_id, status, encoded.parsed, now)
        if done.callback_url:
            self._outbox(conn, job_id, done.service_id, done.callback_url, encoded, now)

    def _release(
        self,
        conn: sa.Connection,
        job_id: str,
        worker: str,
        credit_cost: float,
        work_seconds: float,
        *,
        cancel_requested: bool,
        **values: Any,
    ) -> sa.Row[Any] | None:
        """Move a job out of ``running`` if ``worker`` still holds its lease and its cancel flag
        is ``cancel_requested``, adding the attempt's credits and working time; else None.

        One conditional update: on PostgreSQL a concurrent cancel either commits first (and
        this update, re-checking its condition, no longer matches) or waits for this one."""
        return conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.lease_owner == worker,
                jobs.c.status == JobStatus.RUNNING,
                jobs.c.cancel_requested.is_(sa.true())
                if cancel_requested
                else jobs.c.cancel_requested.is_(sa.false()),
            )
            .values(
                lease_owner=None,
                lease_expires=None,
                credit_cost=jobs.c.credit_cost + credit_cost,
                processing_seconds=jobs.c.processing_seconds + work_seconds,
                **values,
            )
            .returning(jobs.c.callback_url, jobs.c.service_id)
        ).first()

    def cancel(self, job_id: str, payload: Callable[[Row], Mapping[str, Any]]) -> JobStatus:
        """Cancel a queued or retrying job at once; flag a running one. Each is one conditional
        update, so a cancel never overwrites a job that a worker claimed or ended meanwhile.

        ``payload`` builds the cancelled job's payload from its row (read under the update's
        lock, so its attempts and credits are current). Returns the job's status afterwards:
        ``cancelled``, ``running`` (its worker stops at its next check, and a cancel recorded
        before the job's finishing transaction wins), or the terminal status it already had.
        """
        now = self.clock.now()
        with self._write() as conn:
            ended = (
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, jobs.c.status.in_(CLAIMABLE))
                    .values(
                        status=JobStatus.CANCELLED,
                        cancel_requested=True,
                        error_code=ErrorCode.CANCELLED.value,
                        finished_at=now,
                        updated_at=now,
                    )
                    .returning(*jobs.c)
                )
                .mappings()
                .first()
            )
            if ended is not None:
                encoded = Encoded.of(payload(dict(ended)))
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(result=encoded.parsed))
                self._event(conn, job_id, JobStatus.CANCELLED, encoded.parsed, now)
                if ended["callback_url"]:
                    self._outbox(
                        conn, job_id, ended["service_id"], ended["callback_url"], encoded, now
                    )
                return JobStatus.CANCELLED
            flagged = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING)
                .values(cancel_requested=True, updated_at=now)
                .returning(jobs.c.id)
            ).first()
            if flagged is not None:
                return JobStatus.RUNNING
            status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
            if status is None:
                raise GenhookError(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
            return JobStatus(status)

    def _close_attempt(
        self,
        conn: sa.Connection,
        job_id: str,
        outcome: AttemptOutcome,
        error: GenhookError | None,
        now: float,
    ) -> None:
        conn.execute(
            attempts.update()
            .where(attempts.c.job_id == job_id, attempts.c.ended_at.is_(None))
            .values(
                ended_at=now,
                outcome=outcome,
                error_code=error.code.value if error else None,
                error_description=error.description if error else None,
            )
        )

    def _event(
        self, conn: sa.Connection, job_id: str, status: JobStatus, detail: Any, now: float
    ) -> None:
        conn.execute(events.insert().values(job_id=job_id, at=now, status=status, detail=detail))

    def _outbox(
        self,
        conn: sa.Connection,
        job_id: str,
        service_id: str,
        url: str,
        encoded: Encoded,
        now: float,
    ) -> None:
        """Queue the delivery of ``encoded.body``: the bytes every attempt signs and POSTs."""
        conn.execute(
            deliveries.insert().values(
                id=new_id("msg"),
                job_id=job_id,
                service_id=service_id,
                url=url,
                body=encoded.body,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    def job(self, job_id: str) -> Row | None:
        """A job by id."""
        with self._read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def jobs_by_external_id(self, service_id: str, external_id: str, limit: int = 100) -> list[Row]:
        """A service's jobs for one of its own ids, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs)
                .where(jobs.c.service_id == service_id, jobs.c.external_id == external_id)
                .order_by(jobs.c.created_at.desc())
                .limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    def attempts(self, job_id: str) -> list[Attempt]:
        """A job's attempts, first first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number)
            ).mappings()
            return [Attempt.from_row(r) for r in rows]

    def events(self, job_id: str, after: int = 0) -> list[Row]:
        """A job's state changes with id greater than ``after``."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.job_id == job_id, events.c.id > after)
                .order_by(events.c.id)
            ).mappings()
            return [dict(r) for r in rows]
