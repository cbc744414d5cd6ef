"""What ``genhook schedules`` and ``/v1/schedules`` show and do: list, pause, resume.

A schedule's view joins its template side (cron, time zone, service, policy, input or items)
with its stored state (next due time, paused, the last due time's outcome). A schedule no
scheduler has seen yet shows the next due time it will get (the first after now).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genhook.errors import ErrorCode, GenhookError
from genhook.scheduling.scheduler import all_specs
from genhook.scheduling.spec import ScheduleSpec, iso
from genhook.store.schedules import Fire, ScheduleState

if TYPE_CHECKING:
    from genhook.runtime import Runtime


def find_spec(runtime: Runtime, schedule_id: str) -> ScheduleSpec:
    """The schedule of key ``WORKFLOW:ID``, or ``schedule_not_found``."""
    for spec in all_specs(runtime):
        if spec.key == schedule_id:
            return spec
    known = ", ".join(s.key for s in all_specs(runtime)) or "none"
    raise GenhookError(
        ErrorCode.SCHEDULE_NOT_FOUND,
        f"no schedule {schedule_id[:140]!r} (schedules are WORKFLOW:ID; installed: {known})",
    )


def fire_view(fire: Fire) -> dict[str, Any]:
    """One due time dealt with."""
    return {
        "due_at": iso(fire.due_at),
        "fired_at": iso(fire.fired_at),
        "outcome": fire.outcome,
        "jobs_created": fire.created,
        "jobs_replayed": fire.replayed,
        "items_refused": fire.refused,
        "missed": fire.missed,
        "job_ids": fire.job_ids or [],
        "errors": fire.errors or [],
        "error": fire.error,
    }


def schedule_view(
    spec: ScheduleSpec, state: ScheduleState | None, now: float, service_found: bool = True
) -> dict[str, Any]:
    """The schedule as ``schedules list`` and ``GET /v1/schedules`` show it; ``service_found``
    False: no service has its ``service`` name now (its fires fail until one does)."""
    stored = None if state is None else state.next_due_at
    next_due = spec.next_due(now) if stored is None else stored
    paused = state is not None and state.paused_at is not None
    return {
        **spec.describe(),
        "service_found": service_found,
        "paused": paused,
        "paused_at": None if state is None else iso(state.paused_at),
        "paused_by": None if state is None else state.paused_by,
        "next_due_at": None if paused else iso(next_due),
        "next_due_local": None if paused else _local(spec, next_due),
        "last_due_at": None if state is None else iso(state.last_due_at),
        "last_fired_at": None if state is None else iso(state.last_fired_at),
        "last_outcome": None if state is None else state.last_outcome,
        "last_error": None if state is None else state.last_error,
    }


def _local(spec: ScheduleSpec, t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t, spec.zone).isoformat(timespec="seconds")


def list_views(runtime: Runtime, service: str | None = None) -> list[dict[str, Any]]:
    """Every schedule (``service``: only those that fire as that service), by key."""
    states = runtime.store.schedule_states()
    names = {s.name for s in runtime.store.list_services()}
    now = runtime.clock.now()
    return [
        schedule_view(spec, states.get(spec.key), now, spec.service in names)
        for spec in all_specs(runtime)
        if service is None or spec.service == service
    ]


def detail_view(runtime: Runtime, spec: ScheduleSpec, fires: int = 20) -> dict[str, Any]:
    """The schedule with its latest fires."""
    found = runtime.store.service_by_name(spec.service) is not None
    view = schedule_view(spec, runtime.store.schedule_state(spec.key), runtime.clock.now(), found)
    view["fires"] = [fire_view(f) for f in runtime.store.schedule_fires(spec.key, fires)]
    return view


def set_paused(runtime: Runtime, spec: ScheduleSpec, paused: bool, by: str) -> dict[str, Any]:
    """Pause or resume the schedule (resumed: due next at the first due time after now; the
    due times of the pause are never fired, whatever ``missed`` says)."""
    now = runtime.clock.now()
    state = runtime.store.set_schedule_paused(
        spec.key,
        paused,
        by=by,
        workflow_id=spec.workflow_id,
        schedule_id=spec.id,
        spec_hash=spec.spec_hash,
        next_due_at=spec.next_due(now),
    )
    return schedule_view(spec, state, now)
