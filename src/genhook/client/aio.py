"""``genhook.AsyncClient``: the HTTP API from asyncio code, on httpx. The same calls, results,
errors and retries as :class:`genhook.Client` (see its docstrings), awaited."""

from __future__ import annotations

import asyncio
import builtins
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
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


class AsyncClient:
    """``async with AsyncClient(base_url, api_key) as genhook: await genhook.trigger(...)``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.retry_policy = retry or RetryPolicy()
        self._sleep = sleep
        self._own = http is None
        if http is None:
            url, key = settings(base_url, api_key)
            http = httpx.AsyncClient(base_url=url, headers=client_headers(key), timeout=timeout)
        self._http = http

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections (only those of an ``httpx.AsyncClient`` the client made)."""
        if self._own:
            await self._http.aclose()

    async def trigger(
        self,
        workflow_id: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **envelope: Unpack[Envelope],
    ) -> m.Accepted:
        return await self._run(_core.trigger(workflow_id, input, idempotency_key, envelope))

    async def dry_run(
        self, workflow_id: str, input: Mapping[str, Any] | None = None, **envelope: Unpack[Envelope]
    ) -> m.DryRun:
        return await self._run(_core.dry_run(workflow_id, input, envelope))

    async def batch(
        self,
        workflow_id: str,
        items: Iterable[Mapping[str, Any]],
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Batch:
        return await self._run(_core.batch(workflow_id, items, callback_url, idempotency_key))

    async def get_batch(self, batch_id: str) -> m.Batch:
        return await self._run(_core.get_batch(batch_id))

    async def get(self, job_id: str) -> m.Job:
        return await self._run(_core.get_job(job_id))

    async def list_page(
        self, *, cursor: str | None = None, **filters: Unpack[JobFilters]
    ) -> m.JobPage:
        return await self._run(_core.list_jobs(filters, cursor))

    async def list(self, **filters: Unpack[JobFilters]) -> AsyncIterator[m.Job]:
        cursor: str | None = None
        while True:
            page = await self.list_page(cursor=cursor, **filters)
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> m.CancelResult:
        try:
            return await self._run(_core.cancel(job_id))
        except ApiError as exc:
            if (
                exc.error_code == "not_cancellable"
                and (await self.get(job_id)).status == "cancelled"
            ):
                return m.CancelResult(job_id=job_id, status="cancelled")
            raise

    async def retry(self, job_id: str, *, idempotency_key: str | None = None) -> m.Accepted:
        return await self._run(_core.retry(job_id, idempotency_key))

    async def workflows(self) -> builtins.list[m.Workflow]:
        return await self._run(_core.workflows())

    async def workflow(self, workflow_id: str) -> m.Workflow:
        return await self._run(_core.workflow(workflow_id))

    async def reviews(self) -> AsyncIterator[m.Review]:
        cursor: str | None = None
        while True:
            page: m.ReviewPage = await self._run(_core.reviews(cursor))
            for review in page.reviews:
                yield review
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def review(
        self,
        job_id: str,
        decision: str,
        *,
        note: str | None = None,
        alt_text: str | None = None,
        caption: str | None = None,
    ) -> m.ReviewDecision:
        return await self._run(_core.review(job_id, decision, note, alt_text, caption))

    def events(
        self, job_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[m.JobEvent]:
        follow = _core.Follow(job_id, last_event_id, timeout, self.retry_policy, self._http.timeout)
        return self._follow(follow)

    async def _follow(self, follow: _core.Follow) -> AsyncIterator[m.JobEvent]:
        while True:
            try:
                async with self._http.stream(**follow.request()) as response:
                    if not response.is_success:
                        await response.aread()
                        wait = follow.refused(response)
                    else:
                        async for line in response.aiter_lines():
                            event = follow.line(line)
                            if event is not None:
                                yield event
                                if follow.done:
                                    return
                        wait = follow.ended()
            except httpx.TransportError as exc:
                wait = follow.lost(exc)
            await self._sleep(wait)

    async def wait(
        self,
        job_id: str,
        timeout: float | None = 600.0,
        *,
        stream: bool = True,
        poll_interval: float = 1.0,
    ) -> m.Job:
        deadline = deadline_of(timeout)
        if stream:
            try:
                follow = _core.Follow(
                    job_id, None, timeout, self.retry_policy, self._http.timeout, polls_instead=True
                )
                async for event in self._follow(follow):
                    if event.terminal:
                        return await self.get(job_id)
            except WaitTimeout:
                raise WaitTimeout(job_id, timeout or 0.0, await self.get(job_id)) from None
            except ApiError as exc:
                if exc.status != 429:
                    raise
        while True:
            job = await self.get(job_id)
            left = remaining(deadline)
            if job.ended:
                return job
            if left is not None and left <= 0:
                raise WaitTimeout(job_id, timeout or 0.0, job)
            await self._sleep(poll_interval if left is None else max(0.0, min(poll_interval, left)))

    async def _run(self, call: Call[T]) -> T:
        return call.parse(await self._send(call))

    async def _send(self, call: Call[Any]) -> httpx.Response:
        for attempt in itertools.count():
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
            except httpx.TransportError as exc:
                wait = self.retry_policy.delay(attempt, call.idempotent, error=exc)
                if wait is None:
                    raise
                await self._sleep(wait)
                continue
            if response.is_success:
                return response
            wait = self.retry_policy.delay(attempt, call.idempotent, response=response)
            if wait is None:
                return response
            await self._sleep(wait)
        raise AssertionError("unreachable")
