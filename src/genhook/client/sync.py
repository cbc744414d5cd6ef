"""``genhook.Client``: the HTTP API from synchronous code, on httpx."""

from __future__ import annotations

import builtins
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from genhook.client import _core
from genhook.client import models as m
from genhook.client._core import (
    ApiError,
    Call,
    Envelope,
    JobFilters,
    RetryPolicy,
    WaitTimeout,
    client_headers,
    deadline_of,
    remaining,
    settings,
)

T = TypeVar("T")


class Client:
    """A service's client of one genhook: ``Client(base_url, api_key)``.

    Every call returns a typed result or raises :class:`ApiError`; calls are retried as
    :class:`RetryPolicy` says (429/503 after ``Retry-After``, lost connections for idempotent
    calls). ``http`` takes an ``httpx.Client`` of your own (its base URL and auth are yours to
    set); ``sleep`` is how the client waits (tests pass their own)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry_policy = retry or RetryPolicy()
        self._sleep = sleep
        self._own = http is None
        if http is None:
            url, key = settings(base_url, api_key)
            http = httpx.Client(base_url=url, headers=client_headers(key), timeout=timeout)
        self._http = http

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (only those of an ``httpx.Client`` the client made)."""
        if self._own:
            self._http.close()

    # -- the calls ------------------------------------------------------------------------------

    def trigger(
        self,
        workflow_id: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **envelope: Unpack[Envelope],
    ) -> m.Accepted:
        """Trigger ``workflow_id`` with ``input`` and the envelope's fields (``callback_url``,
        ``callback_events``, ``client_metadata``, ``priority``, ``deadline``). The
        Idempotency-Key is a fresh UUID4 unless given, and the same on every retry: a trigger
        sent again after a lost connection answers the job of the first (``replayed``)."""
        return self._run(_core.trigger(workflow_id, input, idempotency_key, envelope))

    def dry_run(
        self, workflow_id: str, input: Mapping[str, Any] | None = None, **envelope: Unpack[Envelope]
    ) -> m.DryRun:
        """What the trigger would do (prompt, style, outputs, credit estimate), generating
        nothing."""
        return self._run(_core.dry_run(workflow_id, input, envelope))

    def batch(
        self,
        workflow_id: str,
        items: Iterable[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Batch:
        """Up to 1,000 triggers in one request: one item per trigger, in order, each a job id
        or its own error."""
        return self._run(_core.batch(workflow_id, items, callback_url, idempotency_key))

    def get_batch(self, batch_id: str) -> m.Batch:
        """A batch: its status, counts by status, and items."""
        return self._run(_core.get_batch(batch_id))

    def get(self, job_id: str) -> m.Job:
        """The job (404 ``not_found``, 410 ``job_expired`` as :class:`ApiError`)."""
        return self._run(_core.get_job(job_id))

    def list_page(self, *, cursor: str | None = None, **filters: Unpack[JobFilters]) -> m.JobPage:
        """One page of the service's jobs, newest first."""
        return self._run(_core.list_jobs(filters, cursor))

    def list(self, **filters: Unpack[JobFilters]) -> Iterator[m.Job]:
        """Every job that matches, newest first, page after page (``next_cursor``)."""
        cursor: str | None = None
        while True:
            page = self.list_page(cursor=cursor, **filters)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> m.CancelResult:
        """Cancel a waiting or running job. Idempotent: a job already cancelled (a retry after
        a lost connection, or a second call) answers its cancelled state; one that ended
        otherwise raises 409 ``not_cancellable``."""
        try:
            return self._run(_core.cancel(job_id))
        except ApiError as exc:
            if exc.error_code == "not_cancellable" and self.get(job_id).status == "cancelled":
                return m.CancelResult(job_id=job_id, status="cancelled")
            raise

    def retry(self, job_id: str, *, idempotency_key: str | None = None) -> m.Accepted:
        """A new job with the same input and workflow version as an ended one (its
        ``retry_of``); the Idempotency-Key (a fresh UUID4 unless given) makes a retry sent again
        after a lost connection answer the same new job."""
        return self._run(_core.retry(job_id, idempotency_key))

    def workflows(self) -> builtins.list[m.Workflow]:
        """The templates this genhook serves."""
        return self._run(_core.workflows())

    def workflow(self, workflow_id: str) -> m.Workflow:
        """One template: its input schema (valid styles, platforms) and error codes."""
        return self._run(_core.workflow(workflow_id))

    def reviews(self) -> Iterator[m.Review]:
        """The service's jobs held for a person's review, page after page."""
        cursor: str | None = None
        while True:
            page: m.ReviewPage = self._run(_core.reviews(cursor))
            yield from page.reviews
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def review(
        self,
        job_id: str,
        decision: str,
        *,
        note: str | None = None,
        alt_text: str | None = None,
        caption: str | None = None,
    ) -> m.ReviewDecision:
        """``approve`` (delivers, with any edited ``alt_text``/``caption``) or ``reject``
        (generates again with ``note`` folded into the prompt) a held job."""
        return self._run(_core.review(job_id, decision, note, alt_text, caption))

    # -- following a job ------------------------------------------------------------------------

    def events(
        self, job_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[m.JobEvent]:
        """The job's state changes as they happen (Server-Sent Events), from the first (or
        after ``last_event_id``), ending with its terminal event, which carries the completion
        payload. A dropped stream is resumed where it stopped (``Last-Event-ID``). Past
        ``timeout`` seconds, :class:`WaitTimeout`."""
        follow = _core.Follow(job_id, last_event_id, timeout, self.retry_policy, self._http.timeout)
        return self._follow(follow)

    def _follow(self, follow: _core.Follow) -> Iterator[m.JobEvent]:
        while True:
            try:
                with self._http.stream(**follow.request()) as response:
                    if not response.is_success:
                        response.read()
                        wait = follow.refused(response)
                    else:
                        for line in response.iter_lines():
                            event = follow.line(line)
                            if event is not None:
                                yield event
                                if follow.done:
                                    return
                        wait = follow.ended()
            except httpx.TransportError as exc:
                wait = follow.lost(exc)
            self._sleep(wait)

    def wait(
        self,
        job_id: str,
        timeout: float | None = 600.0,
        *,
        stream: bool = True,
        poll_interval: float = 1.0,
    ) -> m.Job:
        """The job once it has ended (its ``result`` is the completion payload).

        Follows the job's event stream and reads the job once its terminal event came: the end
        is seen the moment the server records it, with one open request. When the service
        already has its most streams open (429 ``too_many_streams``), or with
        ``stream=False``, it polls every ``poll_interval`` seconds instead. Past ``timeout``
        seconds, :class:`WaitTimeout` (its ``job`` the last state read)."""
        deadline = deadline_of(timeout)
        if stream:
            try:
                follow = _core.Follow(
                    job_id, None, timeout, self.retry_policy, self._http.timeout, polls_instead=True
                )
                for event in self._follow(follow):
                    if event.terminal:
                        return self.get(job_id)
            except WaitTimeout:
                raise WaitTimeout(job_id, timeout or 0.0, self.get(job_id)) from None
            except ApiError as exc:
                if exc.status != 429:
                    raise
        while True:
            job = self.get(job_id)
            left = remaining(deadline)
            if job.ended:
                return job
            if left is not None and left <= 0:
                raise WaitTimeout(job_id, timeout or 0.0, job)
            self._sleep(poll_interval if left is None else max(0.0, min(poll_interval, left)))

    # -- sending --------------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        return call.parse(self._send(call))

    def _send(self, call: Call[Any]) -> httpx.Response:
        """The call's answer, sent again as the retry policy says; the last answer (an error
        one is raised by the call's parser) or the last connection error."""
        for attempt in itertools.count():
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    headers=call.headers,
                )
            except httpx.TransportError as exc:
                wait = self.retry_policy.delay(attempt, call.idempotent, error=exc)
                if wait is None:
                    raise
                self._sleep(wait)
                continue
            if response.is_success:
                return response
            wait = self.retry_policy.delay(attempt, call.idempotent, response=response)
            if wait is None:
                return response
            self._sleep(wait)
        raise AssertionError("unreachable")
