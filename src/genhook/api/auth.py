"""Bearer API keys: each names one requesting service."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.security import HTTPBearer

from genhook.errors import ErrorCode, GenhookError
from genhook.runtime import Runtime

bearer = HTTPBearer(
    auto_error=False,
    description="A service's API key (`genhook services create`).",
)
"""Declares the scheme in the OpenAPI document; ``service_of`` does the checking."""


def runtime_of(request: Request) -> Runtime:
    """The process's runtime, set on the app at start-up."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def service_of(request: Request) -> dict[str, Any]:
    """The calling service, from ``Authorization: Bearer <api_key>``; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GenhookError(ErrorCode.UNAUTHORIZED, "send Authorization: Bearer <api_key>")
    service = runtime_of(request).store.service_for_key(token.strip())
    if service is None:
        raise GenhookError(ErrorCode.UNAUTHORIZED, "unknown API key")
    return service


def owned(job: dict[str, Any] | None, service: dict[str, Any], what: str = "job") -> dict[str, Any]:
    """``job`` if the service owns it: 404 when missing, 403 when another service's."""
    if job is None:
        raise GenhookError(ErrorCode.NOT_FOUND, f"no such {what}")
    if job["service_id"] != service["id"]:
        raise GenhookError(ErrorCode.FORBIDDEN, f"this {what} belongs to another service")
    return job
