"""Workflows, the completion schema, assets and health."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from genhook.api.assets import asset_response
from genhook.api.auth import api_store, runtime_of, service_of
from genhook.api.errors import RESPONSES
from genhook.backends.base import BackendStatus, probe
from genhook.contract.schema import completion_schema
from genhook.flow import Breaker, BreakerState
from genhook.retention import expired_asset
from genhook.runtime import Runtime

router = APIRouter(responses=RESPONSES)


@router.get("/v1/workflows", summary="List workflows")
def list_workflows(request: Request) -> dict[str, Any]:
    """Every installed workflow with its input schema and error codes."""
    service_of(request)
    catalog = runtime_of(request).catalog
    return {"workflows": [wf.describe() for wf in catalog.workflows.values()]}


@router.get("/v1/workflows/{workflow_id}", summary="Get a workflow")
def get_workflow(workflow_id: str, request: Request) -> dict[str, Any]:
    """The integration contract of one workflow: input schema (with enums), error codes."""
    service_of(request)
    return runtime_of(request).catalog.describe(workflow_id)


class SchemaResponse(JSONResponse):
    """JSON Schema's own media type (draft 2020-12 §9.5), also what the OpenAPI declares."""

    media_type = "application/schema+json"


# FastAPI files the error responses under a route's own media type; errors stay application/json
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": doc["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, doc in RESPONSES.items()
}


@router.get(
    "/v1/schemas/completion-v1.json",
    summary="Completion payload JSON Schema",
    response_class=SchemaResponse,
    responses=_JSON_ERRORS,
)
def completion_schema_route() -> SchemaResponse:
    """The JSON Schema of completion payload version 1. Public, no key needed: a schema is no
    secret, and a receiver validates callbacks against it with nothing but its URL."""
    return SchemaResponse(completion_schema())


@router.get("/assets/{job_id}/{filename}", summary="Asset bytes", response_class=FileResponse)
@router.head("/assets/{job_id}/{filename}", summary="Asset headers", response_class=FileResponse)
def asset(job_id: str, filename: str, request: Request) -> Response:
    """The file behind an ``asset_url``, with its Content-Type, ``ETag`` (its SHA-256, as in the
    payload) and ``Cache-Control``; ``HEAD``, ``Range`` (206, 416) and ``If-None-Match`` (304)
    work as HTTP says. Asset URLs are unguessable."""
    runtime = runtime_of(request)
    path = runtime.storage.path(job_id, filename)
    if path is None:  # 410 asset_expired when retention purged its job
        raise expired_asset(api_store(runtime), job_id)
    return asset_response(path, filename, request.headers.get("if-none-match"))


@router.get("/healthz", summary="Health")
def healthz(request: Request) -> JSONResponse:
    """200 when the database answers and can write now (a rolled-back probe write, and no
    recent failed write), else 503 with the reason: a full or read-only store is not healthy."""
    health = api_store(runtime_of(request)).health()
    body: dict[str, Any] = {
        "status": "ok" if health.ok else "unavailable",
        "database": health.answers,
        "writable": health.writable,
    }
    if not health.ok:
        body["reason"] = health.reason
    return JSONResponse(body, status_code=200 if health.ok else 503)


# a backend's probe answer is kept this long: /readyz is polled often, engines are not hammered
READY_PROBE_TTL = 10.0
_probes: dict[str, tuple[float, BackendStatus]] = {}
_probes_lock = threading.Lock()


def _backend_ready(runtime: Runtime, name: str, breakers: dict[str, Breaker]) -> BackendStatus:
    """Is ``name`` ready: installed, its breaker closed, and answering its probe (cached)."""
    state = breakers.get(name)
    if state is not None and state.state is BreakerState.OPEN:
        return BackendStatus(False, f"its breaker is open after {state.failures} failures")
    now = time.monotonic()
    with _probes_lock:
        cached = _probes.get(name)
    if cached is not None and now - cached[0] < READY_PROBE_TTL:
        return cached[1]
    backend = runtime.engine.backends.find(name)
    status = BackendStatus(False, "not installed") if backend is None else probe(backend)
    with _probes_lock:
        _probes[name] = (now, status)
    return status


def readiness(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    """Whether this process can take work now, and why not: the store answers and can write,
    and at least one backend that an installed workflow uses is ready."""
    health = api_store(runtime).health()
    body: dict[str, Any] = {"store": {"ok": health.ok, "reason": health.reason}}
    if not health.ok:
        return False, {**body, "status": "unavailable", "reason": f"store: {health.reason}"}
    breakers = api_store(runtime).breakers()
    used = sorted({wf.backend for wf in runtime.catalog.workflows.values()})
    backends = {name: _backend_ready(runtime, name, breakers) for name in used}
    body["backends"] = {n: {"ready": s.ready, "detail": s.detail} for n, s in backends.items()}
    if backends and not any(s.ready for s in backends.values()):
        reasons = "; ".join(f"{n}: {s.detail}" for n, s in backends.items())
        return False, {
            **body,
            "status": "unavailable",
            "reason": f"no backend is ready ({reasons})",
        }
    return True, {**body, "status": "ready"}


@router.get("/readyz", summary="Readiness")
def readyz(request: Request) -> JSONResponse:
    """200 when this process can take work now; 503 with the reason when the store does not
    answer (or cannot write) or no configured backend that a workflow uses is ready (not
    installed, its breaker open, or not answering a short probe; probes are cached 10 s)."""
    ready, body = readiness(runtime_of(request))
    return JSONResponse(body, status_code=200 if ready else 503)
