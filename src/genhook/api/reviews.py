"""The review queue over HTTP: a service's held jobs and its decisions on them, the same for the
operator (every service's) under ``/v1/ops``, and the dashboard's review page
(``/dashboard/reviews``, whose forms post to ``/dashboard/jobs/{job_id}/review`` with the
session's CSRF token, as the dashboard's other forms do). See :mod:`genhook.review`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from genhook.api.auth import api_store, bearer, owned, runtime_of, service_of
from genhook.api.dashboard import back, checked, form_of, html, operator_of, to_login
from genhook.api.errors import RESPONSES, ErrorBody
from genhook.api.models import Decided as DecidedAnswer
from genhook.api.models import ReviewList
from genhook.api.ops import OPERATOR_RESPONSES, operator_bearer, require_operator
from genhook.api.views import iso
from genhook.contract.completion import job_failure_payload
from genhook.dashboard import pages
from genhook.errors import ErrorCode, GenhookError
from genhook.review import FIELDS, ReviewBody, check_review, parse_review
from genhook.runtime import Runtime
from genhook.storage_s3 import url_refresher
from genhook.store.ops import DEFAULT_WINDOW
from genhook.store.reviews import Decided, HeldReview

router = APIRouter(responses=RESPONSES, dependencies=[Security(bearer)])
ops_router = APIRouter(responses=OPERATOR_RESPONSES, dependencies=[Security(operator_bearer)])

REVIEW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": DecidedAnswer, "description": "Decided."},
    409: {
        "model": ErrorBody,
        "description": "`not_awaiting_review`: the job is not held for review now (never was, "
        "or it was approved, rejected or cancelled already).",
    },
    422: {
        "model": ErrorBody,
        "description": "`invalid_json`, `unknown_field` or `invalid_review` (`field` names "
        "what is wrong: a decision other than approve or reject, a reject without a note, "
        "alt_text or caption on a reject, an empty or too long text).",
    },
}
REVIEW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["decision"],
                    "additionalProperties": False,
                    "properties": {
                        "decision": {"enum": ["approve", "reject"]},
                        "note": {
                            "type": "string",
                            "maxLength": 1000,
                            "description": "Required to reject: folded into the prompt.",
                        },
                        "alt_text": {
                            "type": "string",
                            "maxLength": 1000,
                            "description": "Approve only: replaces every output's alt text.",
                        },
                        "caption": {
                            "type": "string",
                            "maxLength": 2200,
                            "description": "Approve only: replaces every output's caption.",
                        },
                    },
                }
            }
        },
    }
}


def held_view(held: HeldReview, *, operator: bool = False) -> dict[str, Any]:
    """One held job: its outputs (asset URLs, alt text, caption), SEO text, metadata, QC
    figures (``quality_warning`` and every quality check's report), and earlier rounds."""
    payload = held.payload
    view: dict[str, Any] = {
        "job_id": held.job_id,
        "workflow_id": held.workflow_id,
        "external_id": held.external_id,
        "status": "awaiting_review",
        "round": held.round,
        "held_at": iso(held.held_at),
        "outputs": payload.get("outputs") or [],
        "seo": payload.get("seo"),
        "metadata": payload.get("metadata"),
        "quality_warning": payload.get("quality_warning"),
        "quality": held.quality,
        "earlier_rounds": [{**h, "decided_at": iso(h["decided_at"])} for h in held.history],
    }
    if operator:
        view["service"] = held.service
    return view


def decided_view(done: Decided) -> dict[str, Any]:
    return {
        "job_id": done.job_id,
        "decision": done.decision,
        "status": done.status,
        "round": done.round,
    }


async def _decide(request: Request, job_id: str, review: ReviewBody, by: str) -> Decided:
    runtime = runtime_of(request)
    urls = url_refresher(runtime.storage)  # presigned URLs signed at hold time, signed again
    store = api_store(runtime)
    done = await run_in_threadpool(store.decide_review, job_id, review, by=by, urls=urls)
    if done.status == "succeeded":
        runtime.deliveries_signal.notify()
    else:
        runtime.jobs_signal.notify()
    runtime.events_signal.notify()
    return done


@router.get(
    "/v1/reviews",
    summary="Jobs held for review",
    response_model=None,
    responses={200: {"model": ReviewList, "description": "The held jobs."}},
)
def list_reviews(
    request: Request, limit: int = Query(100, ge=1, le=500, description="At most this many.")
) -> dict[str, Any]:
    """The calling service's jobs that a workflow's QC policy (`on_fail: review`) held for a
    person (`status: awaiting_review`), longest held first: each with its outputs (asset URLs,
    alt text, caption), `seo`, `metadata` (`prompt_used`, ...), `quality_warning` (what failed,
    by how much), every quality check's report, and its earlier review rounds."""
    service = service_of(request)
    runtime = runtime_of(request)  # presigned URLs signed at hold time, signed again
    held = api_store(runtime).held_reviews(service.id, limit, url_refresher(runtime.storage))
    return {"reviews": [held_view(h) for h in held]}


@router.post(
    "/v1/jobs/{job_id}/review",
    summary="Approve or reject a held job",
    response_model=None,
    responses=REVIEW_RESPONSES,
    openapi_extra=REVIEW_BODY,
)
async def review_job(job_id: str, request: Request) -> dict[str, Any]:
    """`{"decision": "approve" or "reject", "note", "alt_text", "caption"}`. Approve: the job
    ends `succeeded` and its completion payload goes to its callback, with `alt_text` and
    `caption` (when given) on every output and in `seo`; its `quality_warning` still lists
    every check that failed, its message saying a reviewer approved it. Reject (`note`
    required): the job generates again (status `queued`), the note folded into its prompt."""
    service = await run_in_threadpool(service_of, request)
    review = parse_review(await request.body())
    store = api_store(runtime_of(request))
    owned(await run_in_threadpool(store.job, job_id), service)
    done = await _decide(request, job_id, review, f"service:{service.name}")
    return decided_view(done)


@ops_router.get(
    "/v1/ops/reviews",
    summary="Every service's jobs held for review",
    response_model=None,
    responses={200: {"model": ReviewList, "description": "The held jobs."}},
)
def ops_reviews(
    request: Request, limit: int = Query(100, ge=1, le=500, description="At most this many.")
) -> dict[str, Any]:
    """Operator key: what `GET /v1/reviews` answers, for every service (each with `service`)."""
    require_operator(request)
    runtime = runtime_of(request)
    held = api_store(runtime).held_reviews(None, limit, url_refresher(runtime.storage))
    return {"reviews": [held_view(h, operator=True) for h in held]}


@ops_router.post(
    "/v1/ops/jobs/{job_id}/review",
    summary="Approve or reject a held job (operator)",
    response_model=None,
    responses=REVIEW_RESPONSES,
    openapi_extra=REVIEW_BODY,
)
async def ops_review_job(job_id: str, request: Request) -> dict[str, Any]:
    """Operator key: what `POST /v1/jobs/{job_id}/review` does, for any service's job."""
    require_operator(request)
    review = parse_review(await request.body())
    return decided_view(await _decide(request, job_id, review, "operator"))


def cancel_held(runtime: Runtime, job_id: str) -> bool:
    """Cancel a job held for review (``POST /v1/jobs/{job_id}/cancel``): it ends
    ``cancelled``, its cancelled payload outboxed. False when it is not held now."""
    failed = GenhookError(ErrorCode.CANCELLED)
    status = api_store(runtime).cancel_held(
        job_id, lambda row: job_failure_payload(row, failed).to_json()
    )
    if status is None:
        return False
    runtime.deliveries_signal.notify()
    runtime.events_signal.notify()
    return True


# -- the dashboard's review page (operator key or session; forms with the CSRF token) ----------

dashboard_router = APIRouter(responses=OPERATOR_RESPONSES)


def _page(
    request: Request,
    csrf: str | None,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    rows = api_store(runtime_of(request)).held_reviews(None, 100)
    text = pages.reviews(DEFAULT_WINDOW, rows, csrf=csrf, notice=notice, error=error)
    return html(text, status_code)


@dashboard_router.get("/dashboard/reviews", include_in_schema=False)
def reviews_page(
    request: Request, done: str | None = None, decision: str | None = None
) -> Response:
    operator = operator_of(request)
    if operator is None:
        return to_login()
    notice = None
    if done and decision == "approve":
        notice = f"Approved {done[:40]}: its completion payload is on its way."
    elif done and decision == "reject":
        notice = f"Rejected {done[:40]}: it generates again with your note."
    return _page(request, operator.csrf, notice=notice)


@dashboard_router.post("/dashboard/jobs/{job_id}/review", include_in_schema=False)
async def review_form(job_id: str, request: Request) -> Response:
    """The page's approve and reject forms: a blank alt text or caption is no edit."""
    form = await form_of(request)
    operator = checked(request, form)
    fields = {k: v for k, v in form.items() if k in FIELDS and (k == "decision" or v.strip())}
    try:
        review = check_review(fields)
        await _decide(request, job_id, review, "operator")
    except GenhookError as exc:
        if exc.code not in (ErrorCode.INVALID_REVIEW, ErrorCode.NOT_AWAITING_REVIEW):
            raise
        status = 409 if exc.code is ErrorCode.NOT_AWAITING_REVIEW else 422
        return await run_in_threadpool(
            _page, request, operator.csrf, error=exc.description, status_code=status
        )
    query = f"done={quote(job_id, safe='')}&decision={review.decision}"
    return back(f"/dashboard/reviews?{query}")
