"""Batches: many triggers of one service and workflow accepted in one transaction, and the batch
callback once every job the batch created has ended.

(Not :mod:`genhook.store.batch`, the group committer, which batches concurrent single triggers.)

Accepting: the API checks each item as it checks a single trigger and hands over one
:class:`~genhook.store.admit.Submission` per valid item; :meth:`BatchStore.submit_batch` runs
them through the same :class:`~genhook.store.admit.Admitter` that the group committer runs, in
one write transaction with the ``batches`` row: the queue limit, the rate window, the storm
breaker, the backend breaker, dedup and idempotency apply to each item as to a single trigger,
and an item that admission refuses (``queue_full``, ``idempotency_conflict``) gets its own
error while the others are accepted.

Ending: ``batches.open`` counts the batch's jobs that have not ended. The transaction that ends
one of them (:func:`batch_job_ended`) takes one off; the one that takes the last off (the row
update serializes them on PostgreSQL, and SQLite has one writer) marks the batch ended and
outboxes its callback, so it is queued exactly once, in the same transaction as that job's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genhook.contract.wire import encode_payload
from genhook.errors import ErrorCode, GenhookError
from genhook.status import TERMINAL, DeliveryStatus, JobStatus
from genhook.store.accounting import bump_rollup
from genhook.store.admit import Admitter, Submission
from genhook.store.base import StoreBase
from genhook.store.ops_events import endpoint_of
from genhook.store.records import StoredJob
from genhook.store.schema import batches, deliveries, jobs

BATCH_KIND = "batch"
"""The ``deliveries.kind`` of a batch callback (signed with its service's secret)."""

_TAKE_ONE_OFF = (
    batches.update()
    .where(batches.c.id == sa.bindparam("bid"), batches.c.open > 0)
    .values(open=batches.c.open - 1)
    .returning(batches.c.open)
)
_ENDED = (
    batches.update()
    .where(batches.c.id == sa.bindparam("bid"))
    .values(ended_at=sa.bindparam("now"))
    .returning(*batches.c)
)
_STATUS_COUNTS = (
    sa.select(jobs.c.status, sa.func.count())
    .where(jobs.c.batch_id == sa.bindparam("bid"))
    .group_by(jobs.c.status)
)


def callback_id(batch_id: str) -> str:
    """The delivery id (the ``webhook-id``) of a batch's callback: one per batch, found by it."""
    return f"msg_{batch_id}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StoredBatch:
    """A batch as the store holds it, with the current status of each item's job."""

    id: str
    service_id: str
    workflow_id: str
    created_at: float
    total: int
    created: int
    open: int
    items: list[dict[str, Any]]  # per index: job_id (and status) or error
    callback_url: str | None
    ended_at: float | None
    callback: dict[str, Any] | None = None  # its delivery, once queued

    def counts(self) -> dict[str, int]:
        """Items by outcome: ``refused`` (an error), else the status of their job."""
        counts = {"items": self.total, "accepted": 0, "refused": 0}
        counts.update({str(s): 0 for s in JobStatus})
        for item in self.items:
            if "error" in item:
                counts["refused"] += 1
            else:
                counts["accepted"] += 1
                status = str(item.get("status") or "purged")
                counts[status] = counts.get(status, 0) + 1
        return counts


def batch_payload(batch: sa.Row[Any], counts: dict[str, int], now: float) -> dict[str, Any]:
    """The batch callback: ``event`` ``batch.completed`` with the batch's counts."""
    return {
        "schema_version": "1",
        "event": "batch.completed",
        "batch_id": batch.id,
        "workflow_id": batch.workflow_id,
        "counts": counts,
        "created_at": _iso(float(batch.created_at)),
        "timestamp": _iso(now),
    }


def _end(conn: sa.Connection, batch_id: str, now: float) -> None:
    """Mark the batch ended and outbox its callback (when it has a URL): its counts are its
    items' (refused ones included) and the statuses its jobs ended with."""
    batch = conn.execute(_ENDED, {"bid": batch_id, "now": now}).one()
    if not batch.callback_url:
        return
    refused = sum(1 for item in batch.items if "error" in item)
    counts: dict[str, int] = {
        "items": int(batch.total),
        "accepted": int(batch.total) - refused,
        "refused": refused,
        "created": int(batch.created),
        **{str(s): 0 for s in TERMINAL},
    }
    for status, n in conn.execute(_STATUS_COUNTS, {"bid": batch_id}):
        counts[str(status)] = counts.get(str(status), 0) + int(n)
    conn.execute(
        deliveries.insert(),
        {
            "id": callback_id(batch_id),
            "job_id": None,
            "batch_id": batch_id,
            "service_id": batch.service_id,
            "kind": BATCH_KIND,
            "endpoint": endpoint_of(batch.callback_url),
            "url": batch.callback_url,
            "body": encode_payload(batch_payload(batch, counts, now)),
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )


def batch_job_ended(conn: sa.Connection, batch_id: str, now: float) -> None:
    """In the transaction that ends a job of batch ``batch_id``: one job fewer open, and if it
    was the last, the batch ends and its callback is outboxed (exactly once)."""
    left = conn.execute(_TAKE_ONE_OFF, {"bid": batch_id}).scalar()
    if left == 0:
        _end(conn, batch_id, now)


class BatchStore(StoreBase):
    """Batches of triggers: accept one in a transaction, read one back."""

    def submit_batch(
        self,
        *,
        batch_id: str,
        service_id: str,
        workflow_id: str,
        items: Sequence[Submission | GenhookError],
        callback_url: str | None,
        callback_private: bool = False,
    ) -> list[dict[str, Any]]:
        """Admit every :class:`Submission` of ``items`` and record the batch, in one write
        transaction; the answer's entries in order: ``{"index", "job_id"}`` (with
        ``"deduplicated": true`` for a dedup match, ``"replayed": true`` for an item whose
        idempotency key already has a job), or ``{"index", "error"}`` for an item the API
        refused (a :class:`GenhookError` in ``items``) or admission refused. A batch that
        creates no job ends at once (its callback is outboxed in this transaction)."""
        for _ in range(3):
            try:
                return self._submit_batch(
                    batch_id, service_id, workflow_id, items, callback_url, callback_private
                )
            except IntegrityError:
                continue  # another process won an item's idempotency key: read it again
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not insert the batch")

    def _submit_batch(
        self,
        batch_id: str,
        service_id: str,
        workflow_id: str,
        items: Sequence[Submission | GenhookError],
        callback_url: str | None,
        callback_private: bool,
    ) -> list[dict[str, Any]]:
        now = self.clock.now()
        # fresh rows each try: admission sets a row's hold and slot columns
        valid = [
            Submission({**item.row, "batch_id": batch_id}, item.dedup_window)
            for item in items
            if isinstance(item, Submission)
        ]
        entries: list[dict[str, Any]] = []
        created = 0
        with self._write() as conn:
            outcomes = iter(Admitter(self.default_queue_limit, self.alert_url)(conn, valid))
            for index, item in enumerate(items):
                outcome: Any = item if isinstance(item, GenhookError) else next(outcomes)
                if isinstance(outcome, GenhookError):
                    entries.append({"index": index, "error": outcome.to_dict()})
                    continue
                job, made = outcome
                entry: dict[str, Any] = {"index": index, "job_id": job.id}
                if made:
                    created += 1
                elif job.deduplicated:
                    entry["deduplicated"] = True
                else:
                    entry["replayed"] = True
                entries.append(entry)
            refused = sum(1 for e in entries if "error" in e)
            if refused:  # the hour's roll-up after the services' rows, as admission orders them
                bump_rollup(conn, service_id, workflow_id, now, triggers=refused, refused=refused)
            conn.execute(
                batches.insert(),
                {
                    "id": batch_id,
                    "service_id": service_id,
                    "workflow_id": workflow_id,
                    "created_at": now,
                    "total": len(items),
                    "created": created,
                    "open": created,
                    "items": entries,
                    "callback_url": callback_url,
                    "callback_private": callback_private,
                },
            )
            if created == 0:
                _end(conn, batch_id, now)
        return entries

    def batch(self, batch_id: str) -> StoredBatch | None:
        """The batch, each job-bearing item with its job's current ``status`` (None once
        retention purged the job)."""
        with self._read() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
            if row is None:
                return None
            ids = [item["job_id"] for item in row.items if "job_id" in item]
            statuses: dict[str, str] = {}
            sent = conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.status,
                    deliveries.c.attempts,
                    deliveries.c.last_status_code,
                    deliveries.c.delivered_at,
                ).where(deliveries.c.id == callback_id(batch_id))
            ).first()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                statuses.update(
                    (str(i), str(s))
                    for i, s in conn.execute(
                        sa.select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(chunk))
                    )
                )
        items = [
            {**item, "status": statuses.get(item["job_id"])} if "job_id" in item else dict(item)
            for item in row.items
        ]
        return StoredBatch(
            id=row.id,
            service_id=row.service_id,
            workflow_id=row.workflow_id,
            created_at=float(row.created_at),
            total=int(row.total),
            created=int(row.created),
            open=int(row.open),
            items=items,
            callback_url=row.callback_url,
            ended_at=None if row.ended_at is None else float(row.ended_at),
            callback=None
            if sent is None
            else {
                "delivery_id": sent.id,
                "status": str(sent.status),
                "attempts": int(sent.attempts),
                "last_status_code": sent.last_status_code,
                "delivered_at": sent.delivered_at,
            },
        )

    def batch_jobs(self, batch_id: str) -> list[StoredJob]:
        """The jobs batch ``batch_id`` created (tests, tools)."""
        with self._read() as conn:
            rows = conn.execute(sa.select(jobs).where(jobs.c.batch_id == batch_id)).mappings()
            return [StoredJob.from_row(dict(r)) for r in rows]
