"""The one store interface: every part of genhook reads and writes jobs and deliveries here.

A job row is the truth about a job. Each state change is one transaction, and the transaction that
ends a job also puts its completion payload into the delivery outbox, so a crash can lose neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genhook.clock import Clock, SystemClock
from genhook.delivery.signing import new_secret
from genhook.errors import ErrorCode, GenhookError
from genhook.ids import new_id
from genhook.store import migrate
from genhook.store.batch import GroupCommitter
from genhook.store.db import create_engine
from genhook.store.schema import attempts, deliveries, delivery_attempts, events, jobs, services

IDEMPOTENCY_WINDOW = 24 * 3600.0
TERMINAL = ("succeeded", "failed", "cancelled")

Row = dict[str, Any]


def key_hash(api_key: str) -> str:
    """The stored form of an API key: SHA-256 (keys are long random tokens, so this is safe)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed for a payload (the same on every retry)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Lease:
    """What a heartbeat learns: is the lease still ours, and was cancellation asked for."""

    owned: bool
    cancel_requested: bool


class Store:
    """Jobs, attempts, events, services and the delivery outbox, on SQLite or PostgreSQL."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.clock = clock or SystemClock()
        self._key_cache: dict[str, Row] = {}
        # SQLite has one writer at a time: queue this process's writers on a lock instead of
        # in SQLite's busy handler, whose sleeps grow to 100 ms (other processes still use it)
        self._write_lock = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._batcher = GroupCommitter(self._write)

    def migrate(self) -> None:
        """Create or upgrade the schema."""
        migrate.upgrade(self.engine)

    def close(self) -> None:
        """Finish queued inserts and release every connection."""
        self._batcher.close()
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self._read() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    # services ------------------------------------------------------------------------------

    def create_service(
        self, name: str, *, rate_limit: str | None = None, daily_budget: float | None = None
    ) -> dict[str, str]:
        """A new requesting service; its API key is returned here once and stored hashed."""
        api_key = "gh_" + secrets.token_urlsafe(32)
        service_id = new_id("svc")
        secret = new_secret()
        try:
            with self._write() as conn:
                conn.execute(
                    services.insert().values(
                        id=service_id,
                        name=name,
                        api_key_hash=key_hash(api_key),
                        api_key_prefix=api_key[:10],
                        webhook_secret=secret,
                        rate_limit=rate_limit,
                        daily_budget=daily_budget,
                        created_at=self.clock.now(),
                    )
                )
        except IntegrityError as exc:
            raise ValueError(f"a service named {name!r} already exists") from exc
        return {
            "service": name,
            "service_id": service_id,
            "api_key": api_key,
            "webhook_secret": secret,
        }

    def service_for_key(self, api_key: str) -> Row | None:
        """The service owning ``api_key`` (cached by hash; keys are never reissued)."""
        digest = key_hash(api_key)
        cached = self._key_cache.get(digest)
        if cached is not None:
            return cached
        with self._read() as conn:
            row = (
                conn.execute(sa.select(services).where(services.c.api_key_hash == digest))
                .mappings()
                .first()
            )
        if row is None:
            return None
        found = dict(row)
        self._key_cache[digest] = found
        return found

    # jobs ----------------------------------------------------------------------------------

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
    ) -> tuple[Row, bool]:
        """Durably insert a queued job; ``(job, created)``. A repeated idempotency key within
        24 h with the same request hash returns the first job (created False); with another
        hash it raises ``idempotency_conflict``."""
        now = self.clock.now()
        job_id = new_id("job")
        row = {
            "id": job_id,
            "service_id": service_id,
            "workflow_id": workflow_id,
            "workflow_version": workflow_version,
            "status": "queued",
            "input": dict(trigger),
            "external_id": external_id,
            "callback_url": callback_url,
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
            if idempotency_key is not None:
                existing = self._idempotent(conn, service_id, idempotency_key, now)
                if existing is not None:
                    if existing["request_hash"] != request_hash:
                        raise GenhookError(
                            ErrorCode.IDEMPOTENCY_CONFLICT,
                            "this Idempotency-Key was used within 24 h with another body",
                        )
                    return existing, False
            conn.execute(jobs.insert(), row)
            conn.execute(
                events.insert(), {"job_id": job_id, "at": now, "status": "queued", "detail": None}
            )
            return row, True

        for _ in range(3):
            try:
                result: tuple[Row, bool] = self._batcher.run(insert)
                return result
            except IntegrityError:
                continue  # another process won the idempotency key: read it on the next pass
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not insert the job")

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
        service_id: str,
        workflow_id: str,
        workflow_version: int,
        body: Any,
        external_id: str | None,
        callback_url: str | None,
        error: GenhookError,
        payload: Mapping[str, Any],
    ) -> Row:
        """Record an invalid trigger as a failed job, and outbox its payload if it has a URL."""
        now = self.clock.now()
        job_id = str(payload["job_id"])
        row: Row = {
            "id": job_id,
            "service_id": service_id,
            "workflow_id": workflow_id,
            "workflow_version": workflow_version,
            "status": "failed",
            "input": body if isinstance(body, dict) else {"_body": body},
            "external_id": external_id,
            "callback_url": callback_url,
            "created_at": now,
            "updated_at": now,
            "run_after": now,
            "finished_at": now,
            "attempts": 0,
            "processing_seconds": 0.0,
            "cancel_requested": False,
            "credit_cost": 0.0,
            "error_code": error.code.value,
            "result": dict(payload),
        }
        with self._write() as conn:
            conn.execute(jobs.insert().values(**row))
            self._event(conn, job_id, "failed", dict(payload), now)
            if callback_url:
                self._outbox(conn, job_id, service_id, callback_url, payload, now)
        return row

    def claim(self, worker: str, lease_seconds: float) -> Row | None:
        """Take the next due job (or one whose worker's lease ran out) and lease it to ``worker``.

        The candidate select uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (ignored by SQLite,
        where ``BEGIN IMMEDIATE`` already serialises writers), so two workers never take one job.
        """
        now = self.clock.now()
        with self._write() as conn:
            stalled = conn.execute(
                sa.select(jobs.c.id)
                .where(jobs.c.status == "running", jobs.c.lease_expires < now)
                .order_by(jobs.c.lease_expires)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            if stalled is not None:
                # the lost attempt worked until its last heartbeat (lease end minus one lease)
                started = conn.execute(
                    sa.select(attempts.c.started_at, jobs.c.lease_expires)
                    .join(jobs, jobs.c.id == attempts.c.job_id)
                    .where(attempts.c.job_id == stalled, attempts.c.ended_at.is_(None))
                ).first()
                if started is not None:
                    worked = max(0.0, started.lease_expires - lease_seconds - started.started_at)
                    conn.execute(
                        jobs.update()
                        .where(jobs.c.id == stalled)
                        .values(processing_seconds=jobs.c.processing_seconds + worked)
                    )
                conn.execute(
                    attempts.update()
                    .where(attempts.c.job_id == stalled, attempts.c.ended_at.is_(None))
                    .values(
                        ended_at=now,
                        outcome="lost",
                        error_code=ErrorCode.WORKER_LOST.value,
                        error_description="the worker stopped renewing its lease",
                    )
                )
                job_id = stalled
            else:
                job_id = conn.execute(
                    sa.select(jobs.c.id)
                    .where(jobs.c.status.in_(("queued", "retrying")), jobs.c.run_after <= now)
                    .order_by(jobs.c.run_after)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).scalar()
            if job_id is None:
                return None
            claimed = (
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id)
                    .values(
                        status="running",
                        lease_owner=worker,
                        lease_expires=now + lease_seconds,
                        attempts=jobs.c.attempts + 1,
                        first_claimed_at=sa.func.coalesce(jobs.c.first_claimed_at, now),
                        updated_at=now,
                    )
                    .returning(*jobs.c)
                )
                .mappings()
                .one()
            )
            conn.execute(
                attempts.insert().values(
                    job_id=job_id, number=claimed["attempts"], worker=worker, started_at=now
                )
            )
            self._event(conn, job_id, "running", {"attempt": claimed["attempts"]}, now)
        return dict(claimed)

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float) -> Lease:
        """Renew ``worker``'s lease on a running job."""
        now = self.clock.now()
        with self._write() as conn:
            row = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id, jobs.c.lease_owner == worker, jobs.c.status == "running"
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
        status: str,
        payload: Mapping[str, Any],
        error: GenhookError | None,
        credit_cost: float,
        work_seconds: float,
    ) -> bool:
        """End a job the worker still holds, and outbox its payload, in one transaction."""
        now = self.clock.now()
        with self._write() as conn:
            done = self._release(
                conn,
                job_id,
                worker,
                credit_cost,
                work_seconds,
                status=status,
                result=dict(payload),
                error_code=error.code.value if error else None,
                finished_at=now,
                updated_at=now,
            )
            if done is None:
                return False
            self._close_attempt(conn, job_id, status, error, now)
            self._event(conn, job_id, status, dict(payload), now)
            if done.callback_url:
                self._outbox(conn, job_id, done.service_id, done.callback_url, payload, now)
        return True

    def retry(
        self,
        job_id: str,
        worker: str,
        *,
        error: GenhookError,
        delay: float,
        credit_cost: float,
        work_seconds: float,
    ) -> bool:
        """Put a job the worker holds back in the queue after ``delay`` seconds."""
        now = self.clock.now()
        with self._write() as conn:
            done = self._release(
                conn,
                job_id,
                worker,
                credit_cost,
                work_seconds,
                status="retrying",
                run_after=now + delay,
                error_code=error.code.value,
                updated_at=now,
            )
            if done is None:
                return False
            self._close_attempt(conn, job_id, "retrying", error, now)
            self._event(
                conn,
                job_id,
                "retrying",
                {"error": error.to_dict(), "retry_at": now + delay},
                now,
            )
        return True

    def _release(
        self,
        conn: sa.Connection,
        job_id: str,
        worker: str,
        credit_cost: float,
        work_seconds: float,
        **values: Any,
    ) -> sa.Row[Any] | None:
        """Move a job out of ``running`` if ``worker`` still holds its lease, adding the
        attempt's credits and working time; None when the lease was lost."""
        return conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.lease_owner == worker, jobs.c.status == "running")
            .values(
                lease_owner=None,
                lease_expires=None,
                credit_cost=jobs.c.credit_cost + credit_cost,
                processing_seconds=jobs.c.processing_seconds + work_seconds,
                **values,
            )
            .returning(jobs.c.callback_url, jobs.c.service_id)
        ).first()

    def cancel(self, job_id: str, payload: Mapping[str, Any]) -> str:
        """Cancel a queued or retrying job at once (outboxing ``payload``); flag a running one.

        Returns the job's status afterwards: ``cancelled``, ``running`` (the worker will stop at
        its next check), or the terminal status it already had.
        """
        now = self.clock.now()
        with self._write() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
            if row is None:
                raise GenhookError(ErrorCode.NOT_FOUND, f"no job {job_id!r}")
            if row["status"] in ("queued", "retrying"):
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id)
                    .values(
                        status="cancelled",
                        cancel_requested=True,
                        result=dict(payload),
                        error_code=ErrorCode.CANCELLED.value,
                        finished_at=now,
                        updated_at=now,
                    )
                )
                self._event(conn, job_id, "cancelled", dict(payload), now)
                if row["callback_url"]:
                    self._outbox(conn, job_id, row["service_id"], row["callback_url"], payload, now)
                return "cancelled"
            if row["status"] == "running":
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id)
                    .values(cancel_requested=True, updated_at=now)
                )
            return str(row["status"])

    def _close_attempt(
        self, conn: sa.Connection, job_id: str, outcome: str, error: GenhookError | None, now: float
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
        self, conn: sa.Connection, job_id: str, status: str, detail: Any, now: float
    ) -> None:
        conn.execute(events.insert().values(job_id=job_id, at=now, status=status, detail=detail))

    def _outbox(
        self,
        conn: sa.Connection,
        job_id: str,
        service_id: str,
        url: str,
        payload: Mapping[str, Any],
        now: float,
    ) -> None:
        conn.execute(
            deliveries.insert().values(
                id=new_id("msg"),
                job_id=job_id,
                service_id=service_id,
                url=url,
                body=body_bytes(payload),
                status="pending",
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

    def attempts(self, job_id: str) -> list[Row]:
        """A job's attempts, first first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number)
            ).mappings()
            return [dict(r) for r in rows]

    def events(self, job_id: str, after: int = 0) -> list[Row]:
        """A job's state changes with id greater than ``after``."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.job_id == job_id, events.c.id > after)
                .order_by(events.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    # deliveries ----------------------------------------------------------------------------

    def claim_deliveries(self, limit: int, lease_seconds: float) -> list[Row]:
        """Lease up to ``limit`` due deliveries (and ones whose sender died), with secrets."""
        now = self.clock.now()
        with self._write() as conn:
            stale = sa.and_(deliveries.c.status == "sending", deliveries.c.lease_expires < now)
            due = sa.and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
            ids = list(
                conn.execute(
                    sa.select(deliveries.c.id)
                    .where(sa.or_(due, stale))
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return []
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids))
                .values(status="sending", lease_expires=now + lease_seconds)
            )
            rows = conn.execute(
                sa.select(deliveries, services.c.webhook_secret)
                .join(services, services.c.id == deliveries.c.service_id)
                .where(deliveries.c.id.in_(ids))
            ).mappings()
            return [dict(r) for r in rows]

    def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery falls due."""
        with self._read() as conn:
            value = conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status == "pending"
                )
            ).scalar()
        return float(value) if value is not None else None

    def record_delivery(
        self,
        delivery_id: str,
        *,
        number: int,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_attempt_at: float | None,
        manual: bool = False,
    ) -> None:
        """Log one attempt and move the delivery on: delivered, pending again, or failed."""
        now = self.clock.now()
        if outcome == "delivered":
            status = "delivered"
        elif next_attempt_at is None:
            status = "failed"
        else:
            status = "pending"
        with self._write() as conn:
            conn.execute(
                delivery_attempts.insert().values(
                    delivery_id=delivery_id,
                    number=number,
                    at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                    manual=manual,
                )
            )
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id)
                .values(
                    status=status,
                    attempts=number,
                    next_attempt_at=next_attempt_at,
                    lease_expires=None,
                    delivered_at=now if status == "delivered" else None,
                    last_status_code=status_code,
                    last_error=error,
                )
            )

    def deliveries(self, job_id: str) -> list[Row]:
        """A job's deliveries, each with its attempts (no body)."""
        with self._read() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    sa.select(deliveries).where(deliveries.c.job_id == job_id)
                ).mappings()
            ]
            ids = [r["id"] for r in rows]
            tried = conn.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id.in_(ids))
                .order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.number)
            ).mappings()
            by_id: dict[str, list[Row]] = {i: [] for i in ids}
            for attempt in tried:
                by_id[attempt["delivery_id"]].append(dict(attempt))
        for row in rows:
            row["attempt_log"] = by_id[row["id"]]
        return rows

    def delivery(self, delivery_id: str) -> Row | None:
        """One delivery by id."""
        with self._read() as conn:
            row = (
                conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def replay(self, delivery_id: str) -> bool:
        """Queue a manual resend of a delivery now; False while an attempt is in flight."""
        now = self.clock.now()
        with self._write() as conn:
            done = conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id, deliveries.c.status != "sending")
                .values(status="pending", next_attempt_at=now, lease_expires=None)
            ).rowcount
        return bool(done)
