"""Schedules' durable state: when each is due next, paused or not, and each due time's fire.

Exactly once: a due time is fired in one write transaction that (1) reads the schedule's row
(``FOR UPDATE`` on PostgreSQL: a second scheduler racing for the same due time waits here for
the first one's commit), (2) inserts the ``schedule_fires`` row of (schedule, due time) or
nothing if it is there already (``ON CONFLICT DO NOTHING``: the loser of the race stops, having
written nothing), (3) admits the fire's jobs through the same :class:`~genhook.store.admit.
Admitter` that single triggers and batches go through (queue limit, rate window, storm and
backend breakers, dedup and idempotency, per item), and (4) moves the schedule's next due time
on. A crash anywhere before the commit leaves neither the fire row nor a job, so the due time
is fired again by whoever looks next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from genhook.errors import ErrorCode, GenhookError
from genhook.store.admit import Admitter, Submission
from genhook.store.base import StoreBase
from genhook.store.ops_events import OperatorEvent, record_event
from genhook.store.ops_events import iso as _iso
from genhook.store.schema import schedule_fires, schedules

MAX_ERRORS = 100
"""Refused items whose errors a fire row keeps (the count is kept whatever it is)."""


class FireOutcome:
    FIRED = "fired"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ScheduleState:
    """A schedule's row: what the schedulers have made of it so far."""

    key: str
    workflow_id: str
    schedule_id: str
    spec_hash: str
    next_due_at: float | None
    paused_at: float | None
    paused_by: str | None
    last_due_at: float | None
    last_fired_at: float | None
    last_outcome: str | None
    last_error: str | None

    @classmethod
    def of(cls, row: Any) -> ScheduleState:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Fire:
    """One due time dealt with: fired (its jobs), skipped (missed, policy skip) or failed."""

    schedule_key: str
    due_at: float
    fired_at: float
    outcome: str
    service_id: str | None
    created: int
    replayed: int
    refused: int
    missed: int
    job_ids: list[str] | None
    errors: list[dict[str, Any]] | None
    error: str | None

    @classmethod
    def of(cls, row: Any) -> Fire:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _ensure_row(
    conn: sa.Connection,
    key: str,
    workflow_id: str,
    schedule_id: str,
    spec_hash: str,
    next_due_at: float,
    now: float,
) -> None:
    """The schedule's row, inserted with ``next_due_at`` unless it is there already."""
    conn.execute(
        _insert(conn, schedules)
        .values(
            key=key,
            workflow_id=workflow_id,
            schedule_id=schedule_id,
            spec_hash=spec_hash,
            next_due_at=next_due_at,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )


class ScheduleStore(StoreBase):
    """The ``schedules`` and ``schedule_fires`` tables."""

    def schedule_states(self) -> dict[str, ScheduleState]:
        """Every schedule row, by key."""
        with self._read() as conn:
            return {r.key: ScheduleState.of(r) for r in conn.execute(sa.select(schedules))}

    def schedule_state(self, key: str) -> ScheduleState | None:
        with self._read() as conn:
            row = conn.execute(sa.select(schedules).where(schedules.c.key == key)).first()
        return None if row is None else ScheduleState.of(row)

    def track_schedule(
        self, *, key: str, workflow_id: str, schedule_id: str, spec_hash: str, next_due_at: float
    ) -> ScheduleState:
        """The schedule's row, made with ``next_due_at`` if it has none; a row computed from
        another cron or time zone (``spec_hash``) takes ``next_due_at`` and the new hash."""
        now = self.clock.now()
        with self._write() as conn:
            _ensure_row(conn, key, workflow_id, schedule_id, spec_hash, next_due_at, now)
            conn.execute(
                schedules.update()
                .where(schedules.c.key == key, schedules.c.spec_hash != spec_hash)
                .values(spec_hash=spec_hash, next_due_at=next_due_at, updated_at=now)
            )
            row = conn.execute(sa.select(schedules).where(schedules.c.key == key)).one()
        return ScheduleState.of(row)

    def fire_exists(self, key: str, due_at: float) -> bool:
        """Has due time ``due_at`` of ``key`` been dealt with (by any process)?"""
        with self._read() as conn:
            found = conn.execute(
                sa.select(schedule_fires.c.outcome).where(
                    schedule_fires.c.schedule_key == key, schedule_fires.c.due_at == due_at
                )
            ).first()
        return found is not None

    def record_fire(
        self,
        *,
        key: str,
        due_at: float,
        next_due_at: float,
        outcome: str,
        service_id: str | None = None,
        items: Sequence[Submission | GenhookError] = (),
        missed: int = 0,
        error: str | None = None,
        service_name: str | None = None,
    ) -> Fire | None:
        """Deal with due time ``due_at`` of schedule ``key`` once: insert its fire row and
        admit the :class:`Submission` items as jobs, in one transaction; ``None`` when the due
        time was dealt with already (another scheduler won) or the schedule is paused. The
        schedule's next due time moves on to ``next_due_at`` (never back). A ``failed`` fire
        is also the operator event ``schedule.failed`` (``service_name``: the schedule's)."""
        for _ in range(3):
            try:
                return self._record_fire(
                    key,
                    due_at,
                    next_due_at,
                    outcome,
                    service_id,
                    items,
                    missed,
                    error,
                    service_name,
                )
            except IntegrityError:
                continue  # another process won an item's idempotency key: read it again
        raise GenhookError(ErrorCode.INTERNAL_ERROR, "could not record the schedule's fire")

    def _record_fire(
        self,
        key: str,
        due_at: float,
        next_due_at: float,
        outcome: str,
        service_id: str | None,
        items: Sequence[Submission | GenhookError],
        missed: int,
        error: str | None,
        service_name: str | None,
    ) -> Fire | None:
        now = self.clock.now()
        # fresh rows each try: admission sets a row's hold and slot columns
        valid = [
            Submission(dict(i.row), i.dedup_window) for i in items if isinstance(i, Submission)
        ]
        with self._write() as conn:
            state = conn.execute(
                sa.select(schedules.c.paused_at)
                .where(schedules.c.key == key)
                .with_for_update(key_share=True)
            ).first()
            if state is None or state.paused_at is not None:
                return None
            inserted = conn.execute(
                _insert(conn, schedule_fires)
                .values(
                    schedule_key=key,
                    due_at=due_at,
                    fired_at=now,
                    outcome=outcome,
                    service_id=service_id,
                    missed=missed,
                    error=error,
                )
                .on_conflict_do_nothing(index_elements=["schedule_key", "due_at"])
                .returning(schedule_fires.c.schedule_key)
            ).first()
            if inserted is None:
                return None
            if outcome == FireOutcome.FAILED:
                record_event(
                    conn,
                    event=OperatorEvent.SCHEDULE_FAILED,
                    service=service_name,
                    details={"schedule_id": key, "due_at": _iso(due_at), "error": error},
                    now=now,
                    alert_url=self.alert_url,
                )
            created = replayed = refused = 0
            job_ids: list[str] = []
            errors: list[dict[str, Any]] = []
            outcomes = iter(Admitter(self.default_queue_limit, self.alert_url)(conn, valid))
            for index, item in enumerate(items):
                result: Any = item if isinstance(item, GenhookError) else next(outcomes)
                if isinstance(result, GenhookError):
                    refused += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append({"index": index, "error": result.to_dict()})
                    continue
                job, made = result
                job_ids.append(job.id)
                if made:
                    created += 1
                else:
                    replayed += 1
            values: dict[str, Any] = {"created": created, "replayed": replayed, "refused": refused}
            if items:
                values.update(job_ids=job_ids, errors=errors or None)
            conn.execute(
                schedule_fires.update()
                .where(schedule_fires.c.schedule_key == key, schedule_fires.c.due_at == due_at)
                .values(**values)
            )
            conn.execute(
                schedules.update()
                .where(schedules.c.key == key)
                .values(
                    next_due_at=sa.case(
                        (schedules.c.next_due_at.is_(None), next_due_at),
                        (schedules.c.next_due_at < next_due_at, next_due_at),
                        else_=schedules.c.next_due_at,
                    ),
                    last_due_at=due_at,
                    last_fired_at=now,
                    last_outcome=outcome,
                    last_error=error,
                    updated_at=now,
                )
            )
            row = conn.execute(
                sa.select(schedule_fires).where(
                    schedule_fires.c.schedule_key == key, schedule_fires.c.due_at == due_at
                )
            ).one()
        return Fire.of(row)

    def set_schedule_paused(
        self,
        key: str,
        paused: bool,
        *,
        by: str,
        workflow_id: str,
        schedule_id: str,
        spec_hash: str,
        next_due_at: float,
    ) -> ScheduleState:
        """Pause the schedule (no due time fires while paused), or resume it: its next due time
        is then the first after now (``next_due_at``), the times of the pause never fired.
        A schedule no scheduler has seen yet gets its row here."""
        now = self.clock.now()
        with self._write() as conn:
            _ensure_row(conn, key, workflow_id, schedule_id, spec_hash, next_due_at, now)
            if paused:
                values: dict[str, Any] = {
                    "paused_at": sa.func.coalesce(schedules.c.paused_at, now),
                    "paused_by": by,
                }
            else:
                values = {
                    "paused_at": None,
                    "paused_by": None,
                    "next_due_at": next_due_at,
                    "spec_hash": spec_hash,
                }
            conn.execute(
                schedules.update().where(schedules.c.key == key).values(**values, updated_at=now)
            )
            row = conn.execute(sa.select(schedules).where(schedules.c.key == key)).one()
        return ScheduleState.of(row)

    def schedule_fires(self, key: str, limit: int = 10) -> list[Fire]:
        """The schedule's latest fires, newest due time first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(schedule_fires)
                .where(schedule_fires.c.schedule_key == key)
                .order_by(schedule_fires.c.due_at.desc())
                .limit(limit)
            )
            return [Fire.of(r) for r in rows]
