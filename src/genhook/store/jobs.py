"""Jobs: durable submit (group commit, idempotency), claim with a lease, heartbeat, finish or
retry, cancel, and the queries behind the API. Ending a job outboxes its payload in the same
transaction."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genhook.contract.wire import decode_payload, encode_payload
from genhook.errors import ErrorCode, GenhookError
from genhook.flow import (
    Breaker,
    BreakerState,
    BudgetDecision,
    HoldReason,
    RateLimit,
    budget_decision,
    next_utc_midnight,
    utc_day,
)
from genhook.ids import new_id, new_job_id
from genhook.status import AttemptOutcome, DeliveryStatus, JobStatus
from genhook.store.accounting import (
    _upsert_statement,
    add_to_ledger,
    breaker,
    bump_rollup,
    check_thresholds,
    hour_of,
    ledger,
    save_breaker,
    settle,
)
from genhook.store.admit import FRESH, Admission, Admitter, Submission, replayed
from genhook.store.base import Row, StoreBase
from genhook.store.batches import batch_job_ended
from genhook.store.callbacks import announce_start, asks_any, drop_pending_events, outbox_progress
from genhook.store.db import unavailable
from genhook.store.expiry import startable
from genhook.store.ops_events import OperatorEvent, endpoint_of, record_event
from genhook.store.records import Attempt, Job, JobEvent, StoredJob
from genhook.store.schema import (
    attempts,
    backend_state,
    claimable,
    deliveries,
    events,
    job_rollups,
    jobs,
    services,
)

_REQUEUE = (
    services.update()
    .where(services.c.id == sa.bindparam("service_id"))
    .values(waiting=services.c.waiting + 1)
)
_DEQUEUE = (
    services.update()
    .where(services.c.id == sa.bindparam("service_id"))
    .values(waiting=services.c.waiting - 1)
)
# the claim's usual case in one statement: the service whose turn it is (served longest ago,
# not paused, jobs waiting) and its next due job, unless that job's backend's breaker is open
_TURN = (
    sa.select(services.c.id)
    .where(services.c.paused_at.is_(None), services.c.waiting > 0)
    .order_by(services.c.last_served_at, services.c.id)
    .limit(1)
    .scalar_subquery()
)
_FIRST_IN_TURN = (
    sa.select(
        jobs.c.id.label("job_id"),
        services.c.id.label("service_id"),
        services.c.rate_limit,
        services.c.daily_budget,
        services.c.on_budget,
        services.c.start_seq,
        # what the limits' checks read of the candidate (no second read of the job for them)
        jobs.c.backend,
        jobs.c.estimate,
        jobs.c.first_claimed_at,
    )
    .join(services, services.c.id == jobs.c.service_id)
    .where(
        jobs.c.service_id == _TURN,
        claimable(),
        jobs.c.run_after <= sa.bindparam("now"),
        startable(sa.bindparam("now")),  # not past its trigger's deadline (genhook.store.expiry)
        sa.or_(
            jobs.c.backend.is_(None),
            jobs.c.backend.not_in(
                sa.select(backend_state.c.backend).where(backend_state.c.state == "open")
            ),
        ),
    )
    .order_by(jobs.c.priority.desc(), jobs.c.run_after, jobs.c.id)
    .limit(1)
    .with_for_update(of=jobs, skip_locked=True)
)
# the worker's statements, built once (building one per call costs more than running it):
# the claim's read first, is anything there to take? ``due``: a due job, while some service that
# is not paused has jobs waiting; ``stalled``: a job whose lease ran out. Each part is one index
# probe; with neither, no write transaction is opened (SQLite's one write lock stays free for the
# accept path and the outbox)
_NOW = sa.bindparam("now", type_=jobs.c.run_after.type)
_SOMETHING_TO_CLAIM = sa.select(
    sa.and_(
        sa.exists().where(claimable(), jobs.c.run_after <= _NOW),
        sa.exists().where(services.c.paused_at.is_(None), services.c.waiting > 0),
    ).label("due"),
    sa.exists()
    .where(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires < _NOW)
    .label("stalled"),
)
_LEASE_RAN_OUT = sa.and_(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_expires < _NOW)
_STALLED = (
    sa.select(jobs.c.id)
    .where(_LEASE_RAN_OUT)
    .order_by(jobs.c.lease_expires)
    .limit(1)
    .with_for_update(skip_locked=True)
)


def _taking(takeable: sa.ColumnElement[bool]) -> sa.Update:
    """Lease job ``:jid`` to ``:worker`` until ``:until`` if it is still ``takeable``."""
    return (
        jobs.update()
        .where(jobs.c.id == sa.bindparam("jid"), takeable)
        .values(
            status=JobStatus.RUNNING,
            lease_owner=sa.bindparam("worker"),
            lease_expires=sa.bindparam("until", type_=jobs.c.lease_expires.type),
            attempts=jobs.c.attempts + 1,
            first_claimed_at=sa.func.coalesce(jobs.c.first_claimed_at, _NOW),
            updated_at=_NOW,
            hold_reason=None,
        )
        .returning(*jobs.c)
    )


_TAKE_QUEUED = _taking(claimable())
_TAKE_STALLED = _taking(_LEASE_RAN_OUT)
_SERVED = (
    services.update()
    .where(services.c.id == sa.bindparam("sid"))
    .values(
        last_served_at=_NOW,
        waiting=services.c.waiting - 1,
        start_seq=services.c.start_seq + sa.bindparam("first", type_=sa.Integer),
    )
    .returning(services.c.start_seq)
)
_NUMBER_START = (
    jobs.update().where(jobs.c.id == sa.bindparam("jid")).values(start_seq=sa.bindparam("seq"))
)
_ATTEMPT_STARTS = attempts.insert()
_EVENT = events.insert()
# PostgreSQL: the rest of a claim's usual case in one statement (one round trip, not three):
# the service's turn taken, the attempt opened and its ``running`` event, as data-modifying
# CTEs of the services update (PostgreSQL runs each exactly once, whether or not it is read)
_SERVED_STARTED = _SERVED.add_cte(
    attempts.insert()
    .values(
        job_id=sa.bindparam("jid"),
        number=sa.bindparam("number", type_=attempts.c.number.type),
        worker=sa.bindparam("worker"),
        started_at=_NOW,
        backend=sa.bindparam("backend", type_=attempts.c.backend.type),
    )
    .cte("started")
).add_cte(
    events.insert()
    .values(
        job_id=sa.bindparam("jid"),
        at=_NOW,
        status=JobStatus.RUNNING,
        detail=sa.bindparam("detail", type_=events.c.detail.type),
    )
    .cte("running")
)
_OUTBOX = deliveries.insert()
_RENEW = (
    jobs.update()
    .where(
        jobs.c.id == sa.bindparam("jid"),
        jobs.c.lease_owner == sa.bindparam("worker"),
        jobs.c.status == JobStatus.RUNNING,
    )
    .values(lease_expires=sa.bindparam("until", type_=jobs.c.lease_expires.type))
    .returning(jobs.c.cancel_requested)
)
_CANCEL_ASKED = sa.select(jobs.c.cancel_requested).where(jobs.c.id == sa.bindparam("jid"))
_RENEW_MANY = (
    jobs.update()
    .where(
        jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
        jobs.c.lease_owner == sa.bindparam("worker"),
        jobs.c.status == JobStatus.RUNNING,
    )
    .values(lease_expires=sa.bindparam("until", type_=jobs.c.lease_expires.type))
    .returning(jobs.c.id, jobs.c.cancel_requested)
)
_CANCELS_ASKED = sa.select(jobs.c.id).where(
    jobs.c.id.in_(sa.bindparam("ids", expanding=True)), jobs.c.cancel_requested.is_(True)
)
_OWNED_RUNNING = sa.select(jobs.c.id).where(
    jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
    jobs.c.lease_owner == sa.bindparam("worker"),
    jobs.c.status == JobStatus.RUNNING,
)
LEASE_BATCH = 500
"""Most jobs one statement of the batched lease and progress writes names."""
_CLOSE_ATTEMPT = (
    attempts.update()
    .where(attempts.c.job_id == sa.bindparam("jid"), attempts.c.ended_at.is_(None))
    .values(
        ended_at=_NOW,
        outcome=sa.bindparam("a_outcome", type_=attempts.c.outcome.type),
        error_code=sa.bindparam("a_code", type_=attempts.c.error_code.type),
        error_description=sa.bindparam("a_description", type_=attempts.c.error_description.type),
        credit_cost=sa.bindparam("a_credits", type_=attempts.c.credit_cost.type),
        made=sa.bindparam("a_made", type_=attempts.c.made.type),
    )
)
_BREAKER_HEALED = (
    backend_state.update()
    .where(
        backend_state.c.backend == sa.bindparam("name"),
        backend_state.c.failures > 0,
        backend_state.c.state == BreakerState.CLOSED,
    )
    .values(failures=0, updated_at=_NOW)
)
# PostgreSQL: what follows a job's release in one statement (see JobStore._ended): the attempt
# closed and the end's event as data-modifying CTEs of the roll-up's upsert
_CLOSED = _CLOSE_ATTEMPT.cte("closed")
_LOGGED = (
    events.insert()
    .values(
        job_id=sa.bindparam("jid"),
        at=_NOW,
        status=sa.bindparam("e_status", type_=events.c.status.type),
        detail=sa.bindparam("e_detail", type_=events.c.detail.type),
    )
    .cte("logged")
)


@functools.cache
def _ending(figures: tuple[str, ...]) -> Any:
    """The attempt closed, the end's event and the hour's roll-up (``figures`` added) of a
    released job, in one PostgreSQL statement."""
    keys = ("service_id", "workflow_id", "bucket")
    upsert = _upsert_statement("postgresql", job_rollups, keys, figures)
    return upsert.add_cte(_CLOSED).add_cte(_LOGGED)


_UNRESERVE = (
    jobs.update().where(jobs.c.id == sa.bindparam("jid")).values(reserved=0.0, reserved_day=None)
)


@functools.cache
def _releasing(cancel_requested: bool, columns: tuple[str, ...], spared: bool) -> sa.Update:
    """Move job ``:jid`` out of ``running`` if ``:worker`` holds its lease and its cancel flag
    is ``cancel_requested``: the attempt's ``:credits`` and ``:work`` added, ``columns`` set from
    ``:v_<column>``, a spared attempt counted. It returns the job's reservation as it stands (the
    caller releases it)."""
    flag = jobs.c.cancel_requested
    return (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("jid"),
            jobs.c.lease_owner == sa.bindparam("worker"),
            jobs.c.status == JobStatus.RUNNING,
            flag.is_(sa.true()) if cancel_requested else flag.is_(sa.false()),
        )
        .values(
            lease_owner=None,
            lease_expires=None,
            credit_cost=jobs.c.credit_cost + sa.bindparam("credits", type_=sa.Float),
            processing_seconds=jobs.c.processing_seconds + sa.bindparam("work", type_=sa.Float),
            **{c: sa.bindparam(f"v_{c}", type_=jobs.c[c].type) for c in columns},
            **({"spared_attempts": jobs.c.spared_attempts + 1} if spared else {}),
        )
        .returning(
            jobs.c.callback_url,
            jobs.c.service_id,
            jobs.c.workflow_id,
            jobs.c.backend,
            jobs.c.processing_seconds,
            jobs.c.credit_cost,
            jobs.c.reserved,
            jobs.c.reserved_day,
            jobs.c.envelope,
            jobs.c.batch_id,
        )
    )


def _attempt_end(
    job_id: str,
    outcome: AttemptOutcome,
    error: GenhookError | None,
    now: float,
    credit_cost: float,
    made: Mapping[str, float] | None,
) -> dict[str, Any]:
    """The parameters of :data:`_CLOSE_ATTEMPT` (and of :data:`_CLOSED` in :func:`_ending`)."""
    return {
        "jid": job_id,
        "now": now,
        "a_outcome": outcome,
        "a_code": error.code.value if error else None,
        "a_description": error.description if error else None,
        "a_credits": credit_cost,
        "a_made": None if made is None else dict(made),
    }


# PostgreSQL: a batch of the claim's usual case in one statement. Unless a lease ran out (that
# job is taken first, by the one-job claim), the service whose turn it is (as _TURN), when it
# has no rate limit and no daily budget: its next due jobs in the fair order
# (as _FIRST_IN_TURN), ``:most`` of them when it is the only service with jobs waiting (each
# claim in turn would pick it again), else one (the next claim's turn is another's); the run of
# them before the first whose backend has a limit (``:limited``; that one goes through the
# limit's checks). Each is leased as _TAKE_QUEUED leases one, the service's turn taken once for
# all (``waiting`` less as many), each one's attempt opened and its ``running`` event written,
# as data-modifying CTEs (one round trip for the batch). Fewer rows than asked: the caller goes
# on with the one-job claim, which handles what this does not.
_CLAIMABLE_SQL = "status IN ('queued', 'retrying')"
_TAKE_BATCH = sa.text(
    f"""
WITH waiting AS (
    SELECT id, rate_limit, daily_budget FROM services
    WHERE paused_at IS NULL AND waiting > 0
      AND NOT EXISTS (
          SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires < :now)
    ORDER BY last_served_at, id
    LIMIT 2
), turn AS (
    SELECT id FROM waiting
    WHERE rate_limit IS NULL AND daily_budget IS NULL
      AND id = (SELECT id FROM waiting LIMIT 1)
), candidates AS (
    SELECT j.id, j.backend, j.priority, j.run_after
    FROM jobs AS j
    WHERE j.service_id = (SELECT id FROM turn)
      AND j.{_CLAIMABLE_SQL} AND j.run_after <= :now
      AND (j.deadline IS NULL OR j.deadline > :now OR j.first_claimed_at IS NOT NULL)
      AND (j.backend IS NULL OR j.backend NOT IN (
          SELECT backend FROM backend_state WHERE state = 'open'))
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT CASE WHEN (SELECT count(*) FROM waiting) > 1 THEN 1 ELSE :most END
    FOR UPDATE OF j SKIP LOCKED
), ranked AS (
    SELECT id, backend = ANY(CAST(:limited AS text[])) AS limited,
           row_number() OVER (ORDER BY priority DESC, run_after, id) AS place
    FROM candidates
), picked AS (
    SELECT id FROM ranked
    WHERE place < coalesce((SELECT min(place) FROM ranked WHERE limited), 2147483647)
), taken AS (
    UPDATE jobs SET status = 'running', lease_owner = :worker, lease_expires = :until,
        attempts = jobs.attempts + 1, first_claimed_at = coalesce(jobs.first_claimed_at, :now),
        updated_at = :now, hold_reason = NULL
    FROM picked
    WHERE jobs.id = picked.id AND jobs.{_CLAIMABLE_SQL}
    RETURNING jobs.*
), served AS (
    UPDATE services SET last_served_at = :now, waiting = waiting - (SELECT count(*) FROM taken)
    WHERE id = (SELECT id FROM turn) AND EXISTS (SELECT 1 FROM taken)
), started AS (
    INSERT INTO job_attempts (job_id, number, worker, started_at, backend)
    SELECT id, attempts, :worker, :now, backend FROM taken
), running AS (
    INSERT INTO job_events (job_id, at, status, detail)
    SELECT id, :now, 'running', json_build_object('attempt', attempts) FROM taken
)
SELECT * FROM taken ORDER BY priority DESC, run_after, id
"""
)


# PostgreSQL: the common part of several jobs' ends in one statement (JobStore._finish_batch):
# each job that ``:worker`` still holds, running, with no cancel asked, released as
# _releasing releases one (its status, result, error code, credits and time), its attempt
# closed and its end's event written, and, when none of them has a ledger to settle or a
# breaker to heal (which a single finish does before the roll-up), the hour's roll-ups (one
# row per service and workflow, in key order), as data-modifying CTEs. What is left (that
# ledger, the assets to publish, that breaker, then those roll-ups, the outbox, the batch) the
# caller does for the rows it returns, in the order a single finish takes them.
_FINISH_BATCH = sa.text(
    """
WITH v AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(
        id text, worker text, status text, result json, code text, description text,
        credits float8, work float8, made json, passed int)
), released AS (
    UPDATE jobs SET lease_owner = NULL, lease_expires = NULL,
        credit_cost = jobs.credit_cost + v.credits,
        processing_seconds = jobs.processing_seconds + v.work,
        status = v.status, result = v.result, error_code = v.code,
        finished_at = :now, updated_at = :now
    FROM v
    WHERE jobs.id = v.id AND jobs.lease_owner = v.worker AND jobs.status = 'running'
      AND jobs.cancel_requested IS false
    RETURNING jobs.id, jobs.callback_url, jobs.service_id, jobs.workflow_id, jobs.backend,
        jobs.processing_seconds, jobs.credit_cost, jobs.reserved, jobs.reserved_day,
        jobs.envelope, jobs.batch_id, v.status AS ended, v.result, v.code, v.description,
        v.credits, v.made, v.passed
), closed AS (
    UPDATE job_attempts SET ended_at = :now, outcome = r.ended, error_code = r.code,
        error_description = r.description, credit_cost = r.credits, made = r.made
    FROM released AS r
    WHERE job_attempts.job_id = r.id AND job_attempts.ended_at IS NULL
), logged AS (
    INSERT INTO job_events (job_id, at, status, detail)
    SELECT id, :now, ended, result FROM released
), rolled AS (
    INSERT INTO job_rollups AS t (service_id, workflow_id, bucket, completed, failed, cancelled,
        generation_seconds, credits, qc_checked, qc_passed)
    SELECT service_id, workflow_id, :bucket,
        count(*) FILTER (WHERE ended = 'succeeded'), count(*) FILTER (WHERE ended = 'failed'),
        count(*) FILTER (WHERE ended = 'cancelled'), sum(processing_seconds), sum(credit_cost),
        count(*) FILTER (WHERE ended = 'succeeded'), sum(passed)
    FROM released
    WHERE NOT EXISTS (
        SELECT 1 FROM released
        WHERE reserved <> 0 OR reserved_day IS NOT NULL OR credits <> 0
           OR (backend IS NOT NULL AND ended = 'succeeded'))
    GROUP BY service_id, workflow_id
    ORDER BY service_id, workflow_id
    ON CONFLICT (service_id, workflow_id, bucket) DO UPDATE SET
        completed = t.completed + excluded.completed, failed = t.failed + excluded.failed,
        cancelled = t.cancelled + excluded.cancelled,
        generation_seconds = t.generation_seconds + excluded.generation_seconds,
        credits = t.credits + excluded.credits, qc_checked = t.qc_checked + excluded.qc_checked,
        qc_passed = t.qc_passed + excluded.qc_passed
    RETURNING 1
)
SELECT id, callback_url, service_id, workflow_id, backend, processing_seconds, credit_cost,
    reserved, reserved_day, envelope, batch_id, ended, (SELECT count(*) FROM rolled) AS rolled
FROM released ORDER BY id
"""
)
_ROLLUP_FIGURES = ("completed", "credits", "failed", "cancelled", "generation_seconds")
_ROLLUP_QC = ("qc_checked", "qc_passed")
_ENDED_FIGURE = {
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


# the first key of the claim's two-key advisory locks (beside accounting's LEDGER_LOCK and
# BREAKER_LOCK): a capped backend's count of running jobs and recent starts, and a rate-limited
# service's window of real starts, each checked and used under its lock (see _claim_lock)
BACKEND_LOCK = 0x67686B43  # "ghkC"
START_LOCK = 0x67686B53  # "ghkS"
_SERVICE_STARTS = sa.select(services.c.start_seq).where(services.c.id == sa.bindparam("sid"))


def _claim_lock(conn: sa.Connection, space: int, key: str, held: set[tuple[int, str]]) -> bool:
    """On PostgreSQL, hold the advisory lock ``(space, hashtext(key))`` until the claim's
    transaction ends (True), so that claimers check a limit one after another, each seeing
    the starts the others committed; nothing on SQLite (``BEGIN IMMEDIATE``).

    ``held``: the claim's locks so far. Only a claim's first lock is waited for; a later one
    is tried, and False (someone else holds it) tells the claim to pass that backend or
    service over this time. A transaction that waits thus holds none of these locks, so two
    claims never wait for each other's (no deadlock between claims that meet the same
    backends or services in different orders)."""
    if conn.dialect.name != "postgresql" or (space, key) in held:
        return True
    lock = sa.func.pg_try_advisory_xact_lock if held else sa.func.pg_advisory_xact_lock
    got = conn.execute(sa.select(lock(space, sa.func.hashtext(key)))).scalar()
    if held and not got:
        return False
    held.add((space, key))
    return True


_CANCELLED = GenhookError(ErrorCode.CANCELLED)
PRIORITIES = {"low": 0, "normal": 1, "high": 2}
PRIORITY_NAMES = {rank: name for name, rank in PRIORITIES.items()}


@dataclass(frozen=True)
class _Pick:
    """A service whose turn it is, and its job that may start; ``candidate``: the job's
    ``backend``, ``estimate`` and ``first_claimed_at`` when the pick read them already."""

    service: Any
    job_id: str
    candidate: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)


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
class Finish:
    """One job's end, as :meth:`JobStore.finish` takes it (for :meth:`JobStore.finish_many`)."""

    job_id: str
    worker: str
    status: JobStatus
    payload: Mapping[str, Any]
    error: GenhookError | None
    credit_cost: float
    work_seconds: float
    # the payload if a cancel was asked first (or what builds it, called only then)
    cancelled: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    publish: Callable[[], None] | None = None
    made: Mapping[str, float] | None = None


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
        admission: Admission | None = None,
    ) -> tuple[StoredJob, bool]:
        """Durably insert a queued job; ``(job, created)``. A repeated idempotency key within
        24 h with the same request hash returns the first job (created False), whether it was
        accepted or rejected; with another hash it raises ``idempotency_conflict``.

        ``trigger`` is the workflow's checked input; ``callback_url`` and ``envelope`` (the
        envelope's other fields) are kept beside it, never in it. ``callback_private``: the
        callback was accepted with private callbacks allowed (the sender applies that decision).
        ``job_id``: the id the API minted for this trigger (a new one when None).

        ``admission``: the flow-control facts of the trigger (priority, dedup key, backend,
        estimate). In the same transaction: a dedup match returns the first job (created False,
        ``deduplicated`` True); a full queue raises ``queue_full``; the service's rate
        window gives the job its start slot (``run_after``, with ``hold_reason`` rate_limit when
        later than now); a paused service holds it (``paused``), and a trigger storm pauses the
        service (operator event ``service.paused``)."""
        item = self.submission(
            service_id=service_id,
            workflow_id=workflow_id,
            workflow_version=workflow_version,
            trigger=trigger,
            external_id=external_id,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            envelope=envelope,
            callback_private=callback_private,
            job_id=job_id,
            admission=admission,
        )
        for _ in range(3):
            try:
                result: tuple[StoredJob, bool] = self._batcher.run(item)
                return result
            except IntegrityError:
                continue  # another process won the idempotency key: read it on the next pass
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not insert the job")

    async def submit_async(self, item: Submission) -> tuple[StoredJob, bool]:
        """:meth:`submit` of a :meth:`submission`, for the event loop: no thread waits for the
        commit."""
        for _ in range(3):
            try:
                result: tuple[StoredJob, bool] = await self._batcher.run_async(item)
                return result
            except IntegrityError:
                continue  # another process won the idempotency key: read it on the next pass
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not insert the job")

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
    ) -> Submission:
        """The job row of an accepted trigger, arriving now, as :meth:`submit` inserts it."""
        now = self.clock.now()
        job_id = job_id or new_job_id()
        admission = admission or Admission()
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
            "priority": admission.priority,
            "dedup_key": admission.dedup_key,
            "backend": admission.backend,
            "estimate": admission.estimate,
            "sandbox": admission.sandbox,
            "retry_of": None,  # set by the listing store's resubmission (POST .../retry)
            "hold_reason": None,
            "rate_slot": None,
            "rate_seq": None,
            # the envelope's deadline as a column, for the claim and the sweep (0011)
            "deadline": None if envelope is None else envelope.get("deadline"),
        }
        return Submission(row, admission.dedup_window)

    def _write_batch(self, conn: sa.Connection, items: Sequence[Submission]) -> list[Any]:
        """The group committer's batch (see :mod:`genhook.store.admit`)."""
        return Admitter(self.default_queue_limit, self.alert_url)(conn, items)

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
    ) -> tuple[StoredJob, bool]:
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
                    existing = replayed(conn, service_id, idempotency_key, request_hash, now)
                    if existing is not None:
                        return StoredJob.from_row(existing), False
                    conn.execute(jobs.insert().values(**row))
                    bump_rollup(conn, service_id, workflow_id, now, triggers=1, refused=1)
                    self._event(conn, job_id, JobStatus.FAILED, encoded.parsed, now)
                    if callback_url:
                        self._outbox(conn, job_id, service_id, callback_url, encoded, now)
                return StoredJob.from_row({**FRESH, **row}), True
            except IntegrityError:
                continue  # another process won the idempotency key: read it on the next pass
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not record the refused trigger")

    def claim(self, worker: str, lease_seconds: float) -> Job | None:
        """Take the next due job (or one whose worker's lease ran out) and lease it to ``worker``.

        The candidate select uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (ignored by SQLite,
        where ``BEGIN IMMEDIATE`` already serialises writers), so two workers never take one job;
        the update is conditional on the state it was chosen in, so it cannot take a job that a
        cancel ended meanwhile. The job returned carries ``claimed_at``, the attempt's start.

        A look comes first: with nothing to take (an idle queue), nothing is locked or written.
        On SQLite the look is a read transaction of its own, so that an idle claim leaves the
        one write lock free; on PostgreSQL, where nothing takes a lock until a job is chosen, it
        is the first statement of the claim's transaction (one transaction per claim).
        """
        now = self.clock.now()
        if self.engine.dialect.name == "postgresql":
            with self._write() as conn:
                due, stalled = conn.execute(_SOMETHING_TO_CLAIM, {"now": now}).one()
                if not (due or stalled):
                    return None
                job = self._claim(conn, worker, lease_seconds, now, stalled=bool(stalled))
                return announce_start(conn, job, now)  # job.started, when the trigger asked
        with self._read() as conn:
            due, stalled = conn.execute(_SOMETHING_TO_CLAIM, {"now": now}).one()
        if not (due or stalled):
            return None
        with self._write() as conn:
            job = self._claim(conn, worker, lease_seconds, now, stalled=bool(stalled))
            return announce_start(conn, job, now)  # job.started, when the trigger asked

    def claim_many(self, worker: str, lease_seconds: float, most: int) -> list[Job]:
        """Up to ``most`` jobs in one transaction, each taken as :meth:`claim` takes one and in
        the order that as many claims one after another would take them: leases that ran out
        first, then the fair order (each job taken moves its service's turn on before the next
        is picked). A worker with ``most`` free slots fills them with one look and one commit.
        A later job of the batch that its service's daily budget would have to reserve ends the
        batch there instead (the next claim starts with it), so that a transaction holds one
        service's ledger lock at most, as a finish does. An empty list: none may start now."""
        now = self.clock.now()
        if self.engine.dialect.name == "postgresql":
            with self._write() as conn:
                # the usual case first, without the look: a backlog of one service, no lease
                # run out; anything else, the look and the claims one by one go on from there
                taken = self._take_batch(conn, worker, lease_seconds, now, most)
                for job in taken:
                    announce_start(conn, job, now)  # job.started, when the trigger asked
                if len(taken) == most:
                    return taken
                due, stalled = conn.execute(_SOMETHING_TO_CLAIM, {"now": now}).one()
                if not (due or stalled):
                    return taken
                more = most - len(taken)
                return taken + self._claim_some(
                    conn, worker, lease_seconds, now, more, due, stalled, after=bool(taken)
                )
        with self._read() as conn:
            due, stalled = conn.execute(_SOMETHING_TO_CLAIM, {"now": now}).one()
        if not (due or stalled):
            return []
        with self._write() as conn:
            return self._claim_some(conn, worker, lease_seconds, now, most, due, stalled)

    def _claim_some(
        self,
        conn: sa.Connection,
        worker: str,
        lease_seconds: float,
        now: float,
        most: int,
        due: bool,
        stalled: bool,
        *,
        after: bool = False,
    ) -> list[Job]:
        """:meth:`claim_many`'s claims in ``conn``'s transaction, one job each until ``most``
        or none (``due``, ``stalled``: what the look found; ``after``: the batch statement
        took jobs before these, in this transaction). On PostgreSQL the usual case goes on in
        batches (:data:`_TAKE_BATCH`) between the one-job claims."""
        taken: list[Job] = []
        held: set[tuple[int, str]] = set()  # the batch's advisory locks (see _claim_lock)
        fast = conn.dialect.name == "postgresql" and due
        while len(taken) < most:
            more = after or bool(taken)  # a lease that ran out is looked for first, once
            if fast and more:
                batch = self._take_batch(conn, worker, lease_seconds, now, most - len(taken))
                for one in batch:
                    announce_start(conn, one, now)  # job.started, when the trigger asked
                taken.extend(batch)
                if len(taken) == most:
                    break
            job = self._claim(
                conn, worker, lease_seconds, now, stalled=stalled and not more, held=held, more=more
            )
            if job is None:
                break
            announce_start(conn, job, now)  # job.started, when the trigger asked
            taken.append(job)
            if not due:
                break
        return taken

    def _take_batch(
        self, conn: sa.Connection, worker: str, lease_seconds: float, now: float, most: int
    ) -> list[Job]:
        """Up to ``most`` jobs of the claim's usual case in one statement (:data:`_TAKE_BATCH`)."""
        params = {
            "now": now,
            "until": now + lease_seconds,
            "worker": worker,
            "most": most,
            "limited": sorted(self._backend_limits),
        }
        rows = conn.execute(_TAKE_BATCH, params).mappings().all()
        return [Job.from_row(row, claimed_at=now) for row in rows]

    def _claim(
        self,
        conn: sa.Connection,
        worker: str,
        lease_seconds: float,
        now: float,
        *,
        stalled: bool,
        held: set[tuple[int, str]] | None = None,
        more: bool = False,
    ) -> Job | None:
        """One claim in ``conn``'s write transaction; ``stalled``: look for a lease that ran
        out first; ``held`` and ``more``: see :meth:`_fair_pick`."""
        lost = conn.execute(_STALLED, {"now": now}).scalar() if stalled else None
        refusal: ErrorCode | None = None
        limited = False
        if lost is not None:
            self._close_lost_attempt(conn, lost, lease_seconds, now)
            job_id, take = lost, _TAKE_STALLED
        else:
            job_id, refusal, limited = self._fair_pick(
                conn, now, set() if held is None else held, more=more
            )
            take = _TAKE_QUEUED
        if job_id is None:
            return None
        lease = {"jid": job_id, "worker": worker, "until": now + lease_seconds, "now": now}
        claimed = conn.execute(take, lease).mappings().first()
        if claimed is None:
            return None  # a cancel or another worker took it first: the next poll goes on
        first = limited and claimed["attempts"] == 1 and claimed["start_seq"] is None
        if lost is None and not first and conn.dialect.name == "postgresql":
            conn.execute(
                _SERVED_STARTED,
                {
                    "sid": claimed["service_id"],
                    "now": now,
                    "first": 0,
                    "jid": job_id,
                    "number": claimed["attempts"],
                    "worker": worker,
                    "backend": claimed["backend"],
                    "detail": {"attempt": claimed["attempts"]},
                },
            )
            return Job.from_row(claimed, claimed_at=now, refusal=refusal)
        if lost is None:  # it leaves the queue: its service's turn is taken
            seq = conn.execute(
                _SERVED, {"sid": claimed["service_id"], "now": now, "first": int(first)}
            ).scalar_one()
            if first:  # numbered for the rate window of real starts
                conn.execute(_NUMBER_START, {"jid": job_id, "seq": seq})
        conn.execute(
            _ATTEMPT_STARTS,
            {
                "job_id": job_id,
                "number": claimed["attempts"],
                "worker": worker,
                "started_at": now,
                "backend": claimed["backend"],
            },
        )
        self._event(conn, job_id, JobStatus.RUNNING, {"attempt": claimed["attempts"]}, now)
        return Job.from_row(claimed, claimed_at=now, refusal=refusal)

    # how many candidate jobs one claim looks at before it gives up (each one skipped is held
    # with its reason and eligible_at, so the next claim does not look at it again)
    CLAIM_CANDIDATES = 16

    def _fair_pick(
        self, conn: sa.Connection, now: float, held: set[tuple[int, str]], *, more: bool = False
    ) -> tuple[str | None, ErrorCode | None, bool]:
        """The next job to start: fair across services, then by priority and eligible_at.

        Services take turns: of the services with a due job that are not paused, the one
        served longest ago goes first, so one service's backlog delays another service's job
        by at most the job slot that is running. Within a service, ``high`` before ``normal``
        before ``low``, then the earliest ``eligible_at``. Jobs of a backend whose breaker is
        open are not candidates. One query finds the service and its job; a service with a
        rate limit or a budget, or a backend with limits, costs a few more reads. A candidate
        that its service's rate window, its backend's limits or the daily budget stops is held
        (reason and eligible_at written) or skipped, and the next is tried. ``(job id,
        refusal, rate-limited)``: a refusal (``budget_exceeded``) is claimed to be ended at
        once; a rate-limited service's first starts are numbered for its window.

        ``held``: the advisory locks its transaction holds so far (see :func:`_claim_lock`);
        ``more``: a later claim of a batch, which stops (None) at a job whose service has a
        daily budget rather than take a second ledger lock."""
        tried: set[str] = set()  # services with nothing that may start now
        blocked: set[str] = set()  # backends at their concurrency or rate limit
        for _ in range(self.CLAIM_CANDIDATES):
            pick = self._next_candidate(conn, now, tried, blocked)
            if pick is None:
                return None, None, False
            service_id, job_id = pick.service_id, pick.job_id
            limit = RateLimit.parse(pick.rate_limit)
            if limit is None and pick.daily_budget is None and not self._backend_limits:
                return job_id, None, False
            cand = (
                pick.candidate
                or conn.execute(
                    sa.select(jobs.c.backend, jobs.c.estimate, jobs.c.first_claimed_at).where(
                        jobs.c.id == job_id
                    )
                ).one()
            )
            if (
                cand.backend is not None
                and cand.backend in self._backend_limits
                and (
                    not _claim_lock(conn, BACKEND_LOCK, cand.backend, held)
                    or self._backend_busy(conn, cand.backend, now)
                )
            ):
                blocked.add(cand.backend)  # the service's jobs of other backends may go
                continue
            if limit is not None and cand.first_claimed_at is None:
                if not _claim_lock(conn, START_LOCK, service_id, held):
                    tried.add(service_id)
                    continue
                # PostgreSQL: the service's starts read again under the lock (the pick's read
                # may predate another claimer's commit); SQLite's pick is in this transaction
                seq = (
                    pick.start_seq
                    if conn.dialect.name != "postgresql"
                    else conn.execute(_SERVICE_STARTS, {"sid": service_id}).scalar_one()
                )
                # the N-th latest first start of the service: if it is inside the window, the
                # window is full until it leaves
                nth = conn.execute(
                    sa.select(jobs.c.first_claimed_at).where(
                        jobs.c.service_id == service_id,
                        jobs.c.start_seq == seq - limit.count + 1,
                    )
                ).scalar()
                if nth is not None and nth > now - limit.period:
                    self._hold(conn, job_id, HoldReason.RATE_LIMIT, nth + limit.period, now)
                    continue  # the service's next job may be a retry, which the window allows
            if more and pick.daily_budget is not None:
                return None, None, False  # the batch ends here; the next claim starts with it
            refusal = self._reserve(conn, service_id, job_id, cand.estimate, pick, now)
            if not isinstance(refusal, ErrorCode | None):
                continue  # held for the budget
            return job_id, refusal, limit is not None
        return None, None, False

    # services looked at per round of the claim (the ones served longest ago with jobs waiting)
    SERVICES_PER_ROUND = 8

    def _next_candidate(
        self, conn: sa.Connection, now: float, tried: set[str], blocked: set[str]
    ) -> Any | None:
        """The service served longest ago that has a job that may start, with that job (locked
        on PostgreSQL, ``SKIP LOCKED``, so concurrent claims take different jobs).

        Usually one statement: the next due job of the service whose turn it is (when that
        service has one). Otherwise two plain reads: the services with jobs waiting (their
        counter) in turn order, then, for each in that order until one has one, its next due
        job by priority and eligible_at."""
        if not tried and not blocked:
            first = conn.execute(_FIRST_IN_TURN, {"now": now}).first()
            if first is not None:
                return _Pick(first, first.job_id, first)
        round_ = conn.execute(
            sa.select(
                services.c.id.label("service_id"),
                services.c.rate_limit,
                services.c.daily_budget,
                services.c.on_budget,
                services.c.start_seq,
            )
            .where(
                services.c.paused_at.is_(None),
                services.c.waiting > 0,
                services.c.id.not_in(tried) if tried else sa.true(),
            )
            .order_by(services.c.last_served_at, services.c.id)
            .limit(self.SERVICES_PER_ROUND)
        ).all()
        if not round_:
            return None
        open_ = sa.select(backend_state.c.backend).where(backend_state.c.state == BreakerState.OPEN)
        excluded: Any = (
            open_.union(*(sa.select(sa.literal(b)) for b in sorted(blocked))) if blocked else open_
        )
        for svc in round_:
            job_id = conn.execute(
                sa.select(jobs.c.id)
                .where(
                    jobs.c.service_id == svc.service_id,
                    claimable(),
                    jobs.c.run_after <= now,
                    startable(now),  # not past its trigger's deadline
                    # not a backend whose breaker is open, nor one at its limit (this claim)
                    sa.or_(jobs.c.backend.is_(None), jobs.c.backend.not_in(excluded)),
                )
                .order_by(jobs.c.priority.desc(), jobs.c.run_after, jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            if job_id is not None:
                return _Pick(svc, job_id)
            tried.add(svc.service_id)
        return self._next_candidate(conn, now, tried, blocked)

    @property
    def _backend_limits(self) -> set[str]:
        return set(self.backend_concurrency) | set(self.backend_rates)

    def _backend_busy(self, conn: sa.Connection, backend: str, now: float) -> bool:
        """Is ``backend`` at its concurrency limit, or at its rate of starts, now?"""
        cap = self.backend_concurrency.get(backend)
        if cap is not None:
            running = conn.execute(
                sa.select(sa.func.count()).where(
                    jobs.c.status == JobStatus.RUNNING, jobs.c.backend == backend
                )
            ).scalar_one()
            if running >= cap:
                return True
        rate = self.backend_rates.get(backend)
        if rate is not None:
            count, period = rate
            started = conn.execute(
                sa.select(sa.func.count()).select_from(
                    sa.select(attempts.c.id)
                    .where(attempts.c.backend == backend, attempts.c.started_at > now - period)
                    .limit(count)
                    .subquery()
                )
            ).scalar_one()
            if started >= count:
                return True
        return False

    def _hold(
        self, conn: sa.Connection, job_id: str, reason: HoldReason, until: float, now: float
    ) -> None:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id)
            .values(hold_reason=reason, run_after=until, updated_at=now)
        )

    def _reserve(
        self,
        conn: sa.Connection,
        service_id: str,
        job_id: str,
        estimate: float,
        svc: Any,
        now: float,
    ) -> ErrorCode | HoldReason | None:
        """Reserve the job's estimate on today's ledger, or hold it until the next UTC day
        (``--on-budget hold``: returns ``budget``), or let the worker end it
        (``--on-budget fail``: returns ``budget_exceeded``)."""
        if svc.daily_budget is None:
            return None
        day = utc_day(now)
        row = ledger(conn, service_id, day)
        decision = budget_decision(
            svc.daily_budget,
            row.spent if row else 0.0,
            row.reserved if row else 0.0,
            estimate,
            svc.on_budget,
        )
        if decision is BudgetDecision.RESERVE:
            if estimate:
                add_to_ledger(conn, service_id, day, reserved=estimate)
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id)
                    .values(reserved=estimate, reserved_day=day)
                )
            return None
        check_thresholds(conn, service_id, day, now, self.alert_url, exhausted=True)
        if decision is BudgetDecision.HOLD:
            self._hold(conn, job_id, HoldReason.BUDGET, next_utc_midnight(now), now)
            return HoldReason.BUDGET
        return ErrorCode.BUDGET_EXCEEDED

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
            lease = {"jid": job_id, "worker": worker, "until": now + lease_seconds}
            row = conn.execute(_RENEW, lease).first()
        return Lease(owned=row is not None, cancel_requested=bool(row and row[0]))

    def renew_leases(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> dict[str, bool]:
        """Renew every lease ``worker`` holds of ``job_ids`` in one transaction (a worker
        process's heartbeat for all its jobs): the jobs still its own, each with whether
        cancellation was asked. A job missing from the answer is no longer the worker's."""
        now = self.clock.now()
        owned: dict[str, bool] = {}
        if not job_ids:
            return owned
        with self._write() as conn:
            for start in range(0, len(job_ids), LEASE_BATCH):
                ids = list(job_ids[start : start + LEASE_BATCH])
                params = {"ids": ids, "worker": worker, "until": now + lease_seconds}
                owned.update(
                    {jid: bool(cancel) for jid, cancel in conn.execute(_RENEW_MANY, params)}
                )
        return owned

    def cancels_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of ``job_ids`` have had cancellation asked (one read for all)."""
        asked: set[str] = set()
        if not job_ids:
            return asked
        with self._autocommit_read() as conn:
            for start in range(0, len(job_ids), LEASE_BATCH):
                ids = list(job_ids[start : start + LEASE_BATCH])
                asked.update(conn.execute(_CANCELS_ASKED, {"ids": ids}).scalars())
        return asked

    @contextmanager
    def _autocommit_read(self) -> Iterator[sa.Connection]:
        """A connection for reads that need no snapshot of their own: on PostgreSQL each
        statement alone, outside a transaction (one round trip instead of BEGIN, the read and
        COMMIT); on SQLite a read transaction. Failures are ``store_unavailable``."""
        if self.engine.dialect.name != "postgresql":
            with self._read() as conn:
                yield conn
            return
        try:
            with self.engine.connect() as conn:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.SQLAlchemyError as exc:
            error = unavailable(exc)
            if error is None:
                raise
            raise error from exc

    def record_progress(
        self, worker: str, progress: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> int:
        """Record each ``(job_id, detail)`` as a progress event of a running job that
        ``worker`` still holds (status ``running``, ``detail`` ``{"progress": {...}}``), all in
        one transaction; returns how many were recorded (a job lost or ended meanwhile: none)."""
        if not progress:
            return 0
        now = self.clock.now()
        with self._write() as conn:
            ids = list(dict.fromkeys(jid for jid, _ in progress))
            owned: set[str] = set()
            for start in range(0, len(ids), LEASE_BATCH):
                chunk = ids[start : start + LEASE_BATCH]
                owned.update(
                    conn.execute(_OWNED_RUNNING, {"ids": chunk, "worker": worker}).scalars()
                )
            rows = [
                {
                    "job_id": jid,
                    "at": now,
                    "status": JobStatus.RUNNING,
                    "detail": {"progress": dict(d)},
                }
                for jid, d in progress
                if jid in owned
            ]
            if rows:
                conn.execute(_EVENT, rows)
                # job.progress callbacks, where triggers asked (at most one every 2 s a job)
                outbox_progress(conn, [(jid, d) for jid, d in progress if jid in owned], now)
        return len(rows)

    def cancel_requested(self, job_id: str) -> bool:
        """Has cancellation been asked for this job? (A worker asks once for each job before
        its first step: on PostgreSQL one statement outside a transaction, one round trip
        instead of BEGIN, the read and COMMIT.)"""
        with self._autocommit_read() as conn:
            return bool(conn.execute(_CANCEL_ASKED, {"jid": job_id}).scalar())

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
    ) -> JobStatus | None:
        """End a job the worker still holds, and outbox its payload, in one transaction.

        A cancel recorded before this transaction wins: the job ends ``cancelled`` with the
        ``cancelled`` payload (this attempt's credits and time counted), and ``publish`` (which
        makes the attempt's assets the job's) is not called. Returns the status the job ended
        with, or None when ``worker`` no longer held its lease (nothing changed).
        """
        ending = Finish(
            job_id,
            worker,
            status=status,
            payload=payload,
            error=error,
            credit_cost=credit_cost,
            work_seconds=work_seconds,
            cancelled=cancelled,
            publish=publish,
            made=made,
        )
        now = self.clock.now()
        with self._write() as conn:
            return self._finish(conn, ending, now)

    def finish_many(self, endings: Sequence[Finish]) -> list[JobStatus | None]:
        """:meth:`finish` of several jobs in one transaction (one commit for all), each as
        :meth:`finish` ends it alone: its own lease checked (a job whose lease its worker lost
        is skipped: None, nothing written for it), a cancel recorded first winning, its
        payload outboxed. The statuses, in the order of ``endings``.

        All or nothing: when it raises, nothing of the transaction was kept (every job still
        runs, on its worker's lease); the caller may end each again alone (a ``publish`` that
        ran already is a no-op the second time), see :class:`genhook.worker.Finisher`."""
        if not endings:
            return []
        now = self.clock.now()
        with self._write() as conn:
            if conn.dialect.name != "postgresql":
                return [self._finish(conn, ending, now) for ending in endings]
            return self._finish_batch(conn, endings, now)

    def _finish_batch(
        self, conn: sa.Connection, endings: Sequence[Finish], now: float
    ) -> list[JobStatus | None]:
        """PostgreSQL: :meth:`finish_many` with the common part of every end in one statement
        (:data:`_FINISH_BATCH`), the rest per job in the order :meth:`_finish` takes it (its
        ledger, its assets published, its backend's breaker; then the roll-ups, one statement
        per service and workflow; then its outbox and its batch). A job the statement did not
        release (a cancel asked, or its lease lost) is then ended as :meth:`_finish` ends it."""
        order = sorted(range(len(endings)), key=lambda i: endings[i].job_id)
        mine = [endings[i] for i in order]  # row locks taken in one order (no deadlocks)
        rows = [
            {
                "id": e.job_id,
                "worker": e.worker,
                "status": str(e.status),
                "result": e.payload,
                "code": e.error.code.value if e.error else None,
                "description": e.error.description if e.error else None,
                "credits": float(e.credit_cost),
                "work": float(e.work_seconds),
                "made": None if e.made is None else dict(e.made),
                "passed": int(
                    e.status is JobStatus.SUCCEEDED and e.payload.get("quality_warning") is None
                ),
            }
            for e in mine
        ]
        # the payloads as JSON, NaN and infinities refused as encode_payload refuses them
        rows_json = json.dumps(rows, allow_nan=False, ensure_ascii=False)
        params = {"now": now, "bucket": hour_of(now), "rows": rows_json}
        done = {row.id: row for row in conn.execute(_FINISH_BATCH, params)}
        by_id = {e.job_id: e for e in mine}
        rollups: dict[tuple[str, str], dict[str, float]] = {}
        for job_id, row in done.items():
            ending = by_id[job_id]
            self._settle(conn, job_id, row, ending.credit_cost)
            succeeded = ending.status is JobStatus.SUCCEEDED
            if succeeded and ending.publish is not None:
                ending.publish()  # inside the transaction: the files go live only if it commits
            if succeeded and row.backend is not None:
                conn.execute(_BREAKER_HEALED, {"name": row.backend, "now": now})
            figures = rollups.setdefault((row.service_id, row.workflow_id), {})
            add = {
                _ENDED_FIGURE[ending.status]: 1.0,
                "generation_seconds": float(row.processing_seconds),
                "credits": float(row.credit_cost),
            }
            if succeeded:
                add["qc_checked"] = 1.0
                add["qc_passed"] = float(ending.payload.get("quality_warning") is None)
            for name, value in add.items():
                figures[name] = figures.get(name, 0.0) + value
        rolled = any(row.rolled for row in done.values())  # the statement did them
        for (service_id, workflow_id), figures in sorted(rollups.items()):
            if not rolled:
                bump_rollup(conn, service_id, workflow_id, now, **figures)
        for job_id, row in done.items():
            if row.callback_url and asks_any(row.envelope):
                drop_pending_events(conn, job_id)  # no job.started/progress after the end
            if row.callback_url:  # the canonical bytes every attempt signs and POSTs
                encoded = Encoded.of(by_id[job_id].payload)
                self._outbox(conn, job_id, row.service_id, row.callback_url, encoded, now)
            if row.batch_id is not None:  # the batch's last job outboxes the batch callback
                batch_job_ended(conn, row.batch_id, now)
        statuses: dict[str, JobStatus | None] = {}
        for ending in mine:
            if ending.job_id in done:
                statuses[ending.job_id] = ending.status
            else:  # a cancel asked first, or the lease lost: as a single finish ends it
                statuses[ending.job_id] = self._finish(conn, ending, now)
        return [statuses[ending.job_id] for ending in endings]

    def _settle(self, conn: sa.Connection, job_id: str, done: Any, credit_cost: float) -> None:
        """A released job's reservation released and its real cost booked (see
        :meth:`_release`)."""
        if done.reserved or done.reserved_day is not None:
            conn.execute(_UNRESERVE, {"jid": job_id})
        settle(
            conn,
            done.service_id,
            done.reserved,
            done.reserved_day,
            credit_cost,
            self.clock.now(),
            self.alert_url,
        )

    def _finish(self, conn: sa.Connection, ending: Finish, now: float) -> JobStatus | None:
        """:meth:`finish`'s work in ``conn``'s transaction."""
        job_id, worker = ending.job_id, ending.worker
        status, error, credit_cost = ending.status, ending.error, ending.credit_cost
        encoded = Encoded.of(ending.payload)
        done = self._release(
            conn,
            job_id,
            worker,
            credit_cost,
            ending.work_seconds,
            cancel_requested=False,
            status=status,
            result=encoded.parsed,
            error_code=error.code.value if error else None,
            finished_at=now,
            updated_at=now,
        )
        if done is not None and ending.publish is not None:
            ending.publish()  # inside the transaction: the files go live only if this commits
        if done is None:
            status, error = JobStatus.CANCELLED, _CANCELLED
            cancelled = ending.cancelled() if callable(ending.cancelled) else ending.cancelled
            encoded = Encoded.of(cancelled) if cancelled else encoded
            done = self._release(
                conn,
                job_id,
                worker,
                credit_cost,
                ending.work_seconds,
                **self._cancelled(encoded, now),
            )
            if done is None:
                return None
        self._ended(
            conn,
            job_id,
            done,
            status,
            encoded,
            error,
            now,
            credit_cost=credit_cost,
            made=ending.made,
        )
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
        made: Mapping[str, float] | None = None,
        spared: bool = False,
    ) -> JobStatus | None:
        """Put a job the worker holds back in the queue after ``delay`` seconds, or, when a
        cancel was recorded meanwhile, end it ``cancelled`` (outboxing ``cancelled``).
        Returns ``retrying`` or ``cancelled``, None when the lease was lost.

        ``spared``: the attempt failed because its backend's breaker is open; it does not count
        against the retry schedule, and the job waits (``backend_unavailable``) for the probe."""
        now = self.clock.now()
        held = {"hold_reason": HoldReason.BACKEND_UNAVAILABLE} if spared else {}
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
                spared=spared,
                **held,
            )
            if done is not None:
                self._close_attempt(
                    conn,
                    job_id,
                    AttemptOutcome.RETRYING,
                    error,
                    now,
                    credit_cost=credit_cost,
                    made=made,
                )
                # the service row before the roll-up, in the order admission takes them
                conn.execute(_REQUEUE, {"service_id": done.service_id})
                bump_rollup(conn, done.service_id, done.workflow_id, now, retries=1)
                self._event(
                    conn,
                    job_id,
                    JobStatus.RETRYING,
                    {"error": error.to_dict(), "retry_at": now + delay},
                    now,
                )
                return JobStatus.RETRYING
            return self._end_cancelled(
                conn, job_id, worker, credit_cost, work_seconds, cancelled, now, made
            )

    def _end_cancelled(
        self,
        conn: sa.Connection,
        job_id: str,
        worker: str,
        credit_cost: float,
        work_seconds: float,
        cancelled: Mapping[str, Any],
        now: float,
        made: Mapping[str, float] | None,
    ) -> JobStatus | None:
        """End a job whose cancel was asked while ``worker`` ran it: ``cancelled``, outboxing
        the ``cancelled`` payload, this attempt's credits and time counted. None when the
        worker no longer holds it (nothing changed)."""
        encoded = Encoded.of(cancelled)
        done = self._release(
            conn, job_id, worker, credit_cost, work_seconds, **self._cancelled(encoded, now)
        )
        if done is None:
            return None
        self._ended(
            conn,
            job_id,
            done,
            JobStatus.CANCELLED,
            encoded,
            _CANCELLED,
            now,
            credit_cost=credit_cost,
            made=made,
        )
        return JobStatus.CANCELLED

    def hand_back(self, worker: str, job_ids: Sequence[str]) -> list[str]:
        """Give back jobs ``worker`` holds and will not finish (it is shutting down), in one
        transaction: each goes back to the queue at once, in its old place, claimable by any
        worker now rather than when its lease would have run out. Its attempt is closed
        ``handed_back`` and spared (it does not count against the retry schedule), the time it
        ran is counted, and its budget reservation is released. A cancel asked meanwhile stays
        asked (the next worker's first check ends the job ``cancelled``). Returns the ids handed
        back; a job no longer the worker's (ended, or taken over) is left as it is."""
        now = self.clock.now()
        handed: list[str] = []
        with self._write() as conn:
            for job_id in job_ids:
                started = conn.execute(
                    sa.select(attempts.c.started_at).where(
                        attempts.c.job_id == job_id, attempts.c.ended_at.is_(None)
                    )
                ).scalar()
                work = max(0.0, now - float(started)) if started is not None else 0.0
                done = None
                for asked in (False, True):  # either way: the cancel flag is left as it is
                    done = self._release(
                        conn,
                        job_id,
                        worker,
                        0.0,
                        work,
                        cancel_requested=asked,
                        spared=True,
                        status=JobStatus.QUEUED,
                        updated_at=now,
                    )
                    if done is not None:
                        break
                if done is None:
                    continue
                self._close_attempt(conn, job_id, AttemptOutcome.HANDED_BACK, None, now)
                conn.execute(_REQUEUE, {"service_id": done.service_id})
                self._event(conn, job_id, JobStatus.QUEUED, {"handed_back": True}, now)
                handed.append(job_id)
        return handed

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
        **spent: Any,
    ) -> None:
        """What follows a job's end in its transaction: close the attempt, log, outbox, and add
        it to its hour's roll-up (on PostgreSQL the first two and the roll-up in one
        statement)."""
        one_statement = conn.dialect.name == "postgresql"
        if not one_statement:
            self._close_attempt(conn, job_id, AttemptOutcome(status), error, now, **spent)
            self._event(conn, job_id, status, encoded.parsed, now)
        ended = {
            JobStatus.SUCCEEDED: "completed",
            JobStatus.FAILED: "failed",
            JobStatus.CANCELLED: "cancelled",
        }[status]
        figures: dict[str, float] = {
            ended: 1,
            "generation_seconds": float(done.processing_seconds),
            "credits": float(done.credit_cost),
        }
        if status is JobStatus.SUCCEEDED:
            figures["qc_checked"] = 1
            figures["qc_passed"] = int(encoded.parsed.get("quality_warning") is None)
            if done.backend is not None:
                conn.execute(_BREAKER_HEALED, {"name": done.backend, "now": now})
        if one_statement:
            closing = _attempt_end(
                job_id,
                AttemptOutcome(status),
                error,
                now,
                spent.get("credit_cost", 0.0),
                spent.get("made"),
            )
            conn.execute(
                _ending(tuple(sorted(figures))),
                {
                    **closing,
                    "e_status": status,
                    "e_detail": encoded.parsed,
                    "service_id": done.service_id,
                    "workflow_id": done.workflow_id,
                    "bucket": hour_of(now),
                    **figures,
                },
            )
        else:
            bump_rollup(conn, done.service_id, done.workflow_id, now, **figures)
        if done.callback_url and asks_any(done.envelope):
            drop_pending_events(conn, job_id)  # no job.started/progress after the end
        if done.callback_url:
            self._outbox(conn, job_id, done.service_id, done.callback_url, encoded, now)
        if done.batch_id is not None:  # the batch's last job outboxes the batch callback
            batch_job_ended(conn, done.batch_id, now)

    def _release(
        self,
        conn: sa.Connection,
        job_id: str,
        worker: str,
        credit_cost: float,
        work_seconds: float,
        *,
        cancel_requested: bool,
        spared: bool = False,
        **values: Any,
    ) -> sa.Row[Any] | None:
        """Move a job out of ``running`` if ``worker`` still holds its lease and its cancel flag
        is ``cancel_requested``, adding the attempt's credits and working time (and counting a
        ``spared`` attempt); else None. The attempt's budget reservation is released and its
        real cost booked on the ledger.

        One conditional update: on PostgreSQL a concurrent cancel either commits first (and
        this update, re-checking its condition, no longer matches) or waits for this one."""
        statement = _releasing(cancel_requested, tuple(values), spared)
        params = {f"v_{column}": value for column, value in values.items()}
        params.update(jid=job_id, worker=worker, credits=credit_cost, work=work_seconds)
        done = conn.execute(statement, params).first()
        if done is None:
            return None
        self._settle(conn, job_id, done, credit_cost)
        return done

    def cancel(self, job_id: str, payload: Callable[[StoredJob], Mapping[str, Any]]) -> JobStatus:
        """Cancel a queued or retrying job at once; flag a running one. Each is one conditional
        update, so a cancel never overwrites a job that a worker claimed or ended meanwhile.

        ``payload`` builds the cancelled job's payload from its record (read under the update's
        lock, so its attempts and credits are current). Returns the job's status afterwards:
        ``cancelled``, ``running`` (its worker stops at its next check, and a cancel recorded
        before the job's finishing transaction wins), or the terminal status it already had.
        """
        now = self.clock.now()
        with self._write() as conn:
            ended = (
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job_id, claimable())
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
                encoded = Encoded.of(payload(StoredJob.from_row(ended)))
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(result=encoded.parsed))
                conn.execute(_DEQUEUE, {"service_id": ended["service_id"]})  # before the roll-up
                bump_rollup(conn, ended["service_id"], ended["workflow_id"], now, cancelled=1)
                self._event(conn, job_id, JobStatus.CANCELLED, encoded.parsed, now)
                if ended["callback_url"] and asks_any(ended["envelope"]):
                    drop_pending_events(conn, job_id)  # a retrying job's progress left
                if ended["callback_url"]:
                    self._outbox(
                        conn, job_id, ended["service_id"], ended["callback_url"], encoded, now
                    )
                if ended["batch_id"] is not None:
                    batch_job_ended(conn, ended["batch_id"], now)
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
        *,
        credit_cost: float = 0.0,
        made: Mapping[str, float] | None = None,
    ) -> None:
        conn.execute(_CLOSE_ATTEMPT, _attempt_end(job_id, outcome, error, now, credit_cost, made))

    def _event(
        self, conn: sa.Connection, job_id: str, status: JobStatus, detail: Any, now: float
    ) -> None:
        conn.execute(_EVENT, {"job_id": job_id, "at": now, "status": status, "detail": detail})

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
            _OUTBOX,
            {
                "id": new_id("msg"),
                "job_id": job_id,
                "service_id": service_id,
                "kind": "callback",
                "endpoint": endpoint_of(url),
                "url": url,
                "body": encoded.body,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )

    def backend_failed(self, backend: str, error: GenhookError) -> Breaker:
        """A transient failure of ``backend``: count it, and open its breaker at
        ``backend_breaker_failures`` in a row (operator event ``backend.unhealthy``)."""
        now = self.clock.now()
        with self._write() as conn:
            before = breaker(conn, backend)
            after = before.failed(now, self.backend_breaker_failures, self.backend_probe_seconds)
            save_breaker(conn, backend, after, now, error.description)
            if after.state is BreakerState.OPEN and before.state is BreakerState.CLOSED:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.backend == backend, claimable())
                    .values(
                        hold_reason=HoldReason.BACKEND_UNAVAILABLE,
                        run_after=sa.func.max(jobs.c.run_after, after.probe_at)
                        if conn.dialect.name == "sqlite"
                        else sa.func.greatest(jobs.c.run_after, after.probe_at),
                        updated_at=now,
                    )
                )
                record_event(
                    conn,
                    event=OperatorEvent.BACKEND_UNHEALTHY,
                    service=None,
                    details={
                        "backend": backend,
                        "failures": after.failures,
                        "error_code": error.code.value,
                        "error_description": error.description,
                        "probe_at": after.probe_at,
                    },
                    now=now,
                    alert_url=self.alert_url,
                )
        return after

    def take_probe(self) -> str | None:
        """An open backend whose probe is due, its next probe pushed back a full interval so
        that one worker (of any process) probes it; None when none is due."""
        now = self.clock.now()
        due = sa.select(backend_state.c.backend).where(
            backend_state.c.state == BreakerState.OPEN, backend_state.c.probe_at <= now
        )
        # every idle worker asks at every poll: a read answers the usual "none", so that idle
        # workers do not take SQLite's write lock from the accept path
        with self._read() as conn:
            if conn.execute(due.limit(1)).first() is None:
                return None
        with self._write() as conn:
            row = conn.execute(due.limit(1).with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            conn.execute(
                backend_state.update()
                .where(backend_state.c.backend == row.backend)
                .values(probe_at=now + self.backend_probe_seconds, updated_at=now)
            )
            return str(row.backend)

    def probe_result(self, backend: str, ok: bool, reason: str | None = None) -> None:
        """What a probe found: closed again (``backend.recovered``; its held jobs due now), or
        still open until the next probe."""
        now = self.clock.now()
        with self._write() as conn:
            before = breaker(conn, backend)
            if before.state is not BreakerState.OPEN:
                return
            if not ok:
                save_breaker(
                    conn, backend, before.probe_failed(now, self.backend_probe_seconds), now, reason
                )
                return
            save_breaker(conn, backend, before.succeeded(), now)
            # the breaker's hold lifts, no other: a retry's wait or a rate slot still ahead
            # (opening kept the later of it and the probe in run_after) is waited out
            later = jobs.c.run_after > now
            conn.execute(
                jobs.update()
                .where(
                    jobs.c.backend == backend,
                    claimable(),
                    jobs.c.hold_reason == HoldReason.BACKEND_UNAVAILABLE,
                )
                .values(
                    hold_reason=sa.case(
                        (
                            sa.and_(
                                later,
                                jobs.c.first_claimed_at.is_(None),
                                jobs.c.rate_slot > now,
                            ),
                            HoldReason.RATE_LIMIT.value,
                        ),
                        else_=None,
                    ),
                    run_after=sa.case((later, jobs.c.run_after), else_=now),
                    updated_at=now,
                )
            )
            record_event(
                conn,
                event=OperatorEvent.BACKEND_RECOVERED,
                service=None,
                details={
                    "backend": backend,
                    "down_seconds": round(now - (before.opened_at or now), 3),
                },
                now=now,
                alert_url=self.alert_url,
            )

    def breakers(self) -> dict[str, Breaker]:
        """Every backend's breaker that has a state."""
        with self._read() as conn:
            rows = conn.execute(sa.select(backend_state)).all()
        return {
            r.backend: Breaker(BreakerState(r.state), r.failures, r.opened_at, r.probe_at)
            for r in rows
        }

    def paused(self, service_id: str) -> bool:
        """Is the service paused (its breaker tripped, and no operator resumed it yet)?"""
        with self._read() as conn:
            return (
                conn.execute(
                    sa.select(services.c.paused_at).where(services.c.id == service_id)
                ).scalar()
                is not None
            )

    def job(self, job_id: str) -> StoredJob | None:
        """A job by id."""
        with self._read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return StoredJob.from_row(row) if row else None

    def jobs_by_external_id(
        self, service_id: str, external_id: str, limit: int = 100
    ) -> list[StoredJob]:
        """A service's jobs for one of its own ids, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs)
                .where(jobs.c.service_id == service_id, jobs.c.external_id == external_id)
                .order_by(jobs.c.created_at.desc())
                .limit(limit)
            ).mappings()
            return [StoredJob.from_row(r) for r in rows]

    def recent_outputs(
        self,
        service_id: str,
        workflow_id: str,
        external_id: str,
        *,
        exclude: str = "",
        limit: int = 20,
    ) -> list[tuple[str, dict[str, Any]]]:
        """The last ``limit`` succeeded jobs of one service, workflow and external id (newest
        first, the job ``exclude`` left out), each as (job id, its stored completion payload).

        Read on ``ix_jobs_service_external`` (service, external id): the external id's jobs
        are few, and their workflow and status are filtered on those rows."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs.c.id, jobs.c.result)
                .where(
                    jobs.c.service_id == service_id,
                    jobs.c.external_id == external_id,
                    jobs.c.workflow_id == workflow_id,
                    jobs.c.status == JobStatus.SUCCEEDED,
                    jobs.c.id != exclude,
                )
                .order_by(jobs.c.finished_at.desc(), jobs.c.id.desc())
                .limit(limit)
            ).all()
        return [(r.id, dict(r.result)) for r in rows if isinstance(r.result, dict)]

    def attempts(self, job_id: str) -> list[Attempt]:
        """A job's attempts, first first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number)
            ).mappings()
            return [Attempt.from_row(r) for r in rows]

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """A job's state changes with id greater than ``after``."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.job_id == job_id, events.c.id > after)
                .order_by(events.c.id)
            ).mappings()
            return [JobEvent.from_row(r) for r in rows]
