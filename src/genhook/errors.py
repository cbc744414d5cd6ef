"""The one error vocabulary of genhook.

Every failure that reaches a caller carries an :class:`ErrorCode`: a stable snake_case code from a
closed list. Whether a failure is retried is a property of its code, never decided ad hoc::

    GenhookError                      (code, description, field; .retryable from the code)
     +-- InvalidInput                 the trigger is wrong: 422, never retried
     +-- TemplateError                a workflow template is wrong: refused at load, with its line
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Closed list of error codes. Adding one is non-breaking; renaming one is breaking."""

    # invalid input: answered at once with 422, never retried
    INVALID_JSON = "invalid_json"
    INVALID_BODY = "invalid_body"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_STYLE = "unknown_style"
    UNKNOWN_PLATFORM = "unknown_platform"
    INVALID_CALLBACK_URL = "invalid_callback_url"
    UNKNOWN_FIELD = "unknown_field"
    INPUT_NOT_FOUND = "input_not_found"
    UNKNOWN_WORKFLOW = "unknown_workflow"
    INVALID_BATCH = "invalid_batch"
    BATCH_TOO_LARGE = "batch_too_large"
    # generation: transient ones are retried on the retry schedule
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_TIMEOUT = "backend_timeout"
    BACKEND_RATE_LIMITED = "backend_rate_limited"
    BACKEND_ERROR = "backend_error"
    BACKEND_REJECTED = "backend_rejected"
    BACKEND_NOT_CONFIGURED = "backend_not_configured"
    QUALITY_CHECK_FAILED = "quality_check_failed"
    EXPORT_FAILED = "export_failed"
    INPUT_FETCH_FAILED = "input_fetch_failed"
    INVALID_INPUT_MEDIA = "invalid_input_media"
    TIMED_OUT = "timed_out"
    # templates
    INVALID_TEMPLATE = "invalid_template"
    # job lifecycle
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    DEADLINE_EXPIRED = "deadline_expired"
    INTERNAL_ERROR = "internal_error"
    STORE_UNAVAILABLE = "store_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    # HTTP API
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    NOT_CANCELLABLE = "not_cancellable"
    NOT_RETRYABLE = "not_retryable"
    WORKFLOW_CHANGED = "workflow_changed"
    INVALID_CURSOR = "invalid_cursor"
    DELIVERY_IN_FLIGHT = "delivery_in_flight"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    TOO_MANY_STREAMS = "too_many_streams"
    MALFORMED_REQUEST = "malformed_request"
    HEADERS_TOO_LARGE = "headers_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    SERVER_BUSY = "server_busy"
    # flow control and cost
    QUEUE_FULL = "queue_full"
    BUDGET_EXCEEDED = "budget_exceeded"
    SERVICE_NOT_FOUND = "service_not_found"
    SCHEDULE_NOT_FOUND = "schedule_not_found"
    ENDPOINT_DISABLED = "endpoint_disabled"
    DELIVERY_EXHAUSTED = "delivery_exhausted"
    # retention
    JOB_EXPIRED = "job_expired"
    ASSET_EXPIRED = "asset_expired"
    BATCH_EXPIRED = "batch_expired"
    # review (on_fail: review)
    NOT_AWAITING_REVIEW = "not_awaiting_review"
    INVALID_REVIEW = "invalid_review"


@dataclass(frozen=True)
class ErrorSpec:
    """What a code means, and whether a job that failed with it is tried again."""

    description: str
    retryable: bool
    invalid_input: bool = False


ERROR_SPECS: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.INVALID_JSON: ErrorSpec("The request body is not valid JSON.", False, True),
    ErrorCode.INVALID_BODY: ErrorSpec("The trigger must be a JSON object.", False, True),
    ErrorCode.MISSING_FIELD: ErrorSpec("A required input field is missing.", False, True),
    ErrorCode.INVALID_TYPE: ErrorSpec("An input field has the wrong JSON type.", False, True),
    ErrorCode.INVALID_VALUE: ErrorSpec(
        "An input field has a value outside its allowed set, length or range.", False, True
    ),
    ErrorCode.UNKNOWN_STYLE: ErrorSpec(
        "`target_style` (or another style field) names no style preset.", False, True
    ),
    ErrorCode.UNKNOWN_PLATFORM: ErrorSpec(
        "`target_platform` (or another platform field) names no platform preset or bundle.",
        False,
        True,
    ),
    ErrorCode.INVALID_CALLBACK_URL: ErrorSpec(
        "`callback_url` is not an absolute http(s) URL that genhook may call.", False, True
    ),
    ErrorCode.UNKNOWN_FIELD: ErrorSpec(
        "The trigger has a field the workflow does not declare (a misspelling, or a field "
        "the template does not take; a template may opt into ignoring them).",
        False,
        True,
    ),
    ErrorCode.INPUT_NOT_FOUND: ErrorSpec(
        "`genhook run --input` names a file that cannot be read (exit 2; never an HTTP answer).",
        False,
    ),
    ErrorCode.UNKNOWN_WORKFLOW: ErrorSpec(
        "No workflow template has this id (HTTP 404; `genhook run` exits 2).", False
    ),
    ErrorCode.INVALID_BATCH: ErrorSpec(
        "A batch's body is not an object with a non-empty `items` array (and an optional "
        "`callback_url`), or an item's `idempotency_key` is not a string of 1 to 255 "
        "characters (HTTP 422; `field` names the part).",
        False,
        True,
    ),
    ErrorCode.BATCH_TOO_LARGE: ErrorSpec(
        "A batch has more than 1,000 items (HTTP 422, `field` `items`): split it.", False, True
    ),
    ErrorCode.BACKEND_UNAVAILABLE: ErrorSpec("The generation backend could not be reached.", True),
    ErrorCode.BACKEND_TIMEOUT: ErrorSpec("The generation backend did not answer in time.", True),
    ErrorCode.BACKEND_RATE_LIMITED: ErrorSpec(
        "The generation backend asked genhook to slow down (HTTP 429).", True
    ),
    ErrorCode.BACKEND_ERROR: ErrorSpec("The generation backend failed (HTTP 5xx).", True),
    ErrorCode.BACKEND_REJECTED: ErrorSpec(
        "The generation backend refused the request (content policy, bad parameters).", False
    ),
    ErrorCode.BACKEND_NOT_CONFIGURED: ErrorSpec(
        "The workflow names a backend that this install has not configured.", False
    ),
    ErrorCode.QUALITY_CHECK_FAILED: ErrorSpec(
        "No generated output passed the quality checks and the workflow's policy is to fail.",
        False,
    ),
    ErrorCode.EXPORT_FAILED: ErrorSpec("An output could not be encoded for a platform.", False),
    ErrorCode.INPUT_FETCH_FAILED: ErrorSpec(
        "An input given by URL could not be fetched now (connection refused or reset, a 5xx, "
        "a timeout); tried again on the retry schedule.",
        True,
    ),
    ErrorCode.INVALID_INPUT_MEDIA: ErrorSpec(
        "An input given by URL is not usable media: refused address, a 4xx, larger than "
        "GENHOOK_INPUT_MAX_BYTES, the wrong content type, or bytes that do not decode "
        "(`field` names the input).",
        False,
    ),
    ErrorCode.TIMED_OUT: ErrorSpec(
        "The attempt ran longer than its workflow's run timeout (`timeout` in the template); "
        "the job fails at once, not retried.",
        False,
    ),
    ErrorCode.INVALID_TEMPLATE: ErrorSpec("A workflow template is invalid.", False),
    ErrorCode.WORKER_LOST: ErrorSpec(
        "The worker running the job stopped heartbeating (crashed or stalled); another took over.",
        True,
    ),
    ErrorCode.CANCELLED: ErrorSpec("The job was cancelled.", False),
    ErrorCode.DEADLINE_EXPIRED: ErrorSpec(
        "The job had not started by its trigger's `deadline`: it ended `expired` without "
        "running, no credits reserved or spent.",
        False,
    ),
    ErrorCode.INTERNAL_ERROR: ErrorSpec("An unexpected error inside genhook.", False),
    ErrorCode.STORE_UNAVAILABLE: ErrorSpec(
        "The database does not answer or cannot write now (down, full, read-only); nothing "
        "was changed. Try again after `Retry-After` (HTTP 503).",
        True,
    ),
    ErrorCode.STORAGE_UNAVAILABLE: ErrorSpec(
        "The asset storage (S3-compatible) could not be written or read now, after its own "
        "retries (down, refusing, timing out); HTTP 503 on /assets.",
        True,
    ),
    ErrorCode.UNAUTHORIZED: ErrorSpec(
        "No valid `Authorization: Bearer <api_key>` header (HTTP 401).", False
    ),
    ErrorCode.FORBIDDEN: ErrorSpec("The resource belongs to another service (HTTP 403).", False),
    ErrorCode.NOT_FOUND: ErrorSpec("No such route, job, delivery or asset (HTTP 404).", False),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(
        "The route does not take this method (HTTP 405).", False
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(
        "The request body is larger than GENHOOK_MAX_BODY_BYTES (HTTP 413).", False, True
    ),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(
        "The request body must be application/json (HTTP 415).", False, True
    ),
    ErrorCode.IDEMPOTENCY_CONFLICT: ErrorSpec(
        "The Idempotency-Key was used within 24 h with a different body (HTTP 409).", False
    ),
    ErrorCode.NOT_CANCELLABLE: ErrorSpec("The job has already ended (HTTP 409).", False),
    ErrorCode.NOT_RETRYABLE: ErrorSpec(
        "A retry was asked of a job that has not ended yet, or of a trigger refused as invalid "
        "input (HTTP 409).",
        False,
    ),
    ErrorCode.WORKFLOW_CHANGED: ErrorSpec(
        "A retry was asked of a job whose workflow version is no longer the installed one "
        "(HTTP 409): send a new trigger.",
        False,
    ),
    ErrorCode.INVALID_CURSOR: ErrorSpec(
        "The listing's `cursor` is not one genhook made, or was made for other filters "
        "(HTTP 422, field `cursor`).",
        False,
    ),
    ErrorCode.DELIVERY_IN_FLIGHT: ErrorSpec(
        "A replay was asked while an attempt of that delivery is in flight (HTTP 409).", False
    ),
    ErrorCode.RANGE_NOT_SATISFIABLE: ErrorSpec(
        "The `Range` of an asset request starts past the end of the file (HTTP 416).", False
    ),
    ErrorCode.TOO_MANY_STREAMS: ErrorSpec(
        "The service already has GENHOOK_MAX_STREAMS_PER_SERVICE event streams open (HTTP 429).",
        False,
    ),
    ErrorCode.MALFORMED_REQUEST: ErrorSpec("The request is not valid HTTP/1.1 (HTTP 400).", False),
    ErrorCode.HEADERS_TOO_LARGE: ErrorSpec(
        "The request line and headers are larger than GENHOOK_MAX_HEADER_BYTES (HTTP 431).",
        False,
    ),
    ErrorCode.REQUEST_TIMEOUT: ErrorSpec(
        "The request head was not complete within GENHOOK_HEADER_TIMEOUT (HTTP 408).", False
    ),
    ErrorCode.SERVER_BUSY: ErrorSpec(
        "GENHOOK_MAX_CONNECTIONS connections are open; try again (HTTP 503, Retry-After).", False
    ),
    ErrorCode.QUEUE_FULL: ErrorSpec(
        "The service has its queue limit of jobs waiting (`--queue-limit`, default 10,000); "
        "try again after `Retry-After` (HTTP 429).",
        False,
    ),
    ErrorCode.BUDGET_EXCEEDED: ErrorSpec(
        "The service's daily credit budget cannot cover the job, and its policy is "
        "`--on-budget fail`.",
        False,
    ),
    ErrorCode.SERVICE_NOT_FOUND: ErrorSpec("No service has this name (HTTP 404).", False),
    ErrorCode.SCHEDULE_NOT_FOUND: ErrorSpec(
        "No template schedule has this id, `WORKFLOW:ID` (HTTP 404; `genhook schedules` exits 2).",
        False,
    ),
    ErrorCode.ENDPOINT_DISABLED: ErrorSpec(
        "The callback endpoint failed every attempt for hours and is disabled; its deliveries "
        "wait until an operator enables it.",
        False,
    ),
    ErrorCode.DELIVERY_EXHAUSTED: ErrorSpec(
        "The callback used up GENHOOK_DELIVERY_SCHEDULE without a 2xx answer.", False
    ),
    ErrorCode.JOB_EXPIRED: ErrorSpec(
        "The job ended longer ago than its service's retention and was purged with its "
        "payload and assets (HTTP 410).",
        False,
    ),
    ErrorCode.ASSET_EXPIRED: ErrorSpec(
        "The asset's job was purged by retention; its files are deleted (HTTP 410).", False
    ),
    ErrorCode.BATCH_EXPIRED: ErrorSpec(
        "The batch ended longer ago than its service's retention and was purged after its "
        "jobs (HTTP 410).",
        False,
    ),
    ErrorCode.NOT_AWAITING_REVIEW: ErrorSpec(
        "A review was sent for a job that is not awaiting review (never held, or already "
        "approved, rejected or cancelled) (HTTP 409).",
        False,
    ),
    ErrorCode.INVALID_REVIEW: ErrorSpec(
        "A review body is not {decision: approve or reject, note, alt_text, caption}: a bad "
        "decision, a reject without a note, an empty or too long text (`field` names it).",
        False,
        True,
    ),
}


class GenhookError(Exception):
    """The root of genhook's errors: a stable code, a description, the input field at fault."""

    def __init__(
        self,
        code: ErrorCode,
        description: str | None = None,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.description = description or ERROR_SPECS[code].description
        self.field = field
        self.retry_after = retry_after
        super().__init__(f"{code.value}: {self.description}")

    @property
    def retryable(self) -> bool:
        """True when the job should be tried again on the retry schedule."""
        return ERROR_SPECS[self.code].retryable

    @property
    def invalid_input(self) -> bool:
        """True when the caller's trigger is at fault (422, never retried)."""
        return ERROR_SPECS[self.code].invalid_input

    def to_dict(self) -> dict[str, str | None]:
        """The wire form: ``{"error_code", "error_description", "field"}``."""
        return {
            "error_code": self.code.value,
            "error_description": self.description,
            "field": self.field,
        }


class InvalidInput(GenhookError):
    """The trigger does not satisfy the workflow's input schema."""


class TemplateError(GenhookError):
    """A workflow template (or a preset file) is invalid; ``problems`` lists each with its line."""

    def __init__(self, path: str, problems: list[TemplateProblem]) -> None:
        self.path = path
        self.problems = problems
        lines = "; ".join(p.format(path) for p in problems)
        super().__init__(ErrorCode.INVALID_TEMPLATE, lines)


@dataclass(frozen=True)
class TemplateProblem:
    """One problem in a template: where (dotted path and 1-based line) and what."""

    where: str
    line: int | None
    message: str

    def format(self, path: str) -> str:
        loc = f"{path}:{self.line}" if self.line is not None else path
        return f"{loc}: {self.where}: {self.message}"
