"""What the sync and async clients share: each call as data, its answer's parsing, the retry
decision, and the Server-Sent Events parser. Only the I/O loops differ between the two."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from genhook.client.models import (
    Accepted,
    Batch,
    CancelResult,
    DryRun,
    Job,
    JobEvent,
    JobPage,
    Review,
    ReviewDecision,
    ReviewPage,
    Workflow,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ENVELOPE = ("callback_url", "callback_events", "client_metadata", "priority", "deadline")
"""The trigger envelope's reserved names."""

USER_AGENT = "genhook-client/1"


class ApiError(Exception):
    """An error answer from genhook: ``status`` (HTTP), ``error_code`` (stable snake_case),
    ``error_description``, the input ``field`` at fault, the refused trigger's ``job_id``
    (422), and ``retry_after`` (seconds, from ``Retry-After``) where the server gave one."""

    def __init__(
        self,
        status: int,
        error_code: str,
        error_description: str,
        field: str | None = None,
        *,
        job_id: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {error_code}: {error_description}")
        self.status = status
        self.error_code = error_code
        self.error_description = error_description
        self.field = field
        self.job_id = job_id
        self.retry_after = retry_after
        self.body = body


class WaitTimeout(TimeoutError):
    """``wait`` gave up: the job had not ended within the timeout (``job`` is the last state
    seen, ``None`` if none was read)."""

    def __init__(self, job_id: str, timeout: float, job: Job | None) -> None:
        status = job.status if job is not None else "unknown"
        super().__init__(f"{job_id} had not ended after {timeout:g}s (last status: {status})")
        self.job_id = job_id
        self.job = job


@dataclass(frozen=True)
class RetryPolicy:
    """When a call is sent again.

    - ``429`` and ``503`` (the server did nothing: queue full, too many streams, store
      unavailable, busy): every call, after ``Retry-After`` when the answer has one (else the
      backoff), as long as that wait is at most ``max_retry_after``; a longer one is raised at
      once (its ``ApiError.retry_after`` says how long).
    - A connection that could not be made (connect error or timeout, no pooled connection):
      every call, the request never left.
    - A connection lost after the request went out (read/write error, the server closed it,
      a read timeout), and ``502``/``504`` from a proxy: only idempotent calls: reads, cancels,
      and triggers, which carry an ``Idempotency-Key`` (the same key is sent again, so the
      server answers the job it made the first time).

    ``attempts`` counts the first try; the backoff doubles from ``backoff`` up to
    ``max_backoff``, with full jitter.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(
        self,
        attempt: int,
        idempotent: bool,
        response: httpx.Response | None = None,
        error: BaseException | None = None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (0-based ``attempt`` just failed), or
        ``None``: do not retry."""
        if attempt + 1 >= self.attempts:
            return None
        backoff = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        if error is not None:
            never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
            never_sent = never_sent or isinstance(error, httpx.PoolTimeout)
            if never_sent or (idempotent and isinstance(error, httpx.TransportError)):
                return backoff
            return None
        assert response is not None
        status = response.status_code
        if status in (429, 503):
            after = retry_after(response)
            if after is None:
                return backoff
            return after if after <= self.max_retry_after else None
        if status in (502, 504) and idempotent:
            return backoff
        return None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), ``None`` if absent or bad."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def api_error(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` of an error answer (its JSON error shape, or the bare status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    after = retry_after(response)
    if isinstance(body, dict) and isinstance(body.get("error_code"), str):
        return ApiError(
            response.status_code,
            body["error_code"],
            str(body.get("error_description") or ""),
            body.get("field"),
            job_id=body.get("job_id"),
            retry_after=after,
            body=body,
        )
    text = response.text[:200] if body is None else json.dumps(body)[:200]
    return ApiError(
        response.status_code,
        f"http_{response.status_code}",
        text or response.reason_phrase,
        retry_after=after,
        body=body,
    )


def checked(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; :class:`ApiError` for any other."""
    if not response.is_success:
        raise api_error(response)
    return response.json()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: what to send, whether it may be sent again after a lost connection, and
    how its answer becomes a result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = False


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate(checked(response))


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


def _accepted(response: httpx.Response) -> Accepted:
    data = checked(response)
    replayed = response.status_code == 200 and not data.get("deduplicated", False)
    return Accepted.model_validate({**data, "replayed": replayed})


def _iso(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime sent to genhook needs a time zone")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


class Envelope(TypedDict, total=False):
    """The trigger envelope's fields as keyword arguments (each optional)."""

    callback_url: str
    callback_events: Iterable[str]
    client_metadata: Mapping[str, Any]
    priority: str
    deadline: datetime | str


def trigger_body(input: Mapping[str, Any] | None, envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The trigger's JSON: the workflow's input with the envelope's fields beside it (a name
    given both ways is refused)."""
    body = dict(input or {})
    for name, value in envelope.items():
        if name not in ENVELOPE:
            raise TypeError(f"unknown trigger envelope field {name!r}")
        if name in body:
            raise ValueError(f"{name!r} is given both in the input and as a keyword")
        if value is None:
            continue
        if name == "deadline":
            value = _iso(value)
        elif name == "callback_events":
            value = list(value)
        elif name == "client_metadata":
            value = dict(value)
        body[name] = value
    return body


def new_key() -> str:
    """A fresh Idempotency-Key (a UUID4)."""
    return str(uuid.uuid4())


def trigger(
    workflow_id: str,
    input: Mapping[str, Any] | None,
    idempotency_key: str | None,
    envelope: Mapping[str, Any],
) -> Call[Accepted]:
    """``POST /v1/workflows/{id}/runs`` with an Idempotency-Key (a fresh UUID4 unless given),
    sent again unchanged on a retry: idempotent."""
    return Call(
        "POST",
        _path("workflows", workflow_id, "runs"),
        _accepted,
        json=trigger_body(input, envelope),
        headers={"Idempotency-Key": idempotency_key or new_key()},
        idempotent=True,
    )


def dry_run(
    workflow_id: str, input: Mapping[str, Any] | None, envelope: Mapping[str, Any]
) -> Call[DryRun]:
    return Call(
        "POST",
        _path("workflows", workflow_id, "dry-run"),
        _model(DryRun),
        json=trigger_body(input, envelope),
        idempotent=True,
    )


def batch(
    workflow_id: str,
    items: Iterable[Mapping[str, Any]],
    callback_url: str | None,
    idempotency_key: str | None,
) -> Call[Batch]:
    """``POST /v1/workflows/{id}/batches``: ``{"items": [...], "callback_url"}``."""
    body: dict[str, Any] = {"items": [dict(item) for item in items]}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return Call(
        "POST",
        _path("workflows", workflow_id, "batches"),
        _model(Batch),
        json=body,
        headers={"Idempotency-Key": idempotency_key or new_key()},
        idempotent=True,
    )


def get_batch(batch_id: str) -> Call[Batch]:
    return Call("GET", _path("batches", batch_id), _model(Batch), idempotent=True)


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", _path("jobs", job_id), _model(Job), idempotent=True)


def list_jobs(filters: Mapping[str, Any], cursor: str | None) -> Call[JobPage]:
    """``GET /v1/jobs`` with the filters that are set (datetimes as RFC 3339)."""
    params: dict[str, Any] = {}
    for name, value in filters.items():
        if isinstance(value, datetime):
            value = _iso(value)
        elif name == "status" and not isinstance(value, str) and value is not None:
            value = ",".join(value)  # several statuses: comma-separated
        if value is not None:
            params[name] = value
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", _model(JobPage), params=params, idempotent=True)


def cancel(job_id: str) -> Call[CancelResult]:
    return Call("POST", _path("jobs", job_id, "cancel"), _model(CancelResult), idempotent=True)


def retry(job_id: str, idempotency_key: str | None) -> Call[Accepted]:
    """``POST /v1/jobs/{id}/retry`` with an Idempotency-Key (a fresh UUID4 unless given): sent
    again after a lost connection, it answers the retry job first made."""
    return Call(
        "POST",
        _path("jobs", job_id, "retry"),
        _accepted,
        headers={"Idempotency-Key": idempotency_key or new_key()},
        idempotent=True,
    )


def workflows() -> Call[list[Workflow]]:
    def parse(response: httpx.Response) -> list[Workflow]:
        data = checked(response)
        rows = data.get("workflows", []) if isinstance(data, dict) else data
        return [Workflow.model_validate(row) for row in rows]

    return Call("GET", "/v1/workflows", parse, idempotent=True)


def workflow(workflow_id: str) -> Call[Workflow]:
    return Call("GET", _path("workflows", workflow_id), _model(Workflow), idempotent=True)


def reviews(cursor: str | None = None) -> Call[ReviewPage]:
    """``GET /v1/reviews`` (its list under ``reviews``, or ``jobs``)."""

    def parse(response: httpx.Response) -> ReviewPage:
        data = checked(response)
        if not isinstance(data, dict):
            data = {"reviews": data}
        rows = data.get("reviews", data.get("jobs")) or []
        reviews = [Review.model_validate(r) for r in rows]
        return ReviewPage(reviews=reviews, next_cursor=data.get("next_cursor"))

    params = {} if cursor is None else {"cursor": cursor}
    return Call("GET", "/v1/reviews", parse, params=params, idempotent=True)


def review(
    job_id: str,
    decision: str,
    note: str | None,
    alt_text: str | None,
    caption: str | None,
) -> Call[ReviewDecision]:
    """``POST /v1/jobs/{id}/review``: not sent again after a lost connection (a reject
    generates again)."""
    if decision not in ("approve", "reject"):
        raise ValueError("decision is 'approve' or 'reject'")
    body = {"decision": decision, "note": note, "alt_text": alt_text, "caption": caption}
    body = {k: v for k, v in body.items() if v is not None}
    return Call("POST", _path("jobs", job_id, "review"), _model(ReviewDecision), json=body)


def events_path(job_id: str) -> str:
    return _path("jobs", job_id, "events")


def events_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers


def stream_timeout(base: httpx.Timeout, remaining: float | None) -> httpx.Timeout:
    """An event stream's timeout: the read waits for the next event or keep-alive (genhook
    sends one every poll interval) at most ``remaining`` seconds of the caller's deadline."""
    read = 60.0 if remaining is None else max(0.05, min(60.0, remaining))
    return httpx.Timeout(base.connect, read=read, write=base.write, pool=base.pool)


class SSEParser:
    """Server-Sent Events, line by line, as the HTML standard's event-stream format says
    (``data`` lines joined by newlines, comments dropped, the last ``id`` remembered)."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> JobEvent | None:
        """One line (without its end); the event it completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None

    def _dispatch(self) -> JobEvent | None:
        event, data = self._event or "message", "\n".join(self._data)
        self._event, self._data = "", []
        if not data:
            return None
        fields = json.loads(data)
        return JobEvent.model_validate({**fields, "event": event, "id": self.last_id})


DEFAULT_URL = "http://127.0.0.1:8080"


class JobFilters(TypedDict, total=False):
    """``GET /v1/jobs``'s filters (each optional); ``limit`` is the page size (1 to 500)."""

    status: str | Iterable[str]
    workflow_id: str
    external_id: str
    created_after: datetime | str
    created_before: datetime | str
    limit: int


def settings(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The base URL and key: as given, else ``GENHOOK_URL`` / ``GENHOOK_API_KEY``."""
    url = base_url or os.environ.get("GENHOOK_URL") or DEFAULT_URL
    key = api_key or os.environ.get("GENHOOK_API_KEY")
    if not key:
        raise ValueError("an api_key is needed (or GENHOOK_API_KEY in the environment)")
    return url.rstrip("/"), key


def client_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def past(deadline: float | None) -> bool:
    """True once ``deadline`` (monotonic seconds) has come."""
    return deadline is not None and time.monotonic() >= deadline


class Follow:
    """One ``events()`` call's state across its reconnections: the parser (and so the last
    event id, sent back as ``Last-Event-ID``), the deadline, and the failures in a row. The
    sync and async loops do the I/O and ask it what comes next."""

    def __init__(
        self,
        job_id: str,
        last_event_id: str | None,
        timeout: float | None,
        policy: RetryPolicy,
        base: httpx.Timeout,
        *,
        polls_instead: bool = False,
    ) -> None:
        self.job_id = job_id
        self.polls_instead = polls_instead  # wait(): a refused stream (429) is not waited for
        self.timeout = timeout
        self.deadline = deadline_of(timeout)
        self.parser = SSEParser()
        self.parser.last_id = last_event_id
        self.policy = policy
        self.base = base
        self.failures = 0
        self.done = False

    def expired(self) -> WaitTimeout:
        return WaitTimeout(self.job_id, self.timeout or 0.0, None)

    def request(self) -> dict[str, Any]:
        """The next stream request's arguments (``WaitTimeout`` once the deadline has come)."""
        if past(self.deadline):
            raise self.expired()
        return {
            "method": "GET",
            "url": events_path(self.job_id),
            "headers": events_headers(self.parser.last_id),
            "timeout": stream_timeout(self.base, remaining(self.deadline)),
        }

    def refused(self, response: httpx.Response) -> float:
        """A stream answered with an error: the wait before trying again, or the error."""
        wait = self.policy.delay(self.failures, True, response=response)
        if wait is None or (self.polls_instead and response.status_code == 429):
            raise api_error(response)
        self.failures += 1
        return wait

    def line(self, line: str) -> JobEvent | None:
        """One line of an open stream: the event it completes (``done`` after the terminal
        one). genhook sends a keep-alive every poll interval, so the deadline is looked at
        often even while nothing happens."""
        self.failures = 0
        event = self.parser.feed(line)
        if event is not None:
            self.done = event.terminal
        elif past(self.deadline):
            raise self.expired()
        return event

    def ended(self) -> float:
        """The stream ended before the job did (a server stopping): resume after a moment."""
        return self.policy.backoff

    def lost(self, error: httpx.TransportError) -> float:
        """The connection failed: the wait before resuming, or the error (past the deadline,
        ``WaitTimeout``)."""
        if past(self.deadline):
            raise self.expired() from error
        wait = self.policy.delay(self.failures, True, error=error)
        if wait is None:
            raise error
        self.failures += 1
        return wait
