"""Operator routes: the dashboard's figures as JSON, and resuming a paused service.

They take the operator key, ``GENHOOK_ADMIN_KEY``, as ``Authorization: Bearer`` (never a
service's API key). With no operator key configured they refuse every request (403), so an
install that never set one exposes nothing.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Query, Request, Security
from fastapi.security import HTTPBearer

from genhook.api.auth import api_store, runtime_of
from genhook.api.errors import RESPONSES
from genhook.api.models import OpsSummary, Resumed
from genhook.errors import ErrorCode, GenhookError
from genhook.store.ops import DEFAULT_WINDOW, WINDOWS

operator_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorKey",
    description="The operator key (`GENHOOK_ADMIN_KEY`).",
)
"""Declares the operator scheme in the OpenAPI document; :func:`require_operator` checks it."""

OPERATOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    401: {**RESPONSES[401], "description": "No valid `Authorization: Bearer <GENHOOK_ADMIN_KEY>`."},
    403: {**RESPONSES[403], "description": "No operator key is configured (`forbidden`)."},
}

router = APIRouter(responses=OPERATOR_RESPONSES, dependencies=[Security(operator_bearer)])


def admin_key(request: Request) -> str:
    """The configured operator key; 403 when there is none (operator routes are off)."""
    key: str | None = runtime_of(request).settings.admin_key
    if not key:
        raise GenhookError(
            ErrorCode.FORBIDDEN,
            "operator routes are off: no operator key is configured (GENHOOK_ADMIN_KEY)",
        )
    return key


def is_operator_key(token: str, key: str) -> bool:
    """Is ``token`` the operator key (compared in constant time)?"""
    return hmac.compare_digest(token.encode("utf-8"), key.encode("utf-8"))


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, None without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_operator(request: Request) -> None:
    """Admit the operator (``Authorization: Bearer <GENHOOK_ADMIN_KEY>``): 403 when no key is
    configured, 401 without the header or with another token."""
    key = admin_key(request)
    token = bearer_token(request)
    if token is None:
        raise GenhookError(ErrorCode.UNAUTHORIZED, "send Authorization: Bearer <GENHOOK_ADMIN_KEY>")
    if not is_operator_key(token, key):
        raise GenhookError(ErrorCode.UNAUTHORIZED, "not the operator key")


def check_window(window: str) -> str:
    """``window`` when it is one the summary offers; 422 ``invalid_value`` otherwise."""
    if window not in WINDOWS:
        raise GenhookError(
            ErrorCode.INVALID_VALUE,
            f"window must be one of {', '.join(WINDOWS)}, not {window[:20]!r}",
            field="window",
        )
    return window


@router.get(
    "/v1/ops/summary",
    summary="The operator's figures, per service and workflow",
    response_model=None,
    responses={200: {"model": OpsSummary, "description": "The figures."}},
)
def ops_summary(
    request: Request,
    window: str = Query(
        DEFAULT_WINDOW, description="`1h`, `24h` or `7d`: the hour buckets overlapping it."
    ),
) -> dict[str, Any]:
    """Per service: paused, rate limit, daily budget, credits spent today, jobs queued and
    running (and held by reason, budget use, breaker, failed deliveries); per workflow over
    the window: triggers, completed, failed, completion rate, average generation seconds, QC
    pass rate, credits per job (and retries, retry and failure rates). From the hourly
    roll-ups, never a scan of the jobs."""
    require_operator(request)
    return api_store(runtime_of(request)).ops_summary(check_window(window)).as_dict()


@router.post(
    "/v1/ops/services/{service}/resume",
    summary="Resume a paused service",
    response_model=None,
    responses={
        200: {"model": Resumed, "description": "Resumed (or was not paused)."},
        404: {**RESPONSES[404], "description": "No service has this name."},
    },
)
def resume_service(service: str, request: Request) -> dict[str, Any]:
    """Clear the service's pause (its trigger-storm breaker), release the jobs it held
    (``hold_reason: paused``) to start now, and send ``service.resumed``. A service that is not
    paused answers the same with ``resumed: false``."""
    require_operator(request)
    runtime = runtime_of(request)
    done = api_store(runtime).resume_service(service)
    if done is None:
        raise GenhookError(ErrorCode.SERVICE_NOT_FOUND, f"no service named {service[:100]!r}")
    runtime.jobs_signal.notify()
    return done.as_dict()
