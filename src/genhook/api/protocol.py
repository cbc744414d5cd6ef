"""Limits on connections before a request reaches the app: header size and time, connections.

uvicorn reads a request head without a time limit (its keep-alive timer is cancelled by every
byte, and a connection that sends nothing is never timed out), bounds header size only in its
h11 parser, and answers malformed requests with plain text. :class:`GuardedHttpToolsProtocol`
is uvicorn's httptools protocol (the C parser: h11's pure-Python one cost a fifth of the
accept path's CPU) with genhook's limits, set from :class:`~genhook.config.Settings`:

- ``GENHOOK_MAX_HEADER_BYTES``: a request line and headers over this get ``431``
  (``headers_too_large``) and the connection is closed; nothing more is read.
- ``GENHOOK_HEADER_TIMEOUT``: a request head must be complete this long after the connection
  opens or the previous response ends; a client that dribbles it gets ``408``
  (``request_timeout``) and is disconnected. Idle keep-alive connections close after
  ``GENHOOK_KEEPALIVE_TIMEOUT`` (uvicorn's own timer).
- ``GENHOOK_MAX_CONNECTIONS``: a connection over this many open ones is answered ``503``
  (``server_busy``, ``Retry-After: 1``) at once and closed.

Every such answer has genhook's JSON error shape, as does uvicorn's ``400`` for a malformed
request (``malformed_request``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _head_part(tail: bytes, data: bytes) -> int:
    """How many bytes of ``data`` belong to the request head: up to its blank line, if there.

    ``tail`` is the last bytes seen before ``data``, so a ``\\r\\n\\r\\n`` split across two
    reads is found; a body that arrives in the same read as the head is not counted.
    """
    end = (tail + data).find(b"\r\n\r\n")
    if end < 0:
        return len(data)
    return max(0, end + 4 - len(tail))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads and a connection cap (see the
    module). A request is *active* from its head's end to its response's end; bytes that arrive
    while none is active belong to a request head, and count."""

    max_header_bytes: ClassVar[int] = 16 * 1024
    header_timeout: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_tail = b""
        self._head_timer: asyncio.TimerHandle | None = None
        self._active = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head timer; refuse the connection at once when too many are open."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(
                503,
                GenhookError(
                    ErrorCode.SERVER_BUSY,
                    f"the server has {self.max_connections} connections open; try again",
                ),
                retry_after=1,
            )
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the head timer with the connection."""
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the bytes of a request head; past the limit, refuse without parsing more."""
        if not self._active:
            self._head_bytes += _head_part(self._head_tail, data)
            self._head_tail = (self._head_tail + data)[-3:]
            if self._head_bytes > self.max_header_bytes:
                self._refuse(
                    431,
                    GenhookError(
                        ErrorCode.HEADERS_TOO_LARGE,
                        f"the request line and headers are larger than {self.max_header_bytes}"
                        " bytes (GENHOOK_MAX_HEADER_BYTES)",
                    ),
                )
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is complete: its timer stops."""
        self._active = True
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """The next request's head gets its own time and byte budget."""
        self._active = False
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head_bytes = 0
            self._head_tail = b""
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, in genhook's JSON error shape."""
        self._refuse(400, GenhookError(ErrorCode.MALFORMED_REQUEST, msg.rstrip(".")))

    # -- the pieces --------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.transport.is_closing() or self._active or busy:
            return
        if self._head_bytes == 0:  # an idle connection: close quietly
            self.transport.close()
            return
        self._refuse(
            408,
            GenhookError(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request head was not complete within {self.header_timeout:g}s "
                "(GENHOOK_HEADER_TIMEOUT)",
            ),
        )

    def _refuse(self, status: int, error: GenhookError, retry_after: int | None = None) -> None:
        """Write a complete JSON error answer by hand (the h11 state may be broken) and close."""
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        body = json.dumps(error.to_dict()).encode()
        reason = REASONS.get(status, b"Service Unavailable")
        head = [
            b"HTTP/1.1 %d %s" % (status, reason),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"connection: close",
        ]
        if retry_after is not None:
            head.append(b"retry-after: %d" % retry_after)
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()


def guarded_http(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with this process's limits."""
    return type(
        "GenhookHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout": settings.header_timeout,
            "max_connections": settings.max_connections,
        },
    )
