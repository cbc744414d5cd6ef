"""Operator routes for callback endpoints: the endpoint breaker's state, and enabling one again.

A service's callback endpoint (``scheme://host:port``) that failed every attempt for hours is
disabled (operator event ``endpoint.disabled``) and its deliveries wait. Enabling it makes them
due at once: that is the replay. Both routes take the operator key, as every ``/v1/ops`` route.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Security
from pydantic import BaseModel, Field

from genhook.api.auth import api_store, runtime_of
from genhook.api.errors import RESPONSES
from genhook.api.models import Enabled, EndpointList
from genhook.api.ops import OPERATOR_RESPONSES, operator_bearer, require_operator
from genhook.api.views import iso
from genhook.errors import ErrorCode, GenhookError
from genhook.store.ops_events import endpoint_of

# the operator check is a dependency, so that it answers before the body is validated
router = APIRouter(
    responses=OPERATOR_RESPONSES,
    dependencies=[Security(operator_bearer), Depends(require_operator)],
)


class EnableEndpoint(BaseModel):
    """Which endpoint to enable."""

    service: str = Field(description="The service's name.", min_length=1, max_length=100)
    endpoint: str = Field(
        description="`scheme://host:port`, as `GET /v1/ops/endpoints` lists it (a callback URL "
        "of it is taken too).",
        min_length=1,
        max_length=300,
        examples=["https://hooks.example.com:443"],
    )


def normal_endpoint(text: str) -> str:
    """``text`` as the breaker keys it (``scheme://host:port``); 422 when it is no http(s) URL."""
    try:
        parts = urlsplit(text.strip())
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        endpoint = endpoint_of(text.strip()) if ok else ""
    except ValueError:
        ok = False
    if not ok:
        raise GenhookError(
            ErrorCode.INVALID_VALUE,
            "endpoint must be scheme://host:port, e.g. https://hooks.example.com:443",
            field="endpoint",
        )
    return endpoint


def endpoint_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "service": row["service"],
        "endpoint": row["endpoint"],
        "state": row["state"],
        "failing_since": iso(row["failing_since"]),
        "failed_attempts": row["failed_attempts"],
        "disabled_at": iso(row["disabled_at"]),
        "waiting": row["waiting"],
        "updated_at": iso(row["updated_at"]),
    }


@router.get(
    "/v1/ops/endpoints",
    summary="Callback endpoints and their breakers",
    response_model=None,
    responses={200: {"model": EndpointList, "description": "The endpoints."}},
)
def list_endpoints(
    request: Request,
    state: str | None = Query(None, description="`enabled` or `disabled`: only those."),
) -> dict[str, Any]:
    """Every callback endpoint of a service that has failed since its last success, disabled
    ones first: its state, since when every attempt failed, how many attempts failed, when it
    was disabled, and how many of its deliveries wait."""
    if state not in (None, "enabled", "disabled"):
        raise GenhookError(
            ErrorCode.INVALID_VALUE, "state must be enabled or disabled", field="state"
        )
    rows = api_store(runtime_of(request)).endpoints()
    return {"endpoints": [endpoint_view(r) for r in rows if state is None or r["state"] == state]}


@router.post(
    "/v1/ops/endpoints/enable",
    summary="Enable a disabled callback endpoint and replay its waiting deliveries",
    response_model=None,
    responses={
        200: {"model": Enabled, "description": "Enabled."},
        404: {**RESPONSES[404], "description": "No service has this name."},
    },
)
def enable_endpoint(request: Request, body: EnableEndpoint) -> dict[str, Any]:
    """Enable the service's endpoint: its waiting deliveries are due now (the replay) and its
    failures are counted afresh. `{"service", "endpoint", "state": "enabled", "was_disabled",
    "replayed"}`; an endpoint that was not disabled answers the same with `was_disabled: false`.
    """
    runtime = runtime_of(request)
    done = api_store(runtime).enable_endpoint(body.service, normal_endpoint(body.endpoint))
    if done is None:
        raise GenhookError(ErrorCode.SERVICE_NOT_FOUND, f"no service named {body.service[:100]!r}")
    if done["replayed"]:
        runtime.deliveries_signal.notify()
    return done
