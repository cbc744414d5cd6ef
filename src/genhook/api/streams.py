"""Server-Sent Event streams: a per-service cap, and a response that always cleans up after itself.

Each open stream holds a wake-up listener and a slot of its service. Both are given back when the
stream ends for any reason (the job ended, the client went away, the server stops), in the
response's own ``finally``, not when a garbage collector finds the abandoned generator.

:func:`sse_event` writes one stored job event as an SSE event: ``event:`` is the status it
records (``queued``, ``running``, ``retrying``, ``succeeded``, ...), except a running job's
progress, which is ``event: progress`` with ``data.progress`` ``{"step", "total",
"percent"}`` (at most one every 2 s per job; the last before the job ends is always there).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from genhook.api.auth import state_part
from genhook.api.views import iso
from genhook.status import TERMINAL
from genhook.store.records import JobEvent

RETRY_AFTER_SECONDS = 5
"""What a refused stream is told to wait before trying again."""


class StreamSlots:
    """Counts each service's open streams; ``take`` refuses past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, service_id: str) -> bool:
        """One more stream for ``service_id``, or False when it already has ``limit``."""
        with self._lock:
            current = self._open.get(service_id, 0)
            if current >= self.limit:
                return False
            self._open[service_id] = current + 1
            return True

    def give_back(self, service_id: str) -> None:
        """A stream of ``service_id`` ended."""
        with self._lock:
            left = self._open.get(service_id, 0) - 1
            if left > 0:
                self._open[service_id] = left
            else:
                self._open.pop(service_id, None)

    def open_streams(self, service_id: str) -> int:
        """How many streams ``service_id`` has open now."""
        with self._lock:
            return self._open.get(service_id, 0)


def stream_slots(app: FastAPI) -> StreamSlots:
    """The app's stream counter, with the limit from ``GENHOOK_MAX_STREAMS_PER_SERVICE``."""
    return state_part(
        app,
        "stream_slots",
        lambda: StreamSlots(app.state.runtime.settings.max_streams_per_service),
    )


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` answer whose generator is closed, and ``on_close`` called, when the
    response ends, however it ends."""

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        on_close: Callable[[], None],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._generator = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self._generator.aclose()
            finally:
                self._on_close()


PROGRESS_EVENT = "progress"
"""The SSE event name of a running job's progress."""


def sse_event(job_id: str, row: JobEvent) -> bytes:
    """One SSE event of a stored job event: the terminal one carries the completion payload
    (``result``), a progress one its ``progress``, any other what the change adds (``detail``:
    a retry's reason and time)."""
    data: dict[str, Any] = {"job_id": job_id, "status": row.status, "at": iso(row.at)}
    name = str(row.status)
    progress = row.detail.get("progress") if row.detail else None
    if row.status in TERMINAL:
        data["result"] = row.detail
    elif isinstance(progress, dict):
        name = PROGRESS_EVENT
        data["progress"] = progress
    elif row.detail:
        detail = dict(row.detail)
        if isinstance(detail.get("retry_at"), float):
            detail["retry_at"] = iso(detail["retry_at"])
        data["detail"] = detail
    body = json.dumps(data, separators=(",", ":"))
    return f"id: {row.id}\nevent: {name}\ndata: {body}\n\n".encode()
