"""Workflows, the completion schema, assets and health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from genhook import health
from genhook.api.assets import asset_response
from genhook.api.auth import api_store, runtime_of, service_of
from genhook.api.errors import RESPONSES, error_doc, json_errors
from genhook.api.models import Health, Readiness, WorkflowList, WorkflowView
from genhook.contract.schema import completion_schema
from genhook.retention import expired_asset

router = APIRouter(responses=RESPONSES)


@router.get(
    "/v1/workflows",
    summary="List workflows",
    response_model=None,
    responses={200: {"model": WorkflowList, "description": "Every installed workflow."}},
)
def list_workflows(request: Request) -> dict[str, Any]:
    """Every installed workflow with its input schema and error codes."""
    service_of(request)
    catalog = runtime_of(request).catalog
    return {"workflows": [wf.describe() for wf in catalog.workflows.values()]}


@router.get(
    "/v1/workflows/{workflow_id}",
    summary="Get a workflow",
    response_model=None,
    responses={
        200: {"model": WorkflowView, "description": "The workflow."},
        404: error_doc("`unknown_workflow`: no workflow has this id."),
    },
)
def get_workflow(workflow_id: str, request: Request) -> dict[str, Any]:
    """The integration contract of one workflow: input schema (with enums), error codes."""
    service_of(request)
    return runtime_of(request).catalog.describe(workflow_id)


class SchemaResponse(JSONResponse):
    """JSON Schema's own media type (draft 2020-12 §9.5), also what the OpenAPI declares."""

    media_type = "application/schema+json"


_JSON_ERRORS = json_errors(RESPONSES)


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


ASSET_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The bytes, with their own Content-Type (`image/jpeg`, `video/mp4`...).",
    },
    206: {
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The range asked for (`Content-Range`).",
    },
    304: {"description": "`If-None-Match` names the `ETag`: no body."},
    307: {"description": "S3 storage: to the object (`Location`)."},
    404: _JSON_ERRORS[404],
    **json_errors(
        {
            410: error_doc("`asset_expired`: its job was purged by retention."),
            416: error_doc("`range_not_satisfiable`: the range starts past the end."),
            503: error_doc("`storage_unavailable`: the asset storage does not answer now."),
        }
    ),
}


@router.get(
    "/assets/{job_id}/{filename}",
    summary="Asset bytes",
    response_class=FileResponse,
    responses=ASSET_RESPONSES,
)
@router.head(
    "/assets/{job_id}/{filename}",
    summary="Asset headers",
    response_class=FileResponse,
    responses=ASSET_RESPONSES,
)
def asset(job_id: str, filename: str, request: Request) -> Response:
    """The file behind an ``asset_url``, with its Content-Type, ``ETag`` (its SHA-256, as in the
    payload) and ``Cache-Control``; ``HEAD``, ``Range`` (206, 416) and ``If-None-Match`` (304)
    work as HTTP says. Asset URLs are unguessable. With S3 storage the answer is a ``307``
    redirect to the object: a fresh presigned URL, or its public URL (``GENHOOK_S3_URL_MODE``
    public)."""
    runtime = runtime_of(request)
    found = runtime.storage.locate(job_id, filename)
    if found is None:  # 410 asset_expired when retention purged its job
        raise expired_asset(api_store(runtime), job_id)
    if isinstance(found, str):  # S3 storage: to the object (a fresh presigned URL, or public)
        return RedirectResponse(found, status_code=307, headers={"Cache-Control": "no-store"})
    return asset_response(found, filename, request.headers.get("if-none-match"))


@router.get(
    "/healthz",
    summary="Health",
    responses={
        200: {"model": Health, "description": "The store answers and can write."},
        503: {"model": Health, "description": "It does not (`reason` says why)."},
    },
)
def healthz(request: Request) -> JSONResponse:
    """200 when the database answers and can write now (a rolled-back probe write, and no
    recent failed write), else 503 with the reason: a full or read-only store is not healthy."""
    status, body = health.healthz(api_store(runtime_of(request)))
    return JSONResponse(body, status_code=status)


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        200: {"model": Readiness, "description": "Ready to take work."},
        503: {"model": Readiness, "description": "Not ready (`reason` says why)."},
    },
)
def readyz(request: Request) -> JSONResponse:
    """200 when this process can take work now; 503 with the reason when the store does not
    answer (or cannot write), no configured backend that a workflow uses is ready (not
    installed, its breaker open, or not answering a short probe; probes are cached 10 s), or
    the process is shutting down (``shutting_down``, answered at once)."""
    runtime = runtime_of(request)
    shutdown = getattr(request.app.state, "shutdown", None)
    status, body = health.readiness(runtime, api_store(runtime), shutdown=shutdown)
    return JSONResponse(body, status_code=status)
