"""A pure ASGI middleware that refuses request bodies over a size limit with 413."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genhook.api.errors import error_response
from genhook.errors import ErrorCode, GenhookError


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when the streamed body passes the limit."""


class BodyLimit:
    """Refuse bodies over ``limit`` bytes: by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, limit: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = larger or {}  # path suffix -> its own limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for suffix, own in self.larger.items():
            if scope["path"].endswith(suffix):
                limit = own
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(send, limit)
                    return
        seen = 0
        started = False

        async def guarded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        error = GenhookError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes"
        )
        body = json.dumps(error.to_dict()).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class NoNul:
    """A NUL character in the path or a query value is refused before any route sees it: it can
    name nothing (404 ``not_found`` in the path), and it is no valid filter (422
    ``invalid_value`` naming the query parameter). PostgreSQL cannot even compare text with a
    NUL in it (a route asked it to answered 500 there); bodies are checked by their parser."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = _nul_error(scope)
            if error is not None:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_error(scope: Scope) -> GenhookError | None:
    if "\x00" in scope["path"]:
        return GenhookError(ErrorCode.NOT_FOUND, "no such resource: the path holds a NUL character")
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query.lower():
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in value or "\x00" in name:
            field = name.replace("\x00", "")[:40] or None
            return GenhookError(
                ErrorCode.INVALID_VALUE, f"{field}: a NUL character is no valid value", field=field
            )
    return None
