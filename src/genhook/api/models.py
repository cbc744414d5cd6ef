"""The shapes of the API's answers, for the OpenAPI document (and so for its readers and fuzzers).

Routes build their answers as plain JSON (:mod:`genhook.api.views` and friends) and return them
as they are: these models only *describe* them, attached with ``responses={status: {"model":
M}}``, never as a ``response_model`` that would filter or re-serialise a
field. A field is required when every answer has it, ``X | None`` when it may be null; a field
that only some answers carry has a default (it may be absent). Open parts (a trigger's
``input``, ``client_metadata``, a completion payload) are ``dict[str, Any]``.

The client's models (:mod:`genhook.client.models`) are its own, on purpose looser (they accept
what a later server adds, and parse times): these say exactly what this server sends.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genhook.api.errors import ErrorBody
from genhook.status import DeliveryStatus, JobStatus

Time = str
"""RFC 3339 UTC with milliseconds and ``Z`` (``2026-11-28T21:30:09.201Z``)."""
Open = dict[str, Any]
"""A JSON object whose fields the API does not fix (the caller's, or a workflow's)."""


class Answer(BaseModel):
    """Base of every answer's model: a field added later is no breaking change, so the document
    does not forbid unknown ones."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


# -- triggers, jobs, deliveries -----------------------------------------------------------------


class Accepted(Answer):
    """A trigger accepted (202), or the job an Idempotency-Key or dedup key already had (200)."""

    job_id: str
    status: JobStatus
    workflow_id: str
    status_url: str
    created_at: Time
    deduplicated: Literal[True] | None = Field(
        None, description="Present (true) only when the workflow's dedup key matched a job."
    )


class RetryAccepted(Accepted):
    """A retry accepted: the trigger's answer and the job it retries."""

    retry_of: str | None


class InvalidTrigger(ErrorBody):
    """A trigger refused as invalid input (422): the error, and the failed job recorded for it
    (``job_id`` null for a body that is not strict JSON, which is not recorded; absent when a
    header, not the body, is at fault)."""

    job_id: str | None = None


class AttemptError(Answer):
    error_code: str
    error_description: str


class AttemptView(Answer):
    """One claim of the job by a worker."""

    number: int
    worker: str | None
    started_at: Time | None
    ended_at: Time | None
    outcome: str | None = Field(description="succeeded, failed, cancelled, retrying, lost...")
    backend: str | None
    made: Any = Field(description="What the attempt generated (a count), or null.")
    credit_cost: float | None
    error: AttemptError | None


class JobView(Accepted):
    """``GET /v1/jobs/{job_id}``: the job, every attempt, and its completion payload once ended."""

    hold_reason: str | None = Field(description="While it waits: why (paused, rate, budget...).")
    eligible_at: Time | None
    priority: Literal["low", "normal", "high"]
    credit_cost: float | None
    workflow_version: int
    external_id: str | None
    callback_url: str | None
    client_metadata: Open | None
    updated_at: Time
    finished_at: Time | None
    next_attempt_at: Time | None
    cancel_requested: bool
    retry_of: str | None
    batch_id: str | None
    retried_by: list[str]
    attempts: list[AttemptView]
    result: Open | None = Field(description="The completion payload (payload.md) once ended.")


class JobPage(Answer):
    """``GET /v1/jobs``: one page, newest first; ``next_cursor`` null on the last page."""

    jobs: list[JobView]
    next_cursor: str | None


class JobEvent(Answer):
    """One Server-Sent Event of a job's stream (comment lines, ``: keep-alive``, are none)."""

    id: str = Field(description="Send it back as `Last-Event-ID` to resume after it.")
    event: str = Field(  # the names spelled out: the schema is inlined, with no $defs
        json_schema_extra={"enum": [*(str(s) for s in JobStatus), "progress"]}
    )
    data: str = Field(
        description="One line of JSON: `job_id`, `status`, `at`; the terminal event's `result` "
        "(the completion payload), a progress event's `progress`, a retry's `detail`.",
        json_schema_extra={"contentMediaType": "application/json"},
    )


class CancelAnswer(Answer):
    job_id: str
    status: JobStatus
    cancel_requested: bool


class DeliveryAttempt(Answer):
    number: int
    at: Time | None
    state: str | None = Field(description="sending, done or interrupted.")
    status_code: int | None
    error: str | None
    duration_ms: float | None


class DeliveryView(Answer):
    """One message (one ``webhook-id``) with every attempt at sending it."""

    delivery_id: str
    webhook_id: str
    job_id: str | None
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Time | None
    created_at: Time | None
    delivered_at: Time | None
    attempt_log: list[DeliveryAttempt]


class DeliveryLog(Answer):
    deliveries: list[DeliveryView]


class ReplayAnswer(Answer):
    delivery_id: str
    status: Literal[DeliveryStatus.PENDING]
    job_id: str | None


# -- batches ------------------------------------------------------------------------------------


class BatchEntry(Answer):
    """One item, at its index: its ``job_id`` (and, from GET, the job's ``status``; null once
    purged), or its own ``error``."""

    index: int
    job_id: str | None = None
    status: JobStatus | None = None
    deduplicated: Literal[True] | None = None
    replayed: Literal[True] | None = None
    error: ErrorBody | None = None


class BatchAccepted(Answer):
    batch_id: str
    workflow_id: str
    status_url: str
    items: list[BatchEntry]


class BatchCallback(Answer):
    delivery_id: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    delivered_at: Time | None


class BatchView(Answer):
    batch_id: str
    workflow_id: str
    status: Literal["open", "ended"]
    created_at: Time
    ended_at: Time | None
    callback_url: str | None
    callback: BatchCallback | None
    counts: dict[str, int] = Field(description="items, accepted, refused, and each job status.")
    items: list[BatchEntry]


# -- workflows ----------------------------------------------------------------------------------


class Dedup(Answer):
    key: list[str]
    window_seconds: float


class NodeView(Answer):
    name: str
    kind: str


class WorkflowView(Answer):
    """A workflow's integration contract."""

    workflow_id: str
    version: int
    description: str | None
    external_id_field: str | None
    input_schema: Open = Field(description="JSON Schema of the trigger's input fields.")
    additional_fields: str | bool | None = None
    dedup: Dedup | None
    timeout_seconds: float | None
    error_codes: list[Any]
    nodes: list[NodeView]


class WorkflowList(Answer):
    workflows: list[WorkflowView]


class DryRun(Answer):
    """What the trigger would do, without generating."""

    workflow_id: str
    version: int
    external_id: str | None
    input: Open
    style: str | None
    prompts: list[Any]
    outputs: list[Any]
    credit_estimate: Any
    steps: list[Any]


# -- health -------------------------------------------------------------------------------------


class Health(Answer):
    status: Literal["ok", "unavailable"]
    database: bool
    writable: bool
    reason: str | None = None


class Readiness(Answer):
    status: Literal["ready", "unavailable"]
    role: str
    reason: str | None = None
    store: Open | None = None
    storage: Open | None = None
    backends: dict[str, Open] | None = None


# -- reviews ------------------------------------------------------------------------------------


class HeldView(Answer):
    """A job held for review, with what a reviewer needs to decide."""

    job_id: str
    workflow_id: str
    external_id: str | None
    status: Literal["awaiting_review"]
    round: int
    held_at: Time | None
    outputs: list[Open]
    seo: Open | None
    metadata: Open | None
    quality_warning: Open | None
    quality: Any
    earlier_rounds: list[Open]
    service: str | None = Field(None, description="Operator routes only.")


class ReviewList(Answer):
    reviews: list[HeldView]


class Decided(Answer):
    job_id: str
    decision: Literal["approve", "reject"]
    status: JobStatus
    round: int


# -- schedules ----------------------------------------------------------------------------------


class ScheduleView(Answer):
    """A template schedule (its template's fields, and its state)."""

    schedule_id: str
    workflow_id: str
    id: str
    cron: str
    timezone: str
    service: str
    missed: str
    input: Open | None = None
    items: Open | None = None
    callback_url: str | None = None
    service_found: bool
    paused: bool
    paused_at: Time | None
    paused_by: str | None
    next_due_at: Time | None
    next_due_local: str | None
    last_due_at: Time | None
    last_fired_at: Time | None
    last_outcome: str | None
    last_error: str | None


class ScheduleFire(Answer):
    due_at: Time | None
    fired_at: Time | None
    outcome: str | None
    jobs_created: int | None
    jobs_replayed: int | None
    items_refused: int | None
    missed: Any
    job_ids: list[str]
    errors: list[Any]
    error: str | None


class ScheduleDetail(ScheduleView):
    fires: list[ScheduleFire]


class ScheduleList(Answer):
    schedules: list[ScheduleView]


# -- operator routes ----------------------------------------------------------------------------


class ServiceFigures(Answer):
    service: str
    paused: bool
    rate_limit: str | None
    daily_budget: float | None
    credits_today: float
    queued: int
    running: int
    workflows: list[Open]
    paused_at: Time | None
    paused_reason: str | None
    breaker: Literal["open", "closed"]
    on_budget: str
    test: bool
    budget_used: float | None
    credits_reserved: float
    held: dict[str, int]
    failed_deliveries: int
    disabled_endpoints: list[str]
    totals: Open
    retention: str | None


class OpsSummary(Answer):
    services: list[ServiceFigures]
    window: Literal["1h", "24h", "7d"]
    since: Time | None
    until: Time | None
    backends: list[Open]


class Resumed(Answer):
    service: str
    paused: Literal[False]
    resumed: bool
    released: int


class EndpointView(Answer):
    service: str
    endpoint: str
    state: Literal["enabled", "disabled"]
    failing_since: Time | None
    failed_attempts: int
    disabled_at: Time | None
    waiting: int
    updated_at: Time | None


class EndpointList(Answer):
    endpoints: list[EndpointView]


class Enabled(Answer):
    service: str
    endpoint: str
    state: Literal["enabled"]
    was_disabled: bool
    replayed: int


# -- links ----------------------------------------------------------------------------------------


def _ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


JOB_LINKS: dict[str, Any] = {
    name: {
        "operationRef": _ref(path, method),
        "parameters": {where: "$response.body#/job_id"},
        "description": description,
    }
    for name, path, method, where, description in (
        ("GetJob", "/v1/jobs/{job_id}", "get", "path.job_id", "The job this answer names."),
        ("CancelJob", "/v1/jobs/{job_id}/cancel", "post", "path.job_id", "Cancel it."),
        ("RetryJob", "/v1/jobs/{job_id}/retry", "post", "path.job_id", "Retry it once ended."),
        ("JobEvents", "/v1/jobs/{job_id}/events", "get", "path.job_id", "Follow it."),
        ("JobDeliveries", "/v1/deliveries", "get", "query.job_id", "Its delivery log."),
    )
}
"""OpenAPI links from an answer that names a job (``job_id``) to the routes about that job."""

BATCH_LINKS: dict[str, Any] = {
    "GetBatch": {
        "operationRef": _ref("/v1/batches/{batch_id}", "get"),
        "parameters": {"path.batch_id": "$response.body#/batch_id"},
        "description": "The batch this answer names.",
    }
}
