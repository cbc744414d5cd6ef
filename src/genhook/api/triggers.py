"""``POST /v1/workflows/{id}/runs`` and ``/dry-run``: authenticate, validate, insert, 202."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from genhook.api.auth import bearer, runtime_of, service_of
from genhook.api.errors import RESPONSES, error_response
from genhook.api.views import accepted
from genhook.contract.completion import failure_payload
from genhook.delivery.ssrf import check_callback_target
from genhook.engine import external_id
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.ids import new_job_id
from genhook.runtime import Runtime
from genhook.workflow.inputs import validate_trigger
from genhook.workflow.template import Workflow

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])

TRIGGER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The workflow's input fields (GET /v1/workflows/{workflow_id} "
                    "gives its input_schema), plus optional callback_url.",
                }
            }
        },
    }
}


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(ErrorCode.INVALID_JSON, f"the body is not JSON: {exc}") from exc


def _request_hash(workflow_id: str, body: Any) -> str:
    """The same JSON (whatever its spacing or key order) to the same workflow: the same hash."""
    canonical = json.dumps([workflow_id, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_media_type(request: Request) -> None:
    """JSON in: a body declared as anything else is refused with 415 (no type is accepted)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise GenhookError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be JSON: send Content-Type: application/json (got {media!r})",
        )


def _valid_callback(body: Any, runtime: Runtime) -> str | None:
    """The callback URL if the trigger carries one that genhook may call."""
    url = body.get("callback_url") if isinstance(body, dict) else None
    if url is None:
        return None
    check_callback_target(
        url, allow_private=runtime.settings.allow_private_callbacks, resolver=runtime.resolver
    )
    return str(url)


def _reject(
    runtime: Runtime, service: dict[str, Any], wf: Workflow, body: Any, error: GenhookError
) -> JSONResponse:
    """Record the invalid trigger as a failed job, tell its callback, answer 422."""
    callback = None
    if error.field != "callback_url":
        try:
            callback = _valid_callback(body, runtime)
        except GenhookError:
            callback = None
    ext = external_id(wf, body) if isinstance(body, dict) else None
    payload = failure_payload(
        job_id=new_job_id(), workflow_id=wf.id, external_id=ext, error=error, attempts=0
    ).to_json()
    runtime.store.reject(
        service_id=service["id"],
        workflow_id=wf.id,
        workflow_version=wf.version,
        body=body,
        external_id=ext,
        callback_url=callback,
        error=error,
        payload=payload,
    )
    if callback:
        runtime.deliveries_signal.notify()
    return error_response(error, job_id=payload["job_id"])


def _accept(
    runtime: Runtime, service: dict[str, Any], workflow_id: str, raw: bytes, key: str | None
) -> JSONResponse:
    wf = runtime.engine.workflow(workflow_id)
    body: Any = None
    try:
        body = _parse(raw)
        trigger = validate_trigger(wf, body)
        callback = _valid_callback(trigger, runtime)
    except InvalidInput as exc:
        return _reject(runtime, service, wf, body, exc)
    digest = _request_hash(wf.id, body) if key else None
    job, created = runtime.store.submit(
        service_id=service["id"],
        workflow_id=wf.id,
        workflow_version=wf.version,
        trigger=trigger,
        external_id=external_id(wf, trigger),
        callback_url=callback,
        idempotency_key=key,
        request_hash=digest,
    )
    if created:
        runtime.jobs_signal.notify()
    return JSONResponse(
        accepted(job, runtime.settings.public_url), status_code=202 if created else 200
    )


@router.post(
    "/v1/workflows/{workflow_id}/runs",
    status_code=202,
    openapi_extra=TRIGGER_BODY,
    summary="Trigger a workflow",
    responses={
        200: {"description": "An Idempotency-Key replay: the job first created for it."},
        409: {"description": "`idempotency_conflict`: the key was used with another body."},
        413: {"description": "`payload_too_large`."},
        415: {"description": "`unsupported_media_type`: the body is not JSON."},
    },
)
async def trigger(
    workflow_id: str,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Same key and body within 24 h: the same job (200); another body: 409.",
        ),
    ] = None,
) -> JSONResponse:
    """Validate the trigger, durably queue a job, answer 202 with its id.

    Invalid input is answered at once with 422 and sent to a valid ``callback_url`` as a failed
    completion payload. ``Idempotency-Key``: the same key and body within 24 h returns the same
    job (200); another body, 409.
    """
    service = service_of(request)
    _check_media_type(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise GenhookError(
            ErrorCode.INVALID_VALUE, "Idempotency-Key must be 1 to 255 characters", field=None
        )
    raw = await request.body()
    return await run_in_threadpool(_accept, runtime_of(request), service, workflow_id, raw, key)


@router.post(
    "/v1/workflows/{workflow_id}/dry-run", openapi_extra=TRIGGER_BODY, summary="Dry-run a trigger"
)
async def dry_run(workflow_id: str, request: Request) -> JSONResponse:
    """Validate and map the trigger without generating: prompt, style, outputs, credits."""
    service_of(request)
    _check_media_type(request)
    runtime = runtime_of(request)
    wf = runtime.engine.workflow(workflow_id)
    body = _parse(await request.body())
    trigger = validate_trigger(wf, body)
    _valid_callback(trigger, runtime)
    plan = await run_in_threadpool(runtime.engine.plan, wf, trigger)
    return JSONResponse(plan)
