"""Jobs: get one, list them (filters, keyset pages), follow its events, cancel, retry."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from genhook import metrics
from genhook.api.auth import api_store, bearer, owned, runtime_of, service_of
from genhook.api.errors import RESPONSES, ErrorBody, error_doc, error_response, json_errors
from genhook.api.models import JOB_LINKS, CancelAnswer, JobEvent, JobPage, JobView, RetryAccepted
from genhook.api.reviews import cancel_held
from genhook.api.streams import RETRY_AFTER_SECONDS, EventStreamResponse, sse_event, stream_slots
from genhook.api.triggers import _admission, _check_target_async, _idempotency_key
from genhook.api.views import accepted, job_view
from genhook.contract.completion import job_failure_payload
from genhook.errors import ERROR_SPECS, ErrorCode, GenhookError
from genhook.ids import new_job_id
from genhook.retention import expired_job
from genhook.status import TERMINAL, JobStatus
from genhook.store.listing import DEFAULT_LIMIT, MAX_LIMIT, Cursor, JobFilter, as_retry
from genhook.store.ports import ApiStore
from genhook.store.records import Service, StoredJob

EXTERNAL_ID_LIMIT = 100
"""The default page of ``?external_id=`` (what that search returned before the listing)."""
RetryKey = Annotated[
    str | None,
    Header(min_length=1, max_length=255, description="The same key within 24 h: the same retry."),
]

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])
EXPIRED: dict[int | str, dict[str, Any]] = {
    410: error_doc("`job_expired`: the job ended longer ago than its retention.")
}


def owned_job(store: ApiStore, job_id: str, service: Service) -> StoredJob:
    """The caller's job ``job_id``: 404 when there is none, 403 when it is another service's,
    410 ``job_expired`` when retention purged it (every route about one job answers alike)."""
    found = store.job(job_id)
    if found is None:
        expired_job(store, job_id, lambda tombstone: owned(tombstone, service))
    return owned(found, service)


@router.get(
    "/v1/jobs/{job_id}",
    summary="Get a job",
    response_model=None,
    responses={200: {"model": JobView, "description": "The job."}, **EXPIRED},
)
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """Status, every attempt with its error reason, and the completion payload once ended."""
    service = service_of(request)
    runtime = runtime_of(request)
    store = api_store(runtime)
    job = owned_job(store, job_id, service)
    return job_view(
        job,
        store.attempts(job_id),
        runtime.settings.public_url,
        paused=store.paused(service.id),
        now=runtime.clock.now(),
        retried_by=store.retried_by(job_id),
    )


def _moment(text: str | None, name: str) -> float | None:
    """An ISO 8601 time with a UTC offset as epoch seconds; ``invalid_value`` naming the
    query parameter otherwise."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise GenhookError(
            ErrorCode.INVALID_VALUE,
            f"{name} = {text[:40]!r} is not an ISO 8601 time (like 2026-11-28T12:00:00Z)",
            field=name,
        ) from None
    if when.tzinfo is None:
        raise GenhookError(
            ErrorCode.INVALID_VALUE,
            f"{name} needs a UTC offset (Z or +01:00): a local time is ambiguous",
            field=name,
        )
    return when.timestamp()


def _statuses(text: str | None) -> tuple[JobStatus, ...]:
    """``status=failed`` or ``status=failed,cancelled``: the job states to list."""
    if text is None:
        return ()
    known = {str(s) for s in JobStatus}
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name not in known:
            raise GenhookError(
                ErrorCode.INVALID_VALUE,
                f"status {name[:40]!r} is not a job status (one of: {', '.join(sorted(known))})",
                field="status",
            )
    return tuple(JobStatus(name) for name in dict.fromkeys(names))


@router.get(
    "/v1/jobs",
    summary="List jobs",
    response_model=None,
    responses={
        200: {"model": JobPage, "description": "One page of the service's jobs."},
        422: {
            "model": ErrorBody,
            "description": "`invalid_value` naming the bad filter (`status`, `created_after`, "
            "`created_before`, `limit`, ...), or `invalid_cursor` (field `cursor`).",
        },
    },
)
def list_jobs(
    request: Request,
    status: Annotated[
        str | None,
        Query(description="A job status, or several separated by commas (`failed,cancelled`)."),
    ] = None,
    workflow_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    external_id: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Your own id of the job.")
    ] = None,
    created_after: Annotated[
        str | None, Query(description="ISO 8601 with offset: jobs created at or after it.")
    ] = None,
    created_before: Annotated[
        str | None, Query(description="ISO 8601 with offset: jobs created before it.")
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description=f"Jobs per page, 1 to {MAX_LIMIT}; default {DEFAULT_LIMIT} "
            f"({EXTERNAL_ID_LIMIT} with `external_id`, as before the listing).",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=300, description="The `next_cursor` of the page before."),
    ] = None,
) -> dict[str, Any]:
    """The calling service's jobs, newest first (by creation, then id), filtered, a page at a
    time: ``{"jobs": [...], "next_cursor"}``, ``next_cursor`` null on the last page. Each job
    is as ``GET /v1/jobs/{job_id}`` shows it. Pages come from an opaque keyset cursor: stable
    while jobs are added (no job is listed twice or skipped), and as fast at any depth."""
    service = service_of(request)
    runtime = runtime_of(request)
    store = api_store(runtime)
    filters = JobFilter(
        statuses=_statuses(status),
        workflow_id=workflow_id,
        external_id=external_id,
        created_after=_moment(created_after, "created_after"),
        created_before=_moment(created_before, "created_before"),
    )
    after = None if cursor is None else Cursor.decode(cursor, filters)
    if limit is None:
        limit = EXTERNAL_ID_LIMIT if external_id is not None else DEFAULT_LIMIT
    page = store.list_jobs(service.id, filters, limit=limit, after=after)
    paused, now = store.paused(service.id), runtime.clock.now()
    return {
        "jobs": [
            job_view(
                row,
                page.attempts.get(row.id, []),
                runtime.settings.public_url,
                paused=paused,
                now=now,
                retried_by=page.retried_by.get(row.id),
            )
            for row in page.jobs
        ],
        "next_cursor": None if page.next_cursor is None else page.next_cursor.encode(),
    }


@router.post(
    "/v1/jobs/{job_id}/cancel",
    summary="Cancel a job",
    status_code=202,
    responses={
        202: {"model": CancelAnswer, "description": "Cancelled, or asked to stop."},
        409: error_doc("`not_cancellable`: the job has already ended."),
        **EXPIRED,
    },
)
def cancel_job(job_id: str, request: Request) -> JSONResponse:
    """A queued job ends at once as cancelled; a running one stops before its next step, and
    ends cancelled unless its finishing transaction came first (then 409, as for any ended
    job)."""
    service = service_of(request)
    runtime = runtime_of(request)
    job = owned_job(api_store(runtime), job_id, service)
    if job.status in TERMINAL:
        raise GenhookError(ErrorCode.NOT_CANCELLABLE, f"the job has already {job.status}")
    if job.status is JobStatus.AWAITING_REVIEW and cancel_held(runtime, job_id):
        return JSONResponse(
            {"job_id": job_id, "status": JobStatus.CANCELLED, "cancel_requested": True}, 202
        )
    status = api_store(runtime).cancel(
        job_id, lambda row: job_failure_payload(row, GenhookError(ErrorCode.CANCELLED)).to_json()
    )
    if status in TERMINAL and status is not JobStatus.CANCELLED:
        raise GenhookError(ErrorCode.NOT_CANCELLABLE, f"the job has already {status}")
    if status is JobStatus.CANCELLED:
        runtime.deliveries_signal.notify()
    runtime.events_signal.notify()
    return JSONResponse(
        {"job_id": job_id, "status": status, "cancel_requested": True}, status_code=202
    )


@router.post(
    "/v1/jobs/{job_id}/retry",
    summary="Retry an ended job",
    status_code=202,
    responses={
        202: {
            "model": RetryAccepted,
            "description": "The retry is queued as a new job.",
            "links": JOB_LINKS,
        },
        200: {
            "model": RetryAccepted,
            "description": "An Idempotency-Key replay: the job first created for it.",
        },
        **EXPIRED,
        409: {
            "model": ErrorBody,
            "description": "`not_retryable`: the job has not ended yet, or was a trigger "
            "refused as invalid input; `workflow_changed`: its workflow version is no longer "
            "the installed one; `idempotency_conflict`: the key was used for another request.",
        },
        429: {"model": ErrorBody, "description": "`queue_full`, with `Retry-After`."},
    },
)
async def retry_job(
    job_id: str,
    request: Request,
    idempotency_key: RetryKey = None,
) -> Response:
    """A new job with the same input, workflow and version, external id, callback and
    envelope (but ``deadline``, which would have passed) as an ended one (succeeded, failed,
    cancelled or expired), linked by ``retry_of``; the old job lists it in ``retried_by``.
    Accepted like a trigger: ``202 {"job_id", "status", ..., "retry_of"}``, with the same flow
    control (queue limit, rate limit, storm breaker; the budget and backend breakers when it
    starts) and, for a sandbox service, the procedural backend at 0 credits. No deduplication:
    a retry is asked for by name."""
    service = await run_in_threadpool(service_of, request)
    runtime = runtime_of(request)
    store = api_store(runtime)
    found = await run_in_threadpool(store.job, job_id)
    if found is None:  # 410 job_expired when retention purged it
        await run_in_threadpool(
            expired_job, store, job_id, lambda tombstone: owned(tombstone, service)
        )
    old = owned(found, service)
    if old.status not in TERMINAL:
        raise GenhookError(
            ErrorCode.NOT_RETRYABLE,
            f"the job is {old.status}: only an ended job (succeeded, failed, cancelled, "
            "expired) is retried; cancel it first, or wait for its end",
        )
    if _refused_at_the_edge(old):
        raise GenhookError(
            ErrorCode.NOT_RETRYABLE,
            f"the job is a trigger refused as invalid input ({old.error_code}): the same input "
            "would be refused again; send a corrected trigger",
        )
    wf = runtime.catalog.workflow(old.workflow_id)
    if wf.version != old.workflow_version:
        raise GenhookError(
            ErrorCode.WORKFLOW_CHANGED,
            f"the job ran {wf.id} version {old.workflow_version}, and version {wf.version} is "
            "installed now: send a new trigger to run the new version",
        )
    key = _idempotency_key(request.headers)
    stored = dict(old.envelope or {})
    if "deadline" in stored:
        stored["deadline"] = None  # the old one was about the old job's start
    await _check_target_async(old.callback_url, runtime)
    item = store.submission(
        service_id=service.id,
        workflow_id=old.workflow_id,
        workflow_version=old.workflow_version,
        trigger=old.input,
        external_id=old.external_id,
        callback_url=old.callback_url,
        envelope=stored if old.envelope is not None else None,
        idempotency_key=key,
        request_hash=hashlib.sha256(f"retry:{old.id}".encode()).hexdigest() if key else None,
        callback_private=runtime.settings.allow_private_callbacks,
        job_id=new_job_id(),
        admission=replace(
            _admission(runtime, service, wf, old.input, str(stored.get("priority", "normal"))),
            dedup_key=None,
            dedup_window=0.0,
        ),
    )
    try:
        job, created = await store.submit_async(as_retry(item, old.id))
    except GenhookError as exc:
        if exc.code is ErrorCode.QUEUE_FULL:
            metrics.trigger_refused(service.id, wf.id, exc.code)
        raise
    answer = {**accepted(job, runtime.settings.public_url), "retry_of": job.retry_of}
    if not created:
        return JSONResponse(answer, status_code=200)
    runtime.jobs_signal.notify()
    metrics.trigger_accepted(service.id, wf.id)
    return JSONResponse(answer, status_code=202)


def _refused_at_the_edge(job: StoredJob) -> bool:
    """A trigger answered 422: recorded as failed with an invalid-input code, never claimed."""
    known = {c.value: c for c in ErrorCode}
    code = known.get(str(job.error_code))
    return job.first_claimed_at is None and code is not None and ERROR_SPECS[code].invalid_input


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Follow a job (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": JobEvent.model_json_schema()}},
            "description": "Server-Sent Events, one per state change, until the job ends.",
        },
        **json_errors(
            {
                **RESPONSES,
                **EXPIRED,
                429: error_doc(
                    "`too_many_streams`: the service already has "
                    "`GENHOOK_MAX_STREAMS_PER_SERVICE` streams open (20 by default); `Retry-After`."
                ),
            }
        ),
    },
)
async def job_events(job_id: str, request: Request) -> Response:
    """One SSE event per state change (``event: queued|running|retrying|succeeded|...``), and
    ``event: progress`` (``data.progress``: step, total, percent; at most one every 2 s) while a
    backend reports progress; the last carries the completion payload and the stream then
    ends. ``Last-Event-ID`` resumes."""
    service = await run_in_threadpool(service_of, request)
    runtime = runtime_of(request)
    await run_in_threadpool(owned_job, api_store(runtime), job_id, service)
    try:
        after = int(request.headers.get("last-event-id", "0"))
    except ValueError:
        after = 0
    slots = stream_slots(request.app)
    if not slots.take(service.id):
        response = error_response(
            GenhookError(
                ErrorCode.TOO_MANY_STREAMS,
                f"this service already has {slots.limit} event streams open: close one, "
                f"or poll GET /v1/jobs/{job_id}",
            )
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    async def stream() -> AsyncGenerator[bytes, None]:
        nonlocal after
        with runtime.events_signal.listening(asyncio.get_running_loop()) as wake:
            yield b": genhook job events\n\n"
            while True:
                wake.clear()
                rows = await run_in_threadpool(api_store(runtime).events, job_id, after)
                for row in rows:
                    after = row.id
                    yield sse_event(job_id, row)
                    if row.status in TERMINAL:
                        return
                if await request.is_disconnected():
                    return
                try:
                    await asyncio.wait_for(wake.wait(), timeout=runtime.settings.poll_seconds)
                except TimeoutError:
                    yield b": keep-alive\n\n"

    return EventStreamResponse(
        stream(),
        on_close=lambda: slots.give_back(service.id),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
