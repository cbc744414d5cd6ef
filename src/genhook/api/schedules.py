"""``/v1/schedules``: the template schedules, and pausing and resuming one.

Two keys are accepted: the operator key (``GENHOOK_ADMIN_KEY``) sees and controls every
schedule; a service's API key sees and controls the schedules that fire as that service (the
template's ``service:``), and gets 403 ``forbidden`` for another's. A schedule is named by its id
``WORKFLOW:ID``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool

from genhook.api.auth import bearer, runtime_of, service_of
from genhook.api.errors import RESPONSES, error_doc
from genhook.api.models import ScheduleDetail, ScheduleList, ScheduleView
from genhook.api.ops import bearer_token, is_operator_key, operator_bearer
from genhook.errors import ErrorCode, GenhookError
from genhook.scheduling.control import detail_view, find_spec, list_views, set_paused
from genhook.scheduling.spec import ScheduleSpec

router = APIRouter(
    responses={
        **RESPONSES,
        404: error_doc("`schedule_not_found`: no schedule has this `WORKFLOW:ID`."),
    },
    dependencies=[Security(bearer), Security(operator_bearer)],
)


def _caller(request: Request) -> str | None:
    """None for the operator; else the calling service's name (401 without a valid key)."""
    key = runtime_of(request).settings.admin_key
    token = bearer_token(request)
    if key and token is not None and is_operator_key(token, key):
        return None
    return service_of(request).name


def _owned(request: Request, schedule_id: str) -> tuple[ScheduleSpec, str]:
    """The schedule and who acts on it (``operator`` or the service's name); 403 when it
    fires as another service."""
    caller = _caller(request)
    spec = find_spec(runtime_of(request), schedule_id)
    if caller is not None and spec.service != caller:
        raise GenhookError(ErrorCode.FORBIDDEN, "this schedule fires as another service")
    return spec, caller or "operator"


@router.get(
    "/v1/schedules",
    summary="List schedules",
    response_model=None,
    responses={200: {"model": ScheduleList, "description": "The schedules."}},
)
def list_schedules(request: Request) -> dict[str, Any]:
    """The template schedules: with a service's key those that fire as it, with the operator
    key all. Each: ``schedule_id`` (``WORKFLOW:ID``), ``cron``, ``timezone``, ``service``,
    ``missed``, ``input`` or ``items``, ``paused``, ``next_due_at`` (UTC) and
    ``next_due_local``, and the last due time's ``last_outcome`` (``fired``, ``skipped``,
    ``failed``) and ``last_error``."""
    caller = _caller(request)
    return {"schedules": list_views(runtime_of(request), caller)}


@router.get(
    "/v1/schedules/{schedule_id}",
    summary="Get a schedule",
    response_model=None,
    responses={200: {"model": ScheduleDetail, "description": "The schedule."}},
)
def get_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    """The schedule, with its latest 20 ``fires`` (newest due time first): each ``due_at``,
    ``outcome``, ``jobs_created``, ``items_refused`` (with their ``errors``), ``job_ids``."""
    spec, _who = _owned(request, schedule_id)
    return detail_view(runtime_of(request), spec)


async def _set(request: Request, schedule_id: str, paused: bool) -> dict[str, Any]:
    spec, who = await run_in_threadpool(_owned, request, schedule_id)
    return await run_in_threadpool(set_paused, runtime_of(request), spec, paused, who)


@router.post(
    "/v1/schedules/{schedule_id}/pause",
    summary="Pause a schedule",
    response_model=None,
    responses={200: {"model": ScheduleView, "description": "Paused."}},
)
async def pause_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    """No due time of the schedule fires until it is resumed (idempotent)."""
    return await _set(request, schedule_id, True)


@router.post(
    "/v1/schedules/{schedule_id}/resume",
    summary="Resume a schedule",
    response_model=None,
    responses={200: {"model": ScheduleView, "description": "Resumed."}},
)
async def resume_schedule(schedule_id: str, request: Request) -> dict[str, Any]:
    """The schedule fires again from its first due time after now; the due times of the pause
    are not fired, whatever its ``missed`` policy (idempotent)."""
    return await _set(request, schedule_id, False)
