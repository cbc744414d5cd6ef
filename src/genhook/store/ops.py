"""The operator's view: the figures of ``GET /v1/ops/summary`` and the dashboard, held and
failed work, and resuming a paused service.

Every figure is read from the hourly roll-ups (``job_rollups``), which the job store keeps in the
transactions that accept, retry and end jobs, and from the small per-service tables (the credit
ledger, breakers, endpoints): no figure scans the jobs table. Only ``queued`` and ``running``
count live jobs, through the partial indexes the claim uses (``ix_jobs_service_claimable``,
``ix_jobs_leased``), and ``awaiting_review`` the undecided review rounds
(``ix_job_reviews_pending``), so they cost what the queue holds, never what the table has ever
held.

A window (``1h``, ``24h``, ``7d``) covers whole hours: the hour buckets that overlap the last
``window`` before now, so at least the window and at most an hour more (``since`` says where it
starts). Charts use the same roll-ups, summed into steps (:data:`CHARTS`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from genhook.flow import HoldReason, RateLimit, utc_day
from genhook.status import CLAIMABLE, DeliveryStatus, JobStatus
from genhook.store.base import StoreBase
from genhook.store.ops_events import OperatorEvent, record_event
from genhook.store.schema import (
    backend_state,
    credit_ledger,
    deliveries,
    endpoints,
    job_reviews,
    job_rollups,
    jobs,
    services,
)

HOUR = 3600.0
WINDOWS: dict[str, float] = {"1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR}
"""The windows the summary and the dashboard offer, in seconds."""
DEFAULT_WINDOW = "24h"
CHARTS: dict[str, tuple[float, int]] = {"1h": (HOUR, 6), "24h": (HOUR, 24), "7d": (6 * HOUR, 28)}
"""Per window, a chart's step and number of steps: the roll-ups are hourly, so the hour's chart
shows the last 6 hours by hour (the current one partial); the week's, 28 steps of 6 hours."""
HOLD_REASONS: tuple[str, ...] = tuple(str(r) for r in HoldReason)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Figures:
    """Sums of roll-up rows (one service and workflow, or more), and the rates they give.

    ``triggers`` counts every trigger, refused ones (422) included; a job that ended counts in
    exactly one of ``completed`` (succeeded), ``failed``, ``cancelled`` and ``expired`` (its
    trigger's deadline passed before it started), as ``genhook_jobs_ended`` counts them. Rates
    are over the jobs that ended in the window (None when none did)."""

    triggers: int = 0
    refused: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    retries: int = 0
    generation_seconds: float = 0.0
    qc_checked: int = 0
    qc_passed: int = 0
    credits: float = 0.0

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Figures:
        return cls(*(row[name] or 0 for name in FIGURES))

    def __add__(self, other: Figures) -> Figures:
        return Figures(*(getattr(self, n) + getattr(other, n) for n in FIGURES))

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled + self.expired

    @property
    def completion_rate(self) -> float | None:
        """Succeeded jobs over ended jobs."""
        return _ratio(self.completed, self.ended)

    @property
    def failure_rate(self) -> float | None:
        """Failed jobs over ended jobs."""
        return _ratio(self.failed, self.ended)

    @property
    def retry_rate(self) -> float | None:
        """Retries over ended jobs: 0.25 is one retry for every four jobs."""
        return _ratio(self.retries, self.ended)

    @property
    def avg_generation_seconds(self) -> float | None:
        """Worker time per ended job (``processing_time_seconds``, summed over attempts)."""
        return _ratio(self.generation_seconds, self.ended)

    @property
    def qc_pass_rate(self) -> float | None:
        """Succeeded jobs delivered without a ``quality_warning``, over succeeded jobs."""
        return _ratio(self.qc_passed, self.qc_checked)

    @property
    def credits_per_job(self) -> float | None:
        """Credits spent over ended jobs."""
        return _ratio(self.credits, self.ended)

    def as_dict(self) -> dict[str, Any]:
        """The contract's per-workflow figures, then the extra ones."""
        return {
            "triggers": self.triggers,
            "completed": self.completed,
            "failed": self.failed,
            "completion_rate": self.completion_rate,
            "avg_generation_seconds": self.avg_generation_seconds,
            "qc_pass_rate": self.qc_pass_rate,
            "credits_per_job": self.credits_per_job,
            "refused": self.refused,
            "cancelled": self.cancelled,
            "expired": self.expired,
            "retries": self.retries,
            "retry_rate": self.retry_rate,
            "failure_rate": self.failure_rate,
            "credits": self.credits,
        }


FIGURES: tuple[str, ...] = tuple(f.name for f in fields(Figures))
"""The roll-up columns that :class:`Figures` sums, in its order."""


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    workflow_id: str
    figures: Figures

    def as_dict(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, **self.figures.as_dict()}


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """One service's state now and its figures over the window."""

    id: str
    name: str
    paused_at: float | None
    paused_reason: str | None
    rate_limit: str | None
    daily_budget: float | None
    on_budget: str
    sandbox: bool
    credits_today: float
    credits_reserved: float
    queued: int
    running: int
    held: Mapping[str, int]
    failed_deliveries: int
    disabled_endpoints: tuple[str, ...]
    workflows: tuple[WorkflowSummary, ...]
    retention: str | None = None  # its own retention (None: GENHOOK_RETENTION)
    awaiting_review: int = 0  # jobs held for a person's review now (the review queue)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def budget_used(self) -> float | None:
        """Today's spent credits over the daily budget (None without a budget)."""
        if self.daily_budget is None:
            return None
        if self.daily_budget == 0:
            return 1.0 if self.credits_today > 0 else 0.0
        return self.credits_today / self.daily_budget

    @property
    def totals(self) -> Figures:
        total = Figures()
        for workflow in self.workflows:
            total = total + workflow.figures
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "paused": self.paused,
            "rate_limit": self.rate_limit,
            "daily_budget": self.daily_budget,
            "credits_today": self.credits_today,
            "queued": self.queued,
            "running": self.running,
            "workflows": [w.as_dict() for w in self.workflows],
            "paused_at": _iso(self.paused_at),
            "paused_reason": self.paused_reason,
            "breaker": "open" if self.paused else "closed",
            "on_budget": self.on_budget,
            "test": self.sandbox,
            "budget_used": self.budget_used,
            "credits_reserved": self.credits_reserved,
            "held": dict(self.held),
            "awaiting_review": self.awaiting_review,
            "failed_deliveries": self.failed_deliveries,
            "disabled_endpoints": list(self.disabled_endpoints),
            "totals": self.totals.as_dict(),
            "retention": self.retention,
        }


@dataclass(frozen=True, slots=True)
class BackendBreaker:
    backend: str
    state: str
    failures: int
    opened_at: float | None
    probe_at: float | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "state": self.state,
            "failures": self.failures,
            "opened_at": _iso(self.opened_at),
            "probe_at": _iso(self.probe_at),
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``GET /v1/ops/summary`` answers: every service, over one window."""

    window: str
    since: float
    now: float
    services: tuple[ServiceSummary, ...]
    backends: tuple[BackendBreaker, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "services": [s.as_dict() for s in self.services],
            "window": self.window,
            "since": _iso(self.since),
            "until": _iso(self.now),
            "backends": [b.as_dict() for b in self.backends],
        }


@dataclass(frozen=True, slots=True)
class Series:
    """Figures per chart step: ``steps`` are the steps' starts, oldest first; ``points`` maps
    (service id, workflow id) to one :class:`Figures` per step."""

    window: str
    step: float
    steps: tuple[float, ...]
    points: Mapping[tuple[str, str], tuple[Figures, ...]] = field(default_factory=dict)

    def of_service(self, service_id: str) -> tuple[Figures, ...]:
        """The service's figures per step, over all its workflows."""
        total = [Figures() for _ in self.steps]
        for (sid, _), values in self.points.items():
            if sid == service_id:
                total = [a + b for a, b in zip(total, values, strict=True)]
        return tuple(total)


@dataclass(frozen=True, slots=True)
class HeldJob:
    id: str
    service: str
    workflow_id: str
    hold_reason: str
    created_at: float
    eligible_at: float


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    id: str
    job_id: str | None
    service: str | None
    kind: str
    url: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Resumed:
    """What resuming a service did: ``resumed`` False when it was not paused; ``released``
    the jobs whose ``paused`` hold was lifted."""

    service: str
    resumed: bool
    released: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "paused": False,
            "resumed": self.resumed,
            "released": self.released,
        }


def window_seconds(window: str) -> float:
    """The seconds of a window name; ValueError for any other name."""
    try:
        return WINDOWS[window]
    except KeyError:
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}") from None


def waiting() -> sa.ColumnElement[bool]:
    """``status IN ('queued', 'retrying')`` with the values written into the SQL: SQLite uses
    a partial index only when it can see that the query implies the index's condition, which
    it cannot through bound parameters (the claimable indexes would go unused)."""
    return jobs.c.status.in_([sa.literal(str(s), literal_execute=True) for s in sorted(CLAIMABLE)])


def _hour(ts: float) -> float:
    return math.floor(ts / HOUR) * HOUR


_SUMS = [sa.func.sum(job_rollups.c[name]).label(name) for name in FIGURES]


class OpsStore(StoreBase):
    """The summary, the chart series, held jobs, failed deliveries, and resume."""

    def ops_summary(self, window: str = DEFAULT_WINDOW) -> Summary:
        """Every service's state and its figures per workflow over ``window`` (a key of
        :data:`WINDOWS`), from the roll-ups."""
        now = self.clock.now()
        since = _hour(now - window_seconds(window))
        with self._read() as conn:
            figures: dict[str, list[WorkflowSummary]] = {}
            for row in conn.execute(
                sa.select(job_rollups.c.service_id, job_rollups.c.workflow_id, *_SUMS)
                .where(job_rollups.c.bucket >= since)
                .group_by(job_rollups.c.service_id, job_rollups.c.workflow_id)
                .order_by(job_rollups.c.service_id, job_rollups.c.workflow_id)
            ).mappings():
                figures.setdefault(row["service_id"], []).append(
                    WorkflowSummary(row["workflow_id"], Figures.of(row))
                )
            ledgers = {
                r.service_id: (float(r.spent), float(r.reserved))
                for r in conn.execute(
                    sa.select(
                        credit_ledger.c.service_id, credit_ledger.c.spent, credit_ledger.c.reserved
                    ).where(credit_ledger.c.day == utc_day(now))
                )
            }
            held: dict[str, dict[str, int]] = {}
            queued: dict[str, int] = {}
            for r in conn.execute(
                sa.select(jobs.c.service_id, jobs.c.hold_reason, sa.func.count().label("n"))
                .where(waiting())
                .group_by(jobs.c.service_id, jobs.c.hold_reason)
            ):
                queued[r.service_id] = queued.get(r.service_id, 0) + r.n
                if r.hold_reason is not None:
                    held.setdefault(r.service_id, {})[r.hold_reason] = r.n
            running: dict[str, int] = {}
            # no GROUP BY here: it would lead SQLite to a per-service index over every job,
            # where the partial index of running jobs (a handful) answers at once
            for sid in conn.execute(
                sa.select(jobs.c.service_id).where(jobs.c.status == JobStatus.RUNNING)
            ).scalars():
                running[sid] = running.get(sid, 0) + 1
            # the review queue: a held job has exactly one undecided round, and the partial
            # index of undecided rounds (ix_job_reviews_pending) holds only those
            reviewing: dict[str, int] = dict(
                conn.execute(
                    sa.select(job_reviews.c.service_id, sa.func.count())
                    .where(job_reviews.c.decided_at.is_(None))
                    .group_by(job_reviews.c.service_id)
                ).all()
            )
            failed: dict[str | None, int] = dict(
                conn.execute(
                    sa.select(deliveries.c.service_id, sa.func.count())
                    .where(deliveries.c.status == DeliveryStatus.FAILED)
                    .group_by(deliveries.c.service_id)
                ).all()
            )
            disabled: dict[str, list[str]] = {}
            for r in conn.execute(
                sa.select(endpoints.c.service_id, endpoints.c.endpoint)
                .where(endpoints.c.state == "disabled")
                .order_by(endpoints.c.endpoint)
            ):
                disabled.setdefault(r.service_id, []).append(r.endpoint)
            rows = conn.execute(sa.select(services).order_by(services.c.name)).mappings().all()
            backends = tuple(
                BackendBreaker(
                    r.backend, r.state, int(r.failures), r.opened_at, r.probe_at, r.last_error
                )
                for r in conn.execute(sa.select(backend_state).order_by(backend_state.c.backend))
            )
        summaries = tuple(
            ServiceSummary(
                id=s["id"],
                name=s["name"],
                paused_at=s["paused_at"],
                paused_reason=s["paused_reason"],
                rate_limit=s["rate_limit"],
                daily_budget=s["daily_budget"],
                on_budget=s["on_budget"],
                sandbox=bool(s["sandbox"]),
                credits_today=ledgers.get(s["id"], (0.0, 0.0))[0],
                credits_reserved=ledgers.get(s["id"], (0.0, 0.0))[1],
                queued=int(queued.get(s["id"], 0)),
                running=int(running.get(s["id"], 0)),
                awaiting_review=int(reviewing.get(s["id"], 0)),
                held={r: held.get(s["id"], {}).get(r, 0) for r in HOLD_REASONS},
                failed_deliveries=int(failed.get(s["id"], 0)),
                disabled_endpoints=tuple(disabled.get(s["id"], ())),
                workflows=tuple(figures.get(s["id"], ())),
                retention=s["retention"],
            )
            for s in rows
        )
        return Summary(window, since, now, summaries, backends)

    def ops_series(self, window: str = DEFAULT_WINDOW) -> Series:
        """The roll-ups of the window's chart (:data:`CHARTS`), per service and workflow."""
        window_seconds(window)
        step, count = CHARTS[window]
        now = self.clock.now()
        first = math.floor(now / step) * step - (count - 1) * step
        steps = tuple(first + i * step for i in range(count))
        points: dict[tuple[str, str], list[Figures]] = {}
        with self._read() as conn:
            # the step of a bucket, floor((bucket - first) / step): CAST truncates on SQLite
            # (the value is never negative here) but rounds on PostgreSQL
            ratio = (job_rollups.c.bucket - first) / step
            postgres = conn.dialect.name == "postgresql"
            index = sa.func.floor(ratio) if postgres else sa.cast(ratio, sa.Integer)
            for row in conn.execute(
                sa.select(
                    job_rollups.c.service_id,
                    job_rollups.c.workflow_id,
                    index.label("step"),
                    *_SUMS,
                )
                .where(job_rollups.c.bucket >= first)
                .group_by(sa.text("1"), sa.text("2"), sa.text("3"))
            ).mappings():
                values = points.setdefault(
                    (row["service_id"], row["workflow_id"]), [Figures() for _ in steps]
                )
                at = min(count - 1, max(0, int(row["step"])))
                values[at] = values[at] + Figures.of(row)
        return Series(window, step, steps, {k: tuple(v) for k, v in points.items()})

    def held_jobs(self, limit: int = 100) -> list[HeldJob]:
        """Waiting jobs that a hold keeps from starting, the soonest eligible first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(
                    jobs.c.id,
                    services.c.name,
                    jobs.c.workflow_id,
                    jobs.c.hold_reason,
                    jobs.c.created_at,
                    jobs.c.run_after,
                )
                .join(services, services.c.id == jobs.c.service_id)
                .where(waiting(), jobs.c.hold_reason.is_not(None))
                .order_by(jobs.c.run_after, jobs.c.id)
                .limit(limit)
            ).all()
        return [HeldJob(r[0], r[1], r[2], r[3], float(r[4]), float(r[5])) for r in rows]

    def failed_deliveries(self, limit: int = 50) -> list[FailedDelivery]:
        """Deliveries that gave up (schedule used up, or the receiver answered 410), newest
        first: what the dashboard offers to replay."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.job_id,
                    services.c.name,
                    deliveries.c.kind,
                    deliveries.c.url,
                    deliveries.c.attempts,
                    deliveries.c.last_status_code,
                    deliveries.c.last_error,
                    deliveries.c.created_at,
                )
                .select_from(deliveries)
                .outerjoin(services, services.c.id == deliveries.c.service_id)
                .where(deliveries.c.status == DeliveryStatus.FAILED)
                .order_by(deliveries.c.created_at.desc())
                .limit(limit)
            ).all()
        return [
            FailedDelivery(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], float(r[8]))
            for r in rows
        ]

    def resume_service(self, service: str) -> Resumed | None:
        """Resume a service (by name, or id) that its breaker paused: clear the pause, lift the
        ``paused`` hold of its waiting jobs (due now; the claim applies the rate window again),
        restart the storm count, and log ``service.resumed``, in one transaction. None when no
        such service exists; resuming a service that is not paused changes nothing."""
        now = self.clock.now()
        with self._write() as conn:
            row = conn.execute(
                sa.select(
                    services.c.id,
                    services.c.name,
                    services.c.paused_at,
                    services.c.paused_reason,
                    services.c.rate_limit,
                )
                .where(sa.or_(services.c.name == service, services.c.id == service))
                .order_by((services.c.name == service).desc())
                .limit(1)
                .with_for_update(key_share=True)
            ).first()
            if row is None:
                return None
            released = conn.execute(
                sa.select(sa.func.count()).where(
                    jobs.c.service_id == row.id,
                    waiting(),
                    jobs.c.hold_reason == HoldReason.PAUSED,
                )
            ).scalar_one()
            self._reslot(conn, row.id, RateLimit.parse(row.rate_limit), now)
            if row.paused_at is None:
                return Resumed(row.name, False, int(released))
            conn.execute(
                services.update()
                .where(services.c.id == row.id)
                .values(
                    paused_at=None,
                    paused_reason=None,
                    storm_bucket=None,
                    storm_count=0,
                    storm_previous=0,
                )
            )
            record_event(
                conn,
                event=OperatorEvent.SERVICE_RESUMED,
                service=row.name,
                details={
                    "paused_at": _iso(row.paused_at),
                    "paused_reason": row.paused_reason,
                    "released": int(released),
                },
                now=now,
                alert_url=self.alert_url,
            )
        return Resumed(row.name, True, int(released))

    @staticmethod
    def _reslot(conn: sa.Connection, service_id: str, limit: RateLimit | None, now: float) -> None:
        """Lift the ``paused`` holds. Under a rate limit, the service's jobs that never started
        get their start slots again, in their order, as if accepted now after the starts of the
        last window: so each one's ``eligible_at`` is when the window lets it start (the slots
        given at accept did not know of the pause, nor of jobs accepted during it)."""
        if limit is not None:
            _rate_slots(conn, service_id, limit, now)
        # anything else the pause held (a retry, say, or all of it without a limit) starts now
        conn.execute(
            jobs.update()
            .where(
                jobs.c.service_id == service_id,
                waiting(),
                jobs.c.hold_reason == HoldReason.PAUSED,
            )
            .values(hold_reason=None, run_after=now, updated_at=now)
        )


def _rate_slots(conn: sa.Connection, service_id: str, limit: RateLimit, now: float) -> None:
    """New start slots for the service's waiting jobs that never started, in their order, after
    the starts of the last window (:meth:`genhook.flow.RateLimit.slot`)."""
    started = conn.execute(
        sa.select(jobs.c.first_claimed_at)
        .where(jobs.c.service_id == service_id, jobs.c.first_claimed_at > now - limit.period)
        .order_by(jobs.c.first_claimed_at.desc())
        .limit(limit.count)
    ).scalars()
    slots = sorted(float(t) for t in started)
    queued = conn.execute(
        sa.select(jobs.c.id)
        .where(
            jobs.c.service_id == service_id,
            waiting(),
            jobs.c.first_claimed_at.is_(None),
            jobs.c.rate_seq.is_not(None),
            sa.or_(
                jobs.c.hold_reason.is_(None),
                jobs.c.hold_reason.in_([HoldReason.PAUSED, HoldReason.RATE_LIMIT]),
            ),
        )
        .order_by(jobs.c.rate_seq)
    ).scalars()
    moved = []
    for job_id in queued:
        slot = limit.slot(now, slots[-limit.count] if len(slots) >= limit.count else None)
        slots.append(slot)
        reason = HoldReason.RATE_LIMIT if slot > now else None
        moved.append({"id_": job_id, "slot": slot, "reason": reason})
    if moved:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == sa.bindparam("id_"))
            .values(
                rate_slot=sa.bindparam("slot"),
                run_after=sa.bindparam("slot"),
                hold_reason=sa.bindparam("reason"),
                updated_at=now,
            ),
            moved,
        )


def service_named(summary: Summary, name: str) -> ServiceSummary | None:
    """The summary's service called ``name``."""
    return next((s for s in summary.services if s.name == name), None)


def all_workflows(summaries: Iterable[ServiceSummary]) -> list[str]:
    """Every workflow id that has figures, sorted."""
    return sorted({w.workflow_id for s in summaries for w in s.workflows})
