"""Jobs: get one, find by external id, follow its events, cancel it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from genhook.api.auth import api_store, bearer, owned, runtime_of, service_of
from genhook.api.errors import RESPONSES, ErrorBody, error_response
from genhook.api.streams import RETRY_AFTER_SECONDS, EventStreamResponse, sse_event, stream_slots
from genhook.api.views import job_view
from genhook.contract.completion import job_failure_payload
from genhook.errors import ErrorCode, GenhookError
from genhook.retention import expired_job
from genhook.status import TERMINAL, JobStatus

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])


@router.get("/v1/jobs/{job_id}", summary="Get a job")
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """Status, every attempt with its error reason, and the completion payload once ended."""
    service = service_of(request)
    runtime = runtime_of(request)
    store = api_store(runtime)
    found = store.job(job_id)
    if found is None:  # 410 job_expired when retention purged it
        expired_job(store, job_id, lambda tombstone: owned(tombstone, service))
    job = owned(found, service)
    return job_view(
        job,
        store.attempts(job_id),
        runtime.settings.public_url,
        paused=store.paused(service.id),
        now=runtime.clock.now(),
    )


@router.get("/v1/jobs", summary="Find jobs by your own id")
def find_jobs(
    request: Request, external_id: str = Query(min_length=1, max_length=200)
) -> dict[str, Any]:
    """The calling service's jobs whose ``external_id`` matches, newest first (at most 100)."""
    service = service_of(request)
    runtime = runtime_of(request)
    store = api_store(runtime)
    rows = store.jobs_by_external_id(service.id, external_id)
    paused, now = store.paused(service.id), runtime.clock.now()
    return {
        "jobs": [
            job_view(
                row,
                store.attempts(row.id),
                runtime.settings.public_url,
                paused=paused,
                now=now,
            )
            for row in rows
        ]
    }


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a job", status_code=202)
def cancel_job(job_id: str, request: Request) -> JSONResponse:
    """A queued job ends at once as cancelled; a running one stops before its next step, and
    ends cancelled unless its finishing transaction came first (then 409, as for any ended
    job)."""
    service = service_of(request)
    runtime = runtime_of(request)
    job = owned(api_store(runtime).job(job_id), service)
    if job.status in TERMINAL:
        raise GenhookError(ErrorCode.NOT_CANCELLABLE, f"the job has already {job.status}")
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


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Follow a job (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        429: {
            "model": ErrorBody,
            "description": "`too_many_streams`: the service already has "
            "`GENHOOK_MAX_STREAMS_PER_SERVICE` streams open (20 by default); `Retry-After`.",
        }
    },
)
async def job_events(job_id: str, request: Request) -> Response:
    """One SSE event per state change (``event: queued|running|retrying|succeeded|...``), and
    ``event: progress`` (``data.progress``: step, total, percent; at most one every 2 s) while a
    backend reports progress; the last carries the completion payload and the stream then
    ends. ``Last-Event-ID`` resumes."""
    service = await run_in_threadpool(service_of, request)
    runtime = runtime_of(request)
    owned(await run_in_threadpool(api_store(runtime).job, job_id), service)
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
