"""Typed results of the client: pydantic models mirroring the public contract.

Every model accepts fields it does not name (``extra="allow"``, kept on the instance): a field
genhook adds later is non-breaking for the contract, so it must be for a client too. These
models are the client's own, written from ``docs/contract.md``; they import nothing of the
server, so ``from genhook import Client`` pulls in httpx and pydantic only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
"""A job in one of these has ended (``GET /v1/jobs/{id}``'s ``status``)."""


class Model(BaseModel):
    """Base of every result: unknown fields kept, not refused."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True)


class ErrorInfo(Model):
    """Why something failed: a stable ``error_code``, its text, and the input ``field`` at
    fault (``None`` where no field is)."""

    error_code: str
    error_description: str = ""
    field: str | None = None


class Output(Model):
    """One delivered file of a completion payload."""

    asset_url: str
    asset_type: Literal["image", "video"] | str
    format: str
    width: int
    height: int
    platform_code: str
    bytes: int
    sha256: str
    alt_text: str
    filename_suggestion: str
    caption: str
    duration_seconds: float | None = None
    fps: float | None = None
    poster_url: str | None = None
    phash: str | None = None
    url_expires_at: datetime | None = None
    poster_url_expires_at: datetime | None = None


class Seo(Model):
    """The job's SEO text."""

    alt_text: str
    filename_suggestion: str
    caption: str


class PayloadMetadata(Model):
    """How the outputs were made (the payload's ``metadata``)."""

    prompt_used: str | None = None
    negative_prompt: str | None = None
    model_id: str | None = None
    credit_cost: float = 0.0
    processing_time_seconds: float = 0.0
    attempts: int = 0
    seed: int | None = None
    generations: int = 0


class FailedCheck(Model):
    """A quality check a delivered output failed."""

    node: str | None = None
    check: str
    measured: float
    threshold: float
    comparison: str
    shortfall: float


class QualityWarning(Model):
    """Present when the workflow's policy delivered the best output that did not pass QC."""

    message: str
    failed_checks: list[FailedCheck] = Field(default_factory=list)


class CompletionPayload(Model):
    """Schema version 1: POSTed to ``callback_url`` when a job ends, and the ``result`` of a
    job that has ended."""

    schema_version: str = "1"
    event: Literal["job.completed", "job.failed"] | str
    job_id: str
    workflow_id: str
    status: Literal["success", "failed"] | str
    external_id: str | None = None
    outputs: list[Output] = Field(default_factory=list)
    seo: Seo | None = None
    metadata: PayloadMetadata | None = None
    quality_warning: QualityWarning | None = None
    error: ErrorInfo | None = None
    timestamp: datetime
    client_metadata: dict[str, Any] | None = None
    test: bool = False

    @property
    def succeeded(self) -> bool:
        """True for a ``job.completed`` (``status: success``) payload."""
        return self.status == "success"


class Accepted(Model):
    """The answer to a trigger: the job's id at once (``deduplicated`` when a template's dedup
    key matched an earlier job, ``replayed`` when the Idempotency-Key had been used: 200)."""

    job_id: str
    status: str
    workflow_id: str
    status_url: str
    created_at: datetime
    deduplicated: bool = False
    replayed: bool = False
    retry_of: str | None = None


class Attempt(Model):
    """One attempt of a job."""

    number: int
    worker: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    backend: str | None = None
    made: Any = None
    credit_cost: float | None = None
    error: ErrorInfo | None = None


class Job(Model):
    """``GET /v1/jobs/{job_id}``: the job's state, its attempts, and once it has ended its
    completion payload under ``result``."""

    job_id: str
    status: str
    workflow_id: str
    status_url: str | None = None
    created_at: datetime | None = None
    hold_reason: str | None = None
    eligible_at: datetime | None = None
    priority: str | None = None
    credit_cost: float | None = None
    workflow_version: int | str | None = None
    external_id: str | None = None
    callback_url: str | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    cancel_requested: bool = False
    attempts: list[Attempt] = Field(default_factory=list)
    result: CompletionPayload | None = None
    retry_of: str | None = None
    retried_by: list[str] | None = None

    @property
    def ended(self) -> bool:
        """True once the job is in a terminal status (nothing moves it again)."""
        return self.status in TERMINAL_STATUSES


class JobPage(Model):
    """One page of ``GET /v1/jobs``: ``next_cursor`` is ``None`` on the last page."""

    jobs: list[Job] = Field(default_factory=list)
    next_cursor: str | None = None


class CancelResult(Model):
    """The answer to a cancel: ``status`` is ``cancelled`` for a job that was waiting, still
    ``running`` for one that stops before its next step."""

    job_id: str
    status: str
    cancel_requested: bool = True


class JobEvent(Model):
    """One Server-Sent Event of ``GET /v1/jobs/{job_id}/events``: ``event`` is the status the
    change records (``queued``, ``running``, ``retrying``, ``succeeded``, ...) or ``progress``;
    the terminal one carries the completion payload as ``result``."""

    id: str | None = None
    event: str
    job_id: str
    status: str
    at: datetime | None = None
    progress: dict[str, Any] | None = None
    detail: dict[str, Any] | None = None
    result: CompletionPayload | None = None

    @property
    def terminal(self) -> bool:
        """True for the job's last event (the stream ends after it)."""
        return self.status in TERMINAL_STATUSES


class BatchItem(Model):
    """One item of a batch, in the order sent: a ``job_id``, or that item's own ``error``."""

    index: int
    job_id: str | None = None
    error: ErrorInfo | None = None
    status: str | None = None
    replayed: bool = False
    deduplicated: bool = False


class Batch(Model):
    """``POST /v1/workflows/{id}/batches``'s answer and ``GET /v1/batches/{batch_id}``: the
    items in order, and (from GET) its status and counts by status."""

    batch_id: str
    items: list[BatchItem] = Field(default_factory=list)
    status: str | None = None
    counts: dict[str, int] | None = None
    workflow_id: str | None = None
    status_url: str | None = None
    created_at: datetime | None = None
    ended_at: datetime | None = None
    callback_url: str | None = None

    @property
    def job_ids(self) -> list[str]:
        """The accepted items' job ids, in order."""
        return [item.job_id for item in self.items if item.job_id is not None]

    @property
    def errors(self) -> list[BatchItem]:
        """The refused items (each with its ``error``)."""
        return [item for item in self.items if item.error is not None]


class Workflow(Model):
    """A template as ``GET /v1/workflows/{id}`` shows it: the integration contract."""

    workflow_id: str
    version: int | str | None = None
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    error_codes: list[Any] = Field(default_factory=list)


class DryRun(Model):
    """``POST /v1/workflows/{id}/dry-run``: what a trigger would do, without generating."""

    workflow_id: str | None = None
    version: int | str | None = None
    external_id: str | None = None
    input: dict[str, Any] | None = None
    style: str | None = None
    prompts: list[Any] = Field(default_factory=list)
    outputs: list[Any] = Field(default_factory=list)
    credit_estimate: dict[str, Any] | float | None = None
    steps: list[Any] = Field(default_factory=list)


class Review(Model):
    """A job a workflow's QC policy held for a person (``status: awaiting_review``), with its
    outputs, SEO text, QC figures (``quality_warning``, every check's report under
    ``quality``) and its earlier review rounds."""

    job_id: str
    status: str = "awaiting_review"
    workflow_id: str | None = None
    external_id: str | None = None
    round: int | None = None
    held_at: datetime | None = None
    outputs: list[Output] = Field(default_factory=list)
    seo: Seo | None = None
    metadata: PayloadMetadata | None = None
    quality_warning: QualityWarning | None = None
    quality: Any = None
    earlier_rounds: list[dict[str, Any]] = Field(default_factory=list)


class ReviewDecision(Model):
    """The answer to a review decision: the job's ``status`` after it (an approved job goes on
    to deliver; a rejected one is ``queued`` to generate again)."""

    job_id: str
    decision: str
    status: str
    round: int | None = None


class ReviewPage(Model):
    """``GET /v1/reviews``."""

    reviews: list[Review] = Field(default_factory=list)
    next_cursor: str | None = None


# -- webhook payloads other than the completion -------------------------------------------------


class JobStatusEvent(Model):
    """A ``job.started`` or ``job.progress`` callback (sent when the trigger asked for it in
    ``callback_events``)."""

    schema_version: str = "1"
    event: str
    job_id: str
    workflow_id: str | None = None
    status: str | None = None
    external_id: str | None = None
    attempt: int | None = None
    progress: dict[str, Any] | None = None
    client_metadata: dict[str, Any] | None = None
    timestamp: datetime | None = None
    test: bool = False


class BatchEvent(Model):
    """A batch's ``batch.completed`` callback, sent once every job of the batch has ended:
    ``counts`` (``items``, ``accepted``, ``refused``, ``created``, and each end status)."""

    event: str
    batch_id: str
    workflow_id: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    created_at: datetime | None = None
    timestamp: datetime | None = None


class OperatorEvent(Model):
    """An operator event (``GENHOOK_ALERT_URL``): ``budget.threshold``, ``service.paused``, ..."""

    event: str
    service: str | None = None
    timestamp: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class UnknownEvent(Model):
    """A verified webhook of an event this client version does not know: its JSON as given."""

    event: str | None = None
