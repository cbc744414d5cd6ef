"""Deadlines: a job that has not started by its trigger's ``deadline`` ends ``expired``.

The contract's deadline is the time by which the job must have *started*: once its first
attempt ran, a later retry is not bound by it. So, for a job with a deadline that has never
been claimed (``first_claimed_at`` NULL):

- the claim never starts it past its deadline: :func:`startable` is one more condition of the
  claim's candidate queries (so a worker cannot take it even before the sweep ends it);
- the sweep (:meth:`ExpiryStore.expire_due`, run by every worker's claiming loop every
  :data:`SWEEP_SECONDS`) ends the waiting jobs (``queued`` or ``retrying``, held or not) past
  their deadline in bounded batches of :data:`EXPIRY_BATCH`, each one short write transaction
  found through ``ix_jobs_deadline``. An idle sweep is one read (nothing locked or written).

Ending one (:func:`expire`) is what any other end is, in one transaction: status ``expired``
and ``error_code`` ``deadline_expired``, the failed payload (``status: failed``, its
``client_metadata`` echoed) stored as the job's result and its last event, outboxed to its
``callback_url`` like any failure (the terminal callback is always sent), the job taken off its
service's waiting count and counted in the hour's roll-up (``expired``). No credits are
reserved or spent: a job is reserved only when it starts. Each update is conditional on the job
still waiting and never claimed, so a claim and the sweep never both take one job (on PostgreSQL
both lock their candidates ``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from genhook.contract.completion import failure_payload
from genhook.contract.wire import decode_payload, encode_payload
from genhook.errors import ErrorCode, GenhookError
from genhook.status import JobStatus
from genhook.store.accounting import bump_rollup
from genhook.store.base import StoreBase
from genhook.store.callbacks import outbox_event
from genhook.store.records import envelope_metadata
from genhook.store.schema import claimable, events, jobs, services

EXPIRY_BATCH = 200
"""Most jobs one sweep transaction ends."""
SWEEP_SECONDS = 1.0
"""How often a worker's claiming loop sweeps (a job ends at most about this late)."""
SWEEP_BATCHES = 10
"""Most batches one sweep runs before it gives the loop back (the rest: next sweep)."""

_NOW = sa.bindparam("now", type_=jobs.c.deadline.type)
_PAST = sa.and_(claimable(), jobs.c.deadline <= _NOW, jobs.c.first_claimed_at.is_(None))
_ANY_DUE = sa.select(sa.exists().where(_PAST))


@functools.cache
def _due(limit: int) -> sa.Select[Any]:
    """The waiting jobs past their deadline, oldest deadline first, ``limit`` at most (locked
    on PostgreSQL, skipping those a claim holds)."""
    return (
        sa.select(jobs)
        .where(_PAST)
        .order_by(jobs.c.deadline, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


_EXPIRE = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("jid"), claimable(), jobs.c.first_claimed_at.is_(None))
    .values(
        status=JobStatus.EXPIRED,
        error_code=ErrorCode.DEADLINE_EXPIRED.value,
        hold_reason=None,
        finished_at=_NOW,
        updated_at=_NOW,
        result=sa.bindparam("result", type_=jobs.c.result.type),
    )
    .returning(jobs.c.id)
)
_DEQUEUE = (
    services.update()
    .where(services.c.id == sa.bindparam("sid"))
    .values(waiting=services.c.waiting - 1)
)


def startable(now: Any) -> sa.ColumnElement[bool]:
    """A claimable job that may start at ``now`` (a value or a bind parameter): no deadline,
    a deadline still ahead, or one met already (the job started before)."""
    return sa.or_(
        jobs.c.deadline.is_(None), jobs.c.deadline > now, jobs.c.first_claimed_at.is_not(None)
    )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def expired_payload(row: Any, now: float) -> dict[str, Any]:
    """The failed payload of job ``row`` (a ``jobs`` row) that its deadline ended at ``now``."""
    error = GenhookError(
        ErrorCode.DEADLINE_EXPIRED,
        f"the job had not started by its deadline, {_iso(float(row['deadline']))}",
    )
    payload = failure_payload(
        job_id=row["id"],
        workflow_id=row["workflow_id"],
        external_id=row["external_id"],
        error=error,
        attempts=int(row["attempts"]),
        processing_time_seconds=float(row["processing_seconds"]),
        credit_cost=float(row["credit_cost"]),
        timestamp=datetime.fromtimestamp(now, UTC),
        client_metadata=envelope_metadata(row["envelope"]),
    )
    if row["sandbox"]:
        payload = payload.model_copy(update={"test": True})
    return payload.to_json()


def expire(conn: sa.Connection, row: Any, now: float) -> bool:
    """End waiting job ``row`` (a ``jobs`` row, locked) ``expired`` in ``conn``'s transaction;
    False when it is no longer waiting unstarted (a claim or a cancel came first)."""
    body = encode_payload(expired_payload(row, now))
    parsed = decode_payload(body)
    if conn.execute(_EXPIRE, {"jid": row["id"], "now": now, "result": parsed}).first() is None:
        return False
    # the service row before the roll-up, in the order admission takes them
    conn.execute(_DEQUEUE, {"sid": row["service_id"]})
    bump_rollup(conn, row["service_id"], row["workflow_id"], now, expired=1)
    conn.execute(
        events.insert(),
        {"job_id": row["id"], "at": now, "status": JobStatus.EXPIRED, "detail": parsed},
    )
    if row["callback_url"]:
        outbox_event(
            conn,
            job_id=row["id"],
            service_id=row["service_id"],
            url=row["callback_url"],
            kind="callback",
            body=body,
            now=now,
        )
    batch_id = row.get("batch_id")
    if batch_id is not None:  # the batch's last job outboxes the batch callback
        from genhook.store.batches import batch_job_ended

        batch_job_ended(conn, batch_id, now)
    return True


class ExpiryStore(StoreBase):
    """The deadline sweep (see the module docstring)."""

    def expire_due(self, limit: int = EXPIRY_BATCH) -> list[str]:
        """End up to ``limit`` waiting jobs whose deadline has passed, oldest deadline first,
        in one transaction; the ids ended. A read first: with none due, nothing is written."""
        now = self.clock.now()
        with self._read() as conn:
            if not conn.execute(_ANY_DUE, {"now": now}).scalar():
                return []
        with self._write() as conn:
            rows = conn.execute(_due(limit), {"now": now}).mappings().all()
            return [str(row["id"]) for row in rows if expire(conn, row, now)]

    def sweep_deadlines(self, limit: int = EXPIRY_BATCH, batches: int = SWEEP_BATCHES) -> int:
        """:meth:`expire_due` in batches until none is left or ``batches`` ran; how many jobs
        ended."""
        total = 0
        for _ in range(batches):
            ended = self.expire_due(limit)
            total += len(ended)
            if len(ended) < limit:
                break
        return total
