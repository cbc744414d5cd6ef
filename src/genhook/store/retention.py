"""Retention's part of the store: which ended jobs are past their service's retention, removing
them with everything that belongs to them in bounded transactions, and the tombstones that
remember them.

One purge batch is one write transaction of at most ``limit`` jobs: the jobs are chosen oldest
first on ``ix_jobs_service_finished`` and locked ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so
that purgers in many processes at once take disjoint batches and none waits for another (nor
for a worker, the outbox or the API holding one of those rows: that job waits for the next
pass). The deliveries of the chosen jobs are locked the same way and read again under their
locks, so a replay that made one pending meanwhile keeps its job. SQLite has one writer at a
time (``BEGIN IMMEDIATE``), so there the batch is simply the transaction.

In that transaction go the job's attempts, its events, its deliveries and their attempt log,
and the job row itself (its input, its completion payload, its idempotency key and dedup key,
which are columns of the row); a ``purged_jobs`` row takes its place. Its asset files are
deleted after the commit (see :mod:`genhook.retention`); ``assets_deleted_at`` records that,
so a process that died in between leaves a to-do, not an orphan. The hourly roll-ups, the
credit ledger and the operator event log hold no job's data and stay.

A batch (``batches``) goes in a purge transaction of its own once it ended longer ago than its
service's retention and none of its jobs is left (they went first, in the same pass) and its
batch callback is not owed: with it go its callback's delivery and attempt log, and a
``purged_batches`` row takes its place (``GET /v1/batches/{id}`` then answers 410).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from genhook.flow import RateLimit
from genhook.status import TERMINAL, DeliveryStatus
from genhook.store.base import StoreBase
from genhook.store.schema import (
    attempts,
    batches,
    deliveries,
    delivery_attempts,
    events,
    job_reviews,
    jobs,
    purged_batches,
    purged_jobs,
    services,
)

UNSENT = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
"""A job with a delivery in one of these is kept, whatever its age: its callback is still due."""
PURGED_TABLES = ("jobs", "job_attempts", "job_events", "deliveries", "delivery_attempts")
"""What a purge counts, per table."""


@dataclass(frozen=True, slots=True)
class PurgedJob:
    """The tombstone of a job that retention removed."""

    job_id: str
    service_id: str
    finished_at: float | None
    purged_at: float

    @classmethod
    def from_row(cls, row: Any) -> PurgedJob:
        return cls(row.job_id, row.service_id, row.finished_at, row.purged_at)


@dataclass(frozen=True, slots=True)
class PurgedBatch:
    """The tombstone of a batch that retention removed."""

    batch_id: str
    service_id: str
    ended_at: float | None
    purged_at: float


@dataclass(frozen=True, slots=True)
class Policy:
    """One service's retention: its ended jobs older than ``seconds`` go."""

    service_id: str
    service: str
    seconds: float
    own: bool  # the service's own setting (False: the default)


def _ended_before(
    service_id: str, cutoff: float, window_since: float | None = None
) -> sa.ColumnElement[bool]:
    """The service's ended jobs that finished before ``cutoff`` and owe no callback, and (with
    ``window_since``) whose rate slot and first start are both before it: the rate window reads
    the slots and starts of its last period (:func:`rate_window_since`), so a job in it stays
    until it has left, whatever the retention."""
    unsent = (
        sa.select(deliveries.c.id)
        .where(deliveries.c.job_id == jobs.c.id, deliveries.c.status.in_(list(UNSENT)))
        .exists()
    )
    outside = (
        sa.true()
        if window_since is None
        else sa.and_(
            sa.or_(jobs.c.rate_slot.is_(None), jobs.c.rate_slot <= window_since),
            sa.or_(jobs.c.first_claimed_at.is_(None), jobs.c.first_claimed_at <= window_since),
        )
    )
    return sa.and_(
        jobs.c.service_id == service_id,
        jobs.c.finished_at.is_not(None),
        jobs.c.finished_at < cutoff,
        jobs.c.status.in_(sorted(str(s) for s in TERMINAL)),
        ~unsent,
        outside,
    )


def rate_window_since(conn: sa.Connection, service_id: str, now: float) -> float | None:
    """Where the service's rate window begins now (None: it has no rate limit)."""
    limit = RateLimit.parse(
        conn.execute(sa.select(services.c.rate_limit).where(services.c.id == service_id)).scalar()
    )
    return None if limit is None else now - limit.period


def _batch_callback() -> sa.ColumnElement[bool]:
    """The delivery of the batch's callback (its id is ``msg_<batch_id>``: found by key)."""
    return deliveries.c.id == sa.literal("msg_", sa.String) + batches.c.id


def _batch_ended_before(
    service_id: str, cutoff: float, kept_job: sa.ColumnElement[bool] | None = None
) -> sa.ColumnElement[bool]:
    """The service's batches that ended before ``cutoff``, whose callback is not owed, and of
    which no job is left (``kept_job``: none is left that is not, itself, to be purged)."""
    its_jobs = sa.select(jobs.c.id).where(jobs.c.batch_id == batches.c.id)
    if kept_job is not None:
        its_jobs = its_jobs.where(kept_job)
    owed = (
        sa.select(deliveries.c.id)
        .where(_batch_callback(), deliveries.c.status.in_(list(UNSENT)))
        .exists()
    )
    return sa.and_(
        batches.c.service_id == service_id,
        batches.c.ended_at.is_not(None),
        batches.c.ended_at < cutoff,
        ~its_jobs.exists(),
        ~owed,
    )


class RetentionStore(StoreBase):
    """Purging ended jobs past their retention, and the tombstones of purged jobs."""

    def retention_policies(self, default_seconds: float) -> list[Policy]:
        """Every service's retention, by name (its own ``retention``, else ``default_seconds``);
        a stored value that no longer parses counts as the default."""
        from genhook.config_values import parse_duration

        with self._read() as conn:
            rows = conn.execute(
                sa.select(services.c.id, services.c.name, services.c.retention).order_by(
                    services.c.name
                )
            ).all()
        policies = []
        for row in rows:
            seconds, own = default_seconds, False
            if row.retention:
                with contextlib.suppress(ValueError):
                    seconds, own = parse_duration(row.retention), True
            policies.append(Policy(row.id, row.name, seconds, own))
        return policies

    def purge_batch(self, service_id: str, cutoff: float, limit: int) -> dict[str, Any]:
        """Purge at most ``limit`` of the service's ended jobs that finished before ``cutoff``
        and owe no callback, oldest first, in one transaction; a tombstone for each. Returns
        the purged ids (``job_ids``) and the rows removed per table (``PURGED_TABLES``)."""
        now = self.clock.now()
        with self._write() as conn:
            since = rate_window_since(conn, service_id, now)
            chosen = list(
                conn.execute(
                    sa.select(jobs.c.id, jobs.c.finished_at)
                    .where(_ended_before(service_id, cutoff, since))
                    .order_by(jobs.c.finished_at, jobs.c.id)
                    .limit(limit)
                    .with_for_update(of=jobs, skip_locked=True)
                ).all()
            )
            if not chosen:
                return {"job_ids": [], **dict.fromkeys(PURGED_TABLES, 0)}
            ids = [r.id for r in chosen]
            # their deliveries, each read again under its lock: one that a replay made pending
            # (or that another transaction holds now) keeps its job for the next pass
            all_deliveries = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.job_id).where(deliveries.c.job_id.in_(ids))
            ).all()
            locked = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.job_id, deliveries.c.status)
                .where(deliveries.c.job_id.in_(ids))
                .with_for_update(skip_locked=True)
            ).all()
            seen = {r.id for r in locked}
            keep = {r.job_id for r in all_deliveries if r.id not in seen}
            keep |= {r.job_id for r in locked if r.status in UNSENT}
            gone = [r for r in chosen if r.id not in keep]
            ids = [r.id for r in gone]
            if not ids:
                return {"job_ids": [], **dict.fromkeys(PURGED_TABLES, 0)}
            delivery_ids = [r.id for r in locked if r.job_id not in keep]
            counts = {"delivery_attempts": 0, "deliveries": 0}
            if delivery_ids:
                counts["delivery_attempts"] = conn.execute(
                    delivery_attempts.delete().where(
                        delivery_attempts.c.delivery_id.in_(delivery_ids)
                    )
                ).rowcount
                counts["deliveries"] = conn.execute(
                    deliveries.delete().where(deliveries.c.id.in_(delivery_ids))
                ).rowcount
            counts["job_attempts"] = conn.execute(
                attempts.delete().where(attempts.c.job_id.in_(ids))
            ).rowcount
            counts["job_events"] = conn.execute(
                events.delete().where(events.c.job_id.in_(ids))
            ).rowcount
            # their review rounds (the review queue's, 0010): a held job is never purged (it has
            # not ended), an ended one's reviews go with it
            conn.execute(job_reviews.delete().where(job_reviews.c.job_id.in_(ids)))
            counts["jobs"] = conn.execute(jobs.delete().where(jobs.c.id.in_(ids))).rowcount
            conn.execute(
                purged_jobs.insert(),
                [
                    {
                        "job_id": r.id,
                        "service_id": service_id,
                        "finished_at": r.finished_at,
                        "purged_at": now,
                        "assets_deleted_at": None,
                    }
                    for r in gone
                ],
            )
        return {"job_ids": ids, **counts}

    def purge_batches(self, service_id: str, cutoff: float, limit: int) -> dict[str, Any]:
        """Purge at most ``limit`` of the service's batches that ended before ``cutoff``, have
        no job left and owe no batch callback, oldest first, in one transaction: each with its
        callback's delivery and attempt log, a tombstone in its place. Returns the purged ids
        (``batch_ids``) and the rows removed (``batches``, ``deliveries``,
        ``delivery_attempts``)."""
        now = self.clock.now()
        nothing: dict[str, Any] = {
            "batch_ids": [],
            "batches": 0,
            "deliveries": 0,
            "delivery_attempts": 0,
        }
        with self._write() as conn:
            chosen = conn.execute(
                sa.select(batches.c.id, batches.c.ended_at)
                .where(_batch_ended_before(service_id, cutoff))
                .order_by(batches.c.ended_at, batches.c.id)
                .limit(limit)
                .with_for_update(of=batches, skip_locked=True)
            ).all()
            if not chosen:
                return nothing
            callbacks = {f"msg_{r.id}": r.id for r in chosen}
            # their callbacks, read again under their locks: one a replay made pending (or
            # that another transaction holds now) keeps its batch for the next pass
            locked = conn.execute(
                sa.select(deliveries.c.id, deliveries.c.status)
                .where(deliveries.c.id.in_(list(callbacks)))
                .with_for_update(skip_locked=True)
            ).all()
            present = conn.execute(
                sa.select(deliveries.c.id).where(deliveries.c.id.in_(list(callbacks)))
            ).scalars()
            seen = {r.id for r in locked}
            keep = {callbacks[i] for i in present if i not in seen}
            keep |= {callbacks[r.id] for r in locked if r.status in UNSENT}
            gone = [r for r in chosen if r.id not in keep]
            if not gone:
                return nothing
            ids = [r.id for r in gone]
            sent = [f"msg_{i}" for i in ids]
            counts = dict(nothing, batch_ids=ids)
            counts["delivery_attempts"] = conn.execute(
                delivery_attempts.delete().where(delivery_attempts.c.delivery_id.in_(sent))
            ).rowcount
            counts["deliveries"] = conn.execute(
                deliveries.delete().where(deliveries.c.id.in_(sent))
            ).rowcount
            counts["batches"] = conn.execute(batches.delete().where(batches.c.id.in_(ids))).rowcount
            conn.execute(
                purged_batches.insert(),
                [
                    {
                        "batch_id": r.id,
                        "service_id": service_id,
                        "ended_at": r.ended_at,
                        "purged_at": now,
                    }
                    for r in gone
                ],
            )
        return counts

    def count_expired_batches(self, service_id: str, cutoff: float) -> dict[str, int]:
        """What a pass would remove of the service's batches now (``batches``, their callbacks'
        ``deliveries`` and ``delivery_attempts``), counting the jobs the same pass would purge
        first as gone (``genhook purge --dry-run``): a job the rate window keeps keeps its
        batch; nothing is changed."""
        with self._read() as conn:
            since = rate_window_since(conn, service_id, self.clock.now())
            kept = ~_ended_before(service_id, cutoff, since)
            chosen = (
                sa.select(batches.c.id)
                .where(_batch_ended_before(service_id, cutoff, kept_job=kept))
                .subquery()
            )
            sent = sa.select(sa.literal("msg_", sa.String) + chosen.c.id)
            return {
                "batches": conn.execute(
                    sa.select(sa.func.count()).select_from(chosen)
                ).scalar_one(),
                "deliveries": _count(conn, deliveries, deliveries.c.id.in_(sent)),
                "delivery_attempts": _count(
                    conn, delivery_attempts, delivery_attempts.c.delivery_id.in_(sent)
                ),
            }

    def count_expired(self, service_id: str, cutoff: float) -> dict[str, int]:
        """What :meth:`purge_batch` would remove of the service now, over every batch, per
        table (``genhook purge --dry-run``); nothing is changed."""
        with self._read() as conn:
            since = rate_window_since(conn, service_id, self.clock.now())
            chosen = sa.select(jobs.c.id).where(_ended_before(service_id, cutoff, since)).subquery()
            their_deliveries = sa.select(deliveries.c.id).where(
                deliveries.c.job_id.in_(sa.select(chosen.c.id))
            )
            return {
                "jobs": conn.execute(sa.select(sa.func.count()).select_from(chosen)).scalar_one(),
                "job_attempts": _count(
                    conn, attempts, attempts.c.job_id.in_(sa.select(chosen.c.id))
                ),
                "job_events": _count(conn, events, events.c.job_id.in_(sa.select(chosen.c.id))),
                "deliveries": _count(
                    conn, deliveries, deliveries.c.job_id.in_(sa.select(chosen.c.id))
                ),
                "delivery_attempts": _count(
                    conn, delivery_attempts, delivery_attempts.c.delivery_id.in_(their_deliveries)
                ),
            }

    def assets_to_delete(self, limit: int) -> list[str]:
        """Purged jobs whose asset files are not known to be deleted yet, oldest first."""
        with self._read() as conn:
            return list(
                conn.execute(
                    sa.select(purged_jobs.c.job_id)
                    .where(purged_jobs.c.assets_deleted_at.is_(None))
                    .order_by(purged_jobs.c.purged_at, purged_jobs.c.job_id)
                    .limit(limit)
                ).scalars()
            )

    def assets_deleted(self, job_ids: Sequence[str]) -> int:
        """Record that the purged jobs' asset files are gone."""
        if not job_ids:
            return 0
        with self._write() as conn:
            return int(
                conn.execute(
                    purged_jobs.update()
                    .where(
                        purged_jobs.c.job_id.in_(list(job_ids)),
                        purged_jobs.c.assets_deleted_at.is_(None),
                    )
                    .values(assets_deleted_at=self.clock.now())
                ).rowcount
            )

    def forget_purged(self, before: float, limit: int) -> int:
        """Remove up to ``limit`` tombstones of jobs purged before ``before`` whose assets are
        gone (their URLs then answer 404 instead of 410); how many."""
        return self._forget(
            purged_jobs.c.job_id,
            [purged_jobs.c.purged_at < before, purged_jobs.c.assets_deleted_at.is_not(None)],
            limit,
        )

    def forget_purged_batches(self, before: float, limit: int) -> int:
        """Remove up to ``limit`` tombstones of batches purged before ``before`` (their URL
        then answers 404 instead of 410); how many."""
        return self._forget(purged_batches.c.batch_id, [purged_batches.c.purged_at < before], limit)

    def _forget(self, key: sa.Column[Any], where: list[Any], limit: int) -> int:
        """Remove up to ``limit`` tombstones (of ``key``'s table) matching ``where``, oldest
        purged first, skipping those another purger holds."""
        table = key.table
        with self._write() as conn:
            old = (
                sa.select(key)
                .where(*where)
                .order_by(table.c.purged_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(conn.execute(old).scalars())
            if not ids:
                return 0
            return int(conn.execute(table.delete().where(key.in_(ids))).rowcount)

    def purged_batch(self, batch_id: str) -> PurgedBatch | None:
        """The tombstone of ``batch_id`` if retention purged it (and it is not forgotten)."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(purged_batches).where(purged_batches.c.batch_id == batch_id)
            ).first()
        if row is None:
            return None
        return PurgedBatch(row.batch_id, row.service_id, row.ended_at, row.purged_at)

    def purged_job(self, job_id: str) -> PurgedJob | None:
        """The tombstone of ``job_id`` if retention purged it (and it is not forgotten yet)."""
        with self._read() as conn:
            row = conn.execute(sa.select(purged_jobs).where(purged_jobs.c.job_id == job_id)).first()
        return None if row is None else PurgedJob.from_row(row)


def _count(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
    )
