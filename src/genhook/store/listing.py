"""A service's jobs a page at a time (``GET /v1/jobs``), and retries of ended jobs.

The listing is newest first, ordered by ``(created_at, id)`` descending: ``id`` (a ULID) breaks
ties between jobs accepted in the same instant, so the order is total. A page is read from a
keyset cursor, the ``(created_at, id)`` of the last job of the page before: the next page is
the jobs strictly after it in that order, whatever was inserted meanwhile (a new job is newer
than every cursor, so it never shifts a page; there is no offset to drift). Each way of
filtering has its index ending in ``(created_at DESC, id DESC)`` (migration 0008): a page at
any depth is one range read of ``limit + 1`` index entries, never a sort or a count.

The cursor is opaque to callers: ``c1.`` + base64url of a small JSON array (position and a
digest of the filters it was made for). A cursor that does not decode, or that was made for
other filters, is refused with ``invalid_cursor`` (422, field ``cursor``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from genhook.errors import ErrorCode, GenhookError
from genhook.status import JobStatus
from genhook.store.admit import Submission
from genhook.store.base import StoreBase
from genhook.store.records import Attempt, StoredJob
from genhook.store.schema import attempts, jobs

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
CURSOR_PREFIX = "c1."
_MAX_CURSOR = 300  # characters: a real one is about 90
_MAX_ID = 40  # jobs.id's length


@dataclass(frozen=True)
class JobFilter:
    """Which of a service's jobs a listing shows. Times are epoch seconds:
    ``created_after <= created_at < created_before`` (half-open, so ranges tile)."""

    statuses: tuple[JobStatus, ...] = ()
    workflow_id: str | None = None
    external_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None

    def digest(self) -> str:
        """A short digest of the filters: a cursor carries it, so that it is refused when
        used with other filters (its position would mean another list)."""
        text = json.dumps(
            [
                sorted(str(s) for s in self.statuses),
                self.workflow_id,
                self.external_id,
                self.created_after,
                self.created_before,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Cursor:
    """The position after which the next page starts: the last listed job's
    ``(created_at, id)``, and the digest of the filters it belongs to."""

    created_at: float
    job_id: str
    filters: str = ""

    def encode(self) -> str:
        """The opaque text form (``c1.`` + base64url of a JSON array, unpadded)."""
        raw = json.dumps([self.created_at, self.job_id, self.filters], separators=(",", ":"))
        return CURSOR_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, filters: JobFilter) -> Cursor:
        """The cursor of ``text`` for a listing with ``filters``; ``invalid_cursor`` when it
        is not one genhook made, or was made for other filters."""
        if len(text) > _MAX_CURSOR or not text.startswith(CURSOR_PREFIX):
            raise _bad_cursor("it is not a cursor from a listing's next_cursor")
        body = text.removeprefix(CURSOR_PREFIX)
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            value = json.loads(raw)
        except (binascii.Error, ValueError):
            raise _bad_cursor("it does not decode") from None
        if (
            not isinstance(value, list)
            or len(value) != 3
            or isinstance(value[0], bool)
            or not isinstance(value[0], int | float)
            or not math.isfinite(value[0])
            or not isinstance(value[1], str)
            or not 0 < len(value[1]) <= _MAX_ID
            or not isinstance(value[2], str)
        ):
            raise _bad_cursor("it does not decode")
        if value[2] != filters.digest():
            raise _bad_cursor(
                "it was made for other filters: keep the filters of the first page, or start "
                "again without a cursor"
            )
        return cls(float(value[0]), value[1], value[2])


def _bad_cursor(why: str) -> GenhookError:
    return GenhookError(ErrorCode.INVALID_CURSOR, f"cursor: {why}", field="cursor")


@dataclass(frozen=True)
class Page:
    """One page of a listing, and the cursor of the next (None on the last page)."""

    jobs: list[StoredJob]
    next_cursor: Cursor | None
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    retried_by: dict[str, list[str]] = field(default_factory=dict)


def listing_query(
    service_id: str, filters: JobFilter, limit: int, after: Cursor | None = None
) -> sa.Select[Any]:
    """The page's statement: ``limit`` rows (the caller asks one more to know whether a next
    page exists), newest first, from after ``after``. The keyset condition is written as
    ``created_at <= t AND (created_at < t OR id < i)``: its first term is a plain range bound
    that SQLite's and PostgreSQL's planners both take into the index."""
    query = sa.select(jobs).where(jobs.c.service_id == service_id)
    if len(filters.statuses) == 1:
        query = query.where(jobs.c.status == str(filters.statuses[0]))
    elif filters.statuses:
        query = query.where(jobs.c.status.in_([str(s) for s in filters.statuses]))
    if filters.workflow_id is not None:
        query = query.where(jobs.c.workflow_id == filters.workflow_id)
    if filters.external_id is not None:
        query = query.where(jobs.c.external_id == filters.external_id)
    if filters.created_after is not None:
        query = query.where(jobs.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(jobs.c.created_at < filters.created_before)
    if after is not None:
        query = query.where(
            jobs.c.created_at <= after.created_at,
            sa.or_(jobs.c.created_at < after.created_at, jobs.c.id < after.job_id),
        )
    return query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)


class ListingStore(StoreBase):
    """The listing's reads, and the retry's submission."""

    def list_jobs(
        self,
        service_id: str,
        filters: JobFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        after: Cursor | None = None,
    ) -> Page:
        """One page of the service's jobs, newest first, with their attempts and retries
        (three statements in one read transaction, whatever the page's size)."""
        filters = filters or JobFilter()
        limit = max(1, min(MAX_LIMIT, limit))
        with self._read() as conn:
            rows = list(
                conn.execute(listing_query(service_id, filters, limit + 1, after)).mappings()
            )
            found = [StoredJob.from_row(r) for r in rows[:limit]]
            ids = [job.id for job in found]
            tried = _attempts_of(conn, ids)
            retried = _retried_by(conn, ids)
        last = found[-1] if len(rows) > limit else None
        cursor = None if last is None else Cursor(last.created_at, last.id, filters.digest())
        return Page(found, cursor, tried, retried)

    def retried_by(self, job_id: str) -> list[str]:
        """The jobs made by retrying ``job_id``, oldest first."""
        with self._read() as conn:
            return _retried_by(conn, [job_id]).get(job_id, [])


def as_retry(item: Submission, retry_of: str) -> Submission:
    """``item`` (a :meth:`~genhook.store.jobs.JobStore.submission` of an ended job's input,
    workflow, version and callback) as the retry of the job ``retry_of``. It then goes through
    ``submit_async`` like a trigger, so the idempotency key, queue limit, storm breaker and
    rate window apply to it, and the budget and the backends' breakers when it starts."""
    return Submission({**item.row, "retry_of": retry_of}, item.dedup_window)


# built once (building a statement per page cost more than running it)
_ATTEMPTS = (
    sa.select(attempts)
    .where(attempts.c.job_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(attempts.c.job_id, attempts.c.number)
)
_RETRIED_BY = (
    sa.select(jobs.c.retry_of, jobs.c.id)
    .where(jobs.c.retry_of.in_(sa.bindparam("ids", expanding=True)))
    .order_by(jobs.c.created_at, jobs.c.id)
)


def _attempts_of(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, list[Attempt]]:
    """Each job's attempts, first first, in one statement."""
    found: dict[str, list[Attempt]] = defaultdict(list)
    if job_ids:
        rows = conn.execute(_ATTEMPTS, {"ids": list(job_ids)}).mappings()
        for row in rows:
            found[row["job_id"]].append(Attempt.from_row(row))
    return dict(found)


def _retried_by(conn: sa.Connection, job_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each job's retries (job ids, oldest first), in one statement on ``ix_jobs_retry_of``."""
    found: dict[str, list[str]] = defaultdict(list)
    if job_ids:
        rows = conn.execute(_RETRIED_BY, {"ids": list(job_ids)})
        for retry_of, job_id in rows:
            found[retry_of].append(job_id)
    return dict(found)
