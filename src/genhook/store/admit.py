"""Admission of accepted triggers, a group commit's batch at a time.

Every trigger of a batch goes through the same steps as one alone, in arrival order: its
idempotency key (the job first made for it, or ``idempotency_conflict``), its dedup key (the
service's earlier job within the window), the service's queue limit (``queue_full``), the
storm breaker (:class:`genhook.flow.Storm`), the rate window's start slot
(:meth:`genhook.flow.RateLimit.slot`), a paused service and an open backend breaker. What the
steps read is read once per batch where it can be: each service's row once, before its keys
(locked on PostgreSQL, so processes on other machines wait for this batch's counts, keys and
dedup matches), each backend's
breaker once, the rate slots of the jobs N places back in one range read. Keys and slots of
the batch's own earlier items are known in memory, so two triggers of one batch behave as two
batches would. What the batch writes is a few statements for the whole batch: one
``executemany`` for the jobs and one for their ``queued`` events, one update per service, one
roll-up upsert per service, workflow and hour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from genhook.errors import ErrorCode, GenhookError
from genhook.flow import Breaker, BreakerState, HoldReason, RateLimit, Storm
from genhook.status import JobStatus
from genhook.store.accounting import breaker, bump_rollup, hour_of
from genhook.store.base import Row
from genhook.store.ops_events import OperatorEvent, record_event
from genhook.store.records import StoredJob
from genhook.store.schema import events, jobs, services

IDEMPOTENCY_WINDOW = 24 * 3600.0
FRESH: dict[str, Any] = {
    "first_claimed_at": None,
    "finished_at": None,
    "error_code": None,
    "result": None,
    "hold_reason": None,
    "priority": 1,
    "backend": None,
}
"""The columns a job just inserted has not set (their defaults), for its record."""


@dataclass(frozen=True)
class Admission:
    """What flow control needs to know of an accepted trigger, decided at the edge."""

    priority: int = 1  # genhook.store.jobs.PRIORITIES
    dedup_key: str | None = None
    dedup_window: float = 0.0
    backend: str | None = None
    estimate: float = 0.0
    sandbox: bool = False  # a --test service's trigger


@dataclass(frozen=True)
class Submission:
    """One accepted trigger as the store receives it: the job's row as it will be inserted
    (``created_at`` is its arrival) and how long its dedup key holds."""

    row: Row
    dedup_window: float = 0.0

    @property
    def now(self) -> float:
        return float(self.row["created_at"])


# built once: every batch runs these
_SERVICE = (
    sa.select(
        services.c.name,
        services.c.rate_limit,
        services.c.queue_limit,
        services.c.paused_at,
        services.c.storm_bucket,
        services.c.storm_count,
        services.c.storm_previous,
        services.c.waiting,
        services.c.rate_seq,
    )
    .where(services.c.id == sa.bindparam("service_id"))
    .with_for_update(key_share=True)  # NO KEY UPDATE: inserts whose foreign key names the
    # service (jobs, deliveries) take KEY SHARE and need not wait for an admission
)
_COUNT_IN = (
    services.update()
    .where(services.c.id == sa.bindparam("service_id"))
    .values(
        waiting=services.c.waiting + sa.bindparam("n_waiting"),
        rate_seq=services.c.rate_seq + sa.bindparam("n_sequenced"),
        storm_bucket=sa.bindparam("s_bucket"),
        storm_count=sa.bindparam("s_count"),
        storm_previous=sa.bindparam("s_previous"),
    )
)
_SLOTS = sa.select(jobs.c.rate_seq, jobs.c.rate_slot).where(
    jobs.c.service_id == sa.bindparam("service_id"),
    jobs.c.rate_seq >= sa.bindparam("low"),
    jobs.c.rate_seq <= sa.bindparam("high"),
)
_DUPLICATE = (
    sa.select(jobs)
    .where(
        jobs.c.service_id == sa.bindparam("service_id"),
        jobs.c.dedup_key == sa.bindparam("dedup_key"),
        jobs.c.created_at >= sa.bindparam("since"),
    )
    .order_by(jobs.c.created_at)
    .limit(1)
)
_BY_KEY = sa.select(jobs).where(
    jobs.c.service_id == sa.bindparam("service_id"),
    jobs.c.idempotency_key == sa.bindparam("key"),
)
_FREE_KEY = jobs.update().where(jobs.c.id == sa.bindparam("job_id")).values(idempotency_key=None)
_INSERT_JOB = jobs.insert()
_INSERT_EVENT = events.insert()


def replayed(
    conn: sa.Connection, service_id: str, key: str | None, request_hash: str | None, now: float
) -> Row | None:
    """The job first made for ``key`` within 24 h (same hash), None if the key is new (an
    expired key is freed for the new job, the old job kept); 409 with another hash."""
    if key is None:
        return None
    found = conn.execute(_BY_KEY, {"service_id": service_id, "key": key}).mappings().first()
    if found is None:
        return None
    if found["created_at"] < now - IDEMPOTENCY_WINDOW:
        conn.execute(_FREE_KEY, {"job_id": found["id"]})
        return None
    if found["request_hash"] != request_hash:
        raise _conflict()
    return dict(found)


def _conflict() -> GenhookError:
    return GenhookError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "this Idempotency-Key was used within 24 h with another body",
    )


@dataclass
class _ServiceTurn:
    """One service's share of a batch: its row as read, and what the batch did to it."""

    state: Any
    limit: RateLimit | None
    storm: Storm
    paused: bool
    admitted: int = 0
    arriving: int = 1  # the batch's items for this service (at most this many get a slot)
    slots: dict[int, float] = field(default_factory=dict)  # rate_seq -> rate_slot
    slots_read: bool = False


@dataclass
class _Batch:
    """What the batch's earlier items decided, for the later ones."""

    keys: dict[tuple[str, str], tuple[StoredJob, str | None]] = field(default_factory=dict)
    dedups: dict[tuple[str, str], StoredJob] = field(default_factory=dict)
    turns: dict[str, _ServiceTurn] = field(default_factory=dict)
    breakers: dict[str, Breaker] = field(default_factory=dict)
    rollups: dict[tuple[str, str, float], int] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    arriving: dict[str, int] = field(default_factory=dict)


class Admitter:
    """Writes batches of submissions (the group committer's ``run_batch``)."""

    def __init__(self, default_queue_limit: int, alert_url: str | None) -> None:
        self.default_queue_limit = default_queue_limit
        self.alert_url = alert_url

    def __call__(self, conn: sa.Connection, items: Sequence[Submission]) -> list[Any]:
        batch = _Batch()
        for item in items:
            batch.arriving[item.row["service_id"]] = (
                batch.arriving.get(item.row["service_id"], 0) + 1
            )
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.append(self._one(conn, batch, item))
            except GenhookError as exc:
                outcomes.append(exc)
        self._write(conn, batch, items)
        return outcomes

    def _one(self, conn: sa.Connection, batch: _Batch, item: Submission) -> tuple[StoredJob, bool]:
        row, now = item.row, item.now
        service_id = str(row["service_id"])
        # the service's row first (locked on PostgreSQL): a batch of another process that is
        # admitting the same key commits before this one reads it, so both find the one job
        turn = self._turn(conn, batch, service_id)
        first = self._replayed(conn, batch, item)
        if first is not None:
            return first, False
        dedup_key = row["dedup_key"]
        if dedup_key is not None:
            duplicate = batch.dedups.get((service_id, dedup_key))
            if duplicate is None:
                found = (
                    conn.execute(
                        _DUPLICATE,
                        {
                            "service_id": service_id,
                            "dedup_key": dedup_key,
                            "since": now - item.dedup_window,
                        },
                    )
                    .mappings()
                    .first()
                )
                duplicate = None if found is None else StoredJob.from_row(dict(found))
            if duplicate is not None:
                return dataclasses.replace(duplicate, deduplicated=True), False
        self._admit(conn, batch, turn, service_id, row, now)
        backend = row["backend"]
        if backend is not None:
            state = batch.breakers.get(backend)
            if state is None:
                state = batch.breakers[backend] = breaker(conn, backend, lock=False)
            if state.state is BreakerState.OPEN and row["hold_reason"] is None:
                row["hold_reason"] = HoldReason.BACKEND_UNAVAILABLE
                row["run_after"] = max(float(row["run_after"]), state.probe_at or now)
        batch.rows.append(row)
        job = StoredJob.from_row({**FRESH, **row})
        key = row["idempotency_key"]
        if key is not None:
            batch.keys[(service_id, key)] = (job, row["request_hash"])
        if dedup_key is not None:
            batch.dedups[(service_id, dedup_key)] = job
        return job, True

    def _replayed(self, conn: sa.Connection, batch: _Batch, item: Submission) -> StoredJob | None:
        row = item.row
        key = row["idempotency_key"]
        if key is None:
            return None
        earlier = batch.keys.get((row["service_id"], key))
        if earlier is not None:
            if earlier[1] != row["request_hash"]:
                raise _conflict()
            return earlier[0]
        found = replayed(conn, row["service_id"], key, row["request_hash"], item.now)
        return None if found is None else StoredJob.from_row(found)

    @staticmethod
    def _turn(conn: sa.Connection, batch: _Batch, service_id: str) -> _ServiceTurn:
        turn = batch.turns.get(service_id)
        if turn is None:
            state = conn.execute(_SERVICE, {"service_id": service_id}).one()
            turn = batch.turns[service_id] = _ServiceTurn(
                state=state,
                limit=RateLimit.parse(state.rate_limit),
                storm=Storm(state.storm_bucket, state.storm_count, state.storm_previous),
                paused=state.paused_at is not None,
                arriving=batch.arriving.get(service_id, 1),
            )
        return turn

    def _admit(
        self,
        conn: sa.Connection,
        batch: _Batch,
        turn: _ServiceTurn,
        service_id: str,
        row: Row,
        now: float,
    ) -> None:
        """The queue limit, the storm breaker and the rate window for one trigger: raises
        ``queue_full`` (the trigger still counts towards a storm), else sets the columns that
        hold the job."""
        state, limit = turn.state, turn.limit
        turn.storm = turn.storm.add(now)
        queue_limit = state.queue_limit or self.default_queue_limit
        if state.waiting + turn.admitted + 1 > queue_limit:
            raise GenhookError(
                ErrorCode.QUEUE_FULL,
                f"the service has {queue_limit} jobs waiting, its queue limit",
                retry_after=max(1.0, limit.period / limit.count) if limit else 5.0,
            )
        turn.admitted += 1
        rollup = (service_id, str(row["workflow_id"]), hour_of(now))
        batch.rollups[rollup] = batch.rollups.get(rollup, 0) + 1
        if limit is not None:
            if not turn.paused and turn.storm.tripped(now, limit):
                turn.paused = True
                self._pause_for_storm(conn, service_id, state, turn.storm, limit, now)
            seq = int(state.rate_seq) + turn.admitted
            slot = limit.slot(now, self._slot_of(conn, turn, service_id, seq - limit.count))
            turn.slots[seq] = slot
            row["rate_slot"] = slot
            row["rate_seq"] = seq
            row["run_after"] = slot
            if slot > now:
                row["hold_reason"] = HoldReason.RATE_LIMIT
        if turn.paused:
            row["hold_reason"] = HoldReason.PAUSED

    @staticmethod
    def _slot_of(
        conn: sa.Connection, turn: _ServiceTurn, service_id: str, seq: int
    ) -> float | None:
        """The start slot of the service's job of rate sequence ``seq`` (None if none): the
        batch's own, or one range read of the jobs that the batch's items come N after."""
        if seq in turn.slots:
            return turn.slots[seq]
        if seq > int(turn.state.rate_seq) or turn.slots_read:
            return None
        assert turn.limit is not None
        first = int(turn.state.rate_seq) + 1
        result = conn.execute(
            _SLOTS,
            {
                "service_id": service_id,
                "low": first - turn.limit.count,
                "high": min(first - 1, first + turn.arriving - 1 - turn.limit.count),
            },
        )
        turn.slots.update({int(s): float(t) for s, t in result if t is not None})
        turn.slots_read = True
        return turn.slots.get(seq)

    def _pause_for_storm(
        self,
        conn: sa.Connection,
        service_id: str,
        state: Any,
        storm: Storm,
        limit: RateLimit,
        now: float,
    ) -> None:
        """Pause the service for a trigger storm and tell the operator (same transaction)."""
        reason = (
            f"trigger storm: {storm.last_hour(now):.0f} triggers in the last hour, "
            f"more than {limit.storm_threshold:g} in an hour (the limit is {state.rate_limit})"
        )
        conn.execute(
            services.update()
            .where(services.c.id == service_id)
            .values(paused_at=now, paused_reason=reason)
        )
        record_event(
            conn,
            event=OperatorEvent.SERVICE_PAUSED,
            service=state.name,
            details={"reason": reason, "rate_limit": state.rate_limit},
            now=now,
            alert_url=self.alert_url,
        )

    @staticmethod
    def _write(conn: sa.Connection, batch: _Batch, items: Sequence[Submission]) -> None:
        """The batch's writes: the services' counts, the jobs, their events, the roll-ups."""
        for service_id, turn in batch.turns.items():
            conn.execute(
                _COUNT_IN,
                {
                    "service_id": service_id,
                    "n_waiting": turn.admitted,
                    "n_sequenced": turn.admitted,
                    "s_bucket": turn.storm.bucket,
                    "s_count": turn.storm.count,
                    "s_previous": turn.storm.previous,
                },
            )
        if batch.rows:
            conn.execute(_INSERT_JOB, batch.rows)
            conn.execute(
                _INSERT_EVENT,
                [
                    {"job_id": r["id"], "at": r["created_at"], "status": JobStatus.QUEUED}
                    for r in batch.rows
                ],
            )
        for (service_id, workflow_id, hour), count in batch.rollups.items():
            bump_rollup(conn, service_id, workflow_id, hour, triggers=count)
