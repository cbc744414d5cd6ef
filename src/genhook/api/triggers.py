"""``POST /v1/workflows/{id}/runs`` and ``/dry-run``: authenticate, parse, split, check, insert.

The edge of a trigger: the body is parsed as strict JSON (refused before anything is stored
otherwise), split into the workflow's input and the envelope, each checked once, and the callback
URL's target checked against the SSRF policy; the job stores input and envelope apart.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from genhook import metrics
from genhook.api.auth import (
    api_store,
    bearer,
    cached_service,
    runtime_of,
    service_for,
    service_of,
)
from genhook.api.errors import RESPONSES, error_doc, error_response
from genhook.api.models import JOB_LINKS, Accepted, DryRun, InvalidTrigger
from genhook.api.views import accepted
from genhook.catalog import external_id
from genhook.contract.completion import failure_payload
from genhook.contract.envelope import check_callback_url, split_trigger, usable_metadata
from genhook.contract.jsonbody import parse_json
from genhook.delivery.addresses import literal_address
from genhook.delivery.ssrf import check_callback_target
from genhook.errors import ERROR_SPECS, ErrorCode, GenhookError, InvalidInput
from genhook.ids import new_job_id
from genhook.runtime import Runtime
from genhook.store.admit import Admission, Submission
from genhook.store.jobs import PRIORITIES
from genhook.store.records import Service, StoredJob
from genhook.workflow.inputs import MAX_EXTERNAL_ID, check_media_targets, media_needs_lookup
from genhook.workflow.template import Workflow

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])

TRIGGER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The workflow's input fields, plus the optional envelope "
                    "fields callback_url, callback_events, client_metadata, priority and "
                    "deadline (GET /v1/workflows/{workflow_id} gives the input_schema).",
                }
            }
        },
    }
}


def _request_hash(workflow_id: str, body: Any) -> str:
    """The same JSON (whatever its spacing or key order) to the same workflow: the same hash."""
    canonical = json.dumps([workflow_id, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_media_type(declared: str | None) -> None:
    """JSON in: a body declared as anything else is refused with 415 (no type is accepted)."""
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise GenhookError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be JSON: send Content-Type: application/json (got {media!r})",
        )


def _check_target(url: str | None, runtime: Runtime) -> None:
    """The envelope's callback URL (syntax already checked) must be one genhook may call."""
    if url is not None:
        check_callback_target(
            url, allow_private=runtime.settings.allow_private_callbacks, resolver=runtime.resolver
        )


async def _check_target_async(url: str | None, runtime: Runtime) -> None:
    """:func:`_check_target` from the event loop: an IP-literal host is checked inline, a name
    (which must be resolved) in the thread pool."""
    if url is None:
        return
    if literal_address(urlsplit(url).hostname or "") is not None:
        _check_target(url, runtime)
    else:
        await run_in_threadpool(_check_target, url, runtime)


async def _check_media_async(wf: Workflow, given: dict[str, Any], runtime: Runtime) -> None:
    """The input's media URLs (``x-media`` fields) must be ones genhook may fetch, as the
    callback URL: IP literals checked inline, a name resolved in the thread pool."""
    if not wf.media_inputs:
        return
    check = functools.partial(
        check_media_targets,
        wf,
        given,
        allow_private=runtime.settings.allow_private_callbacks,
        resolver=runtime.resolver,
    )
    if media_needs_lookup(wf, given):
        await run_in_threadpool(check)
    else:
        check()


def _usable_callback(raw_envelope: dict[str, Any], runtime: Runtime) -> str | None:
    """For a refused trigger: its callback URL if that alone is one genhook may call."""
    try:
        url = check_callback_url(raw_envelope.get("callback_url"))
        _check_target(url, runtime)
    except GenhookError:
        return None
    return url


def _stored_external_id(wf: Workflow, given: dict[str, Any], error: GenhookError) -> str | None:
    """The caller's id of a refused trigger, when it is itself fit to store."""
    if wf.external_id is None or error.field == wf.external_id:
        return None
    value = given.get(wf.external_id)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= MAX_EXTERNAL_ID else None


def _reject(
    runtime: Runtime,
    service: Service,
    wf: Workflow,
    body: Any,
    error: GenhookError,
    key: str | None,
    digest: str | None,
) -> JSONResponse:
    """Record the invalid trigger as a failed job, tell its callback, answer 422.

    A retried request (same Idempotency-Key, same body) gets the job first recorded for it,
    and its callback is not sent again."""
    given, envelope = split_trigger(body) if isinstance(body, dict) else ({"_body": body}, {})
    callback = None if error.field == "callback_url" else _usable_callback(envelope, runtime)
    ext = _stored_external_id(wf, given, error)
    job_id = new_job_id()  # minted here and passed down; nothing reads it back out of a payload
    metadata = usable_metadata(envelope)  # echoed in the failed payload, and kept with the job
    payload = failure_payload(
        job_id=job_id,
        workflow_id=wf.id,
        external_id=ext,
        error=error,
        attempts=0,
        client_metadata=metadata,
    ).to_json()
    if service.sandbox:  # a sandbox service's payloads all say so, a refusal's too
        payload["test"] = True
    job, created = api_store(runtime).reject(
        job_id=job_id,
        service_id=service.id,
        workflow_id=wf.id,
        workflow_version=wf.version,
        body=given,
        external_id=ext,
        callback_url=callback,
        error=error,
        payload=payload,
        envelope=None if metadata is None else {"client_metadata": metadata},
        idempotency_key=key,
        request_hash=digest,
        callback_private=runtime.settings.allow_private_callbacks,
    )
    if not created:
        return _replay(job, runtime)
    if callback:
        runtime.deliveries_signal.notify()
    metrics.trigger_refused(service.id, wf.id, error.code)
    return error_response(error, job_id=job_id)


def _replay(job: StoredJob, runtime: Runtime) -> JSONResponse:
    """The answer first given for an Idempotency-Key: the refusal (422) or the job (200)."""
    code = job.error_code
    known = {c.value: c for c in ErrorCode}
    if job.deduplicated:
        return JSONResponse(accepted(job, runtime.settings.public_url), status_code=200)
    if (
        job.first_claimed_at is None
        and code in known
        and job.result
        and ERROR_SPECS[known[str(code)]].invalid_input
    ):
        stored = job.result["error"]
        error = InvalidInput(
            ErrorCode(stored["error_code"]), stored["error_description"], field=stored["field"]
        )
        return error_response(error, job_id=job.id)
    return JSONResponse(accepted(job, runtime.settings.public_url), status_code=200)


def _admission(
    runtime: Runtime, service: Service, wf: Workflow, given: dict[str, Any], priority: str
) -> Admission:
    """The flow-control facts of an accepted trigger: its priority, dedup key, backend (a
    sandbox service's jobs all run on procedural) and credit estimate."""
    return Admission(
        priority=PRIORITIES.get(priority, 1),
        dedup_key=None if wf.dedup is None else wf.dedup.key_of(given),
        dedup_window=0.0 if wf.dedup is None else wf.dedup.window,
        backend="procedural" if service.sandbox else wf.backend,
        estimate=0.0 if service.sandbox else runtime.catalog.estimate(wf, given),
        sandbox=service.sandbox,
    )


async def checked_submission(
    runtime: Runtime,
    service: Service,
    wf: Workflow,
    body: Any,
    key: str | None,
    digest: str | None,
) -> Submission:
    """The job row of a trigger of ``service`` once its input, envelope, callback target and
    media URLs are checked (``InvalidInput`` if not): what the group commit (or a batch)
    admits. Also used by :mod:`genhook.api.batches` for each item."""
    checked = runtime.catalog.validate(wf, body)
    await _check_target_async(checked.envelope.callback_url, runtime)
    await _check_media_async(wf, checked.input, runtime)
    return api_store(runtime).submission(
        service_id=service.id,
        workflow_id=wf.id,
        workflow_version=wf.version,
        trigger=checked.input,
        external_id=external_id(wf, checked.input),
        callback_url=checked.envelope.callback_url,
        envelope=checked.envelope.stored(),
        idempotency_key=key,
        request_hash=digest,
        callback_private=runtime.settings.allow_private_callbacks,
        job_id=new_job_id(),  # minted here; an idempotent replay answers the first job's id
        admission=_admission(runtime, service, wf, checked.input, checked.envelope.priority),
    )


async def accept_trigger(
    runtime: Runtime, service: Service, workflow_id: str, raw: bytes, key: str | None
) -> Response:
    """The answer to a trigger of ``service`` (already authenticated) with body ``raw``.

    Runs on the event loop: parsing, validation and the flow-control facts take microseconds
    (the schema is compiled); the insert waits for the group commit without holding a thread.
    Only what must block goes to the thread pool: resolving a callback host name, and
    recording an invalid trigger (rare, and it may outbox a callback)."""
    wf = runtime.catalog.workflow(workflow_id)
    try:
        body = parse_json(raw)
    except InvalidInput as exc:  # not strict JSON: refused before anything is stored
        return error_response(exc, job_id=None)
    digest = _request_hash(wf.id, body) if key else None
    try:
        item = await checked_submission(runtime, service, wf, body, key, digest)
    except InvalidInput as exc:
        return await run_in_threadpool(_reject, runtime, service, wf, body, exc, key, digest)
    store = api_store(runtime)
    try:
        job, created = await store.submit_async(item)
    except GenhookError as exc:
        if exc.code is ErrorCode.QUEUE_FULL:  # refused at the queue limit (429)
            metrics.trigger_refused(service.id, wf.id, exc.code)
        raise
    if not created:
        return _replay(job, runtime)
    runtime.jobs_signal.notify()
    metrics.trigger_accepted(service.id, wf.id)
    return JSONResponse(accepted(job, runtime.settings.public_url), status_code=202)


def _idempotency_key(headers: Headers) -> str | None:
    key = headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise GenhookError(
            ErrorCode.INVALID_VALUE,
            "Idempotency-Key must be 1 to 255 characters",
            field="idempotency-key",  # as the route's header validation names it
        )
    return key


_RUNS = re.compile(r"/v1/workflows/([^/]+)/runs")


class TriggerLane:
    """``POST /v1/workflows/{workflow_id}/runs`` answered straight from the ASGI scope.

    The trigger route is the hot path: it skips FastAPI's routing, dependency resolution and
    request wrapping (a third of its CPU when measured), and goes to the same handler as the
    route below (:func:`accept_trigger`), which stays for the OpenAPI document and for an app
    mounted without this lane. The middlewares outside it (body limit, catch-all) still apply.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            matched = _RUNS.fullmatch(scope["path"])
            if matched is not None:
                response = await self._answer(scope, receive, matched.group(1))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, workflow_id: str) -> Response:
        app = scope["app"]
        headers = Headers(scope=scope)
        header = headers.get("authorization", "")
        service = cached_service(app, header)
        if service is None:  # a database read: not on the event loop
            service = await run_in_threadpool(service_for, app, header)
        _check_media_type(headers.get("content-type"))
        key = _idempotency_key(headers)
        raw = await _body(receive)
        return await accept_trigger(app.state.runtime, service, workflow_id, raw, key)


async def _body(receive: Receive) -> bytes:
    """The whole request body (the body-limit middleware outside cuts it short)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


@router.post(
    "/v1/workflows/{workflow_id}/runs",
    status_code=202,
    openapi_extra=TRIGGER_BODY,
    summary="Trigger a workflow",
    response_model=None,
    responses={
        202: {
            "model": Accepted,
            "description": "Accepted: the job is durably queued.",
            "links": JOB_LINKS,
        },
        200: {
            "model": Accepted,
            "links": JOB_LINKS,
            "description": "An Idempotency-Key replay (the job first created for it), or a "
            "dedup key's match (`deduplicated: true`).",
        },
        404: error_doc("`unknown_workflow`: no workflow has this id (nothing is recorded)."),
        409: error_doc("`idempotency_conflict`: the key was used with another body."),
        413: error_doc("`payload_too_large`."),
        415: error_doc("`unsupported_media_type`: the body is not JSON."),
        422: {
            "model": InvalidTrigger,
            "description": "Invalid input: the trigger is recorded as a failed job (`job_id`; "
            "null for a body that is not strict JSON, which is not recorded).",
        },
        429: error_doc("`queue_full`: the service's queue limit; `Retry-After`."),
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
) -> Response:
    """Validate the trigger, durably queue a job, answer 202 with its id.

    Invalid input is answered at once with 422 and sent to a valid ``callback_url`` as a failed
    completion payload. ``Idempotency-Key``: the same key and body within 24 h returns the same
    job (200); another body, 409.
    """
    service = service_of(request)
    _check_media_type(request.headers.get("content-type"))
    key = _idempotency_key(request.headers)
    raw = await request.body()
    return await accept_trigger(runtime_of(request), service, workflow_id, raw, key)


@router.post(
    "/v1/workflows/{workflow_id}/dry-run",
    openapi_extra=TRIGGER_BODY,
    summary="Dry-run a trigger",
    response_model=None,
    responses={
        200: {"model": DryRun, "description": "What the trigger would do."},
        404: error_doc("`unknown_workflow`: no workflow has this id."),
        413: error_doc("`payload_too_large`."),
        415: error_doc("`unsupported_media_type`: the body is not JSON."),
        422: error_doc("Invalid input (nothing is recorded or sent)."),
    },
)
async def dry_run(workflow_id: str, request: Request) -> JSONResponse:
    """Validate and map the trigger without generating: prompt, style, outputs, credits."""
    service = service_of(request)
    _check_media_type(request.headers.get("content-type"))
    runtime = runtime_of(request)
    wf = runtime.catalog.workflow(workflow_id)
    checked = runtime.catalog.validate(wf, parse_json(await request.body()))
    _check_target(checked.envelope.callback_url, runtime)
    await _check_media_async(wf, checked.input, runtime)
    # a sandbox service's jobs run on procedural at 0 credits: so does its dry run
    plan = await run_in_threadpool(runtime.catalog.plan, wf, checked.input, sandbox=service.sandbox)
    return JSONResponse(plan)
