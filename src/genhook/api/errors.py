"""Every error leaves the API as JSON with a stable ``error_code``; never a traceback."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genhook.errors import ErrorCode, GenhookError
from genhook.store.db import describe, unavailable

log = logging.getLogger("genhook.api")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNKNOWN_WORKFLOW: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.NOT_CANCELLABLE: 409,
    ErrorCode.NOT_RETRYABLE: 409,
    ErrorCode.WORKFLOW_CHANGED: 409,
    ErrorCode.INVALID_CURSOR: 422,
    ErrorCode.DELIVERY_IN_FLIGHT: 409,
    ErrorCode.ENDPOINT_DISABLED: 409,
    ErrorCode.NOT_AWAITING_REVIEW: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RANGE_NOT_SATISFIABLE: 416,
    ErrorCode.TOO_MANY_STREAMS: 429,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.SERVICE_NOT_FOUND: 404,
    ErrorCode.SCHEDULE_NOT_FOUND: 404,
    ErrorCode.JOB_EXPIRED: 410,
    ErrorCode.ASSET_EXPIRED: 410,
    ErrorCode.BATCH_EXPIRED: 410,
    ErrorCode.MALFORMED_REQUEST: 400,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
}


class ErrorBody(BaseModel):
    """The shape of every error answer: a stable ``error_code`` (error-codes.md), its text, and
    the input field at fault (null where none is)."""

    error_code: ErrorCode
    error_description: str
    field: str | None


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _doc("No valid `Authorization: Bearer <api_key>` (`unauthorized`)."),
    403: _doc("Another service's resource (`forbidden`)."),
    404: _doc("No such workflow, job, delivery or asset."),
    422: _doc("Invalid input: `error_code`, `error_description`, `field` (and `job_id`)."),
    503: _doc("`store_unavailable`: the database does not answer or cannot write now."),
}


def json_errors(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """``responses`` for a route whose own answer is not JSON (HTML, a schema, a file): FastAPI
    files error answers under the route's media type, and they are ``application/json``."""
    return {
        status: {
            "description": doc["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for status, doc in responses.items()
    }


def error_doc(description: str) -> dict[str, Any]:
    """A ``responses=`` entry of an error answer (the error shape) with ``description``."""
    return _doc(description)


def error_response(error: GenhookError, **extra: Any) -> JSONResponse:
    """The JSON answer for ``error``: 422 for invalid input, else by code; a 429 or 503 whose
    error says when to come back carries ``Retry-After`` (whole seconds)."""
    status = STATUS.get(error.code, 422 if error.invalid_input else 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if status in (429, 503) and error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return JSONResponse({**error.to_dict(), **extra}, status_code=status, headers=headers)


def log_store_failure(scope: Scope | None, error: BaseException) -> None:
    """One warning line for a request the store could not serve (no traceback: during an
    outage every request fails the same way)."""
    where = f"{scope['method']} {scope['path']}: " if scope is not None else ""
    cause = error.__cause__ or error
    log.warning("store unavailable: %s%s", where, describe(cause))


class CatchAll:
    """Turns any exception that escapes the routes into an answer inside the app.

    Starlette's outermost handler sends a 500 and then re-raises, and uvicorn then logs a
    traceback and closes the connection, resetting a keep-alive client. Here nothing is
    re-raised: a store failure answers 503, anything else 500 with one logged traceback; an
    answer already under way is ended cleanly.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            error = exc if isinstance(exc, GenhookError) else unavailable(exc)
            if error is not None and error.code is ErrorCode.STORE_UNAVAILABLE:
                log_store_failure(scope, exc)
            elif error is None:
                log.exception("unexpected error", exc_info=exc)
                error = GenhookError(ErrorCode.INTERNAL_ERROR)
            if started:
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await error_response(error)(scope, receive, send)


_HTTP_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


_NOT_JSON = "the request body is not valid JSON (RFC 8259, UTF-8)"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the error shape."""

    app.add_middleware(CatchAll)

    @app.exception_handler(GenhookError)
    async def _genhook(request: Request, exc: GenhookError) -> JSONResponse:
        if exc.code is ErrorCode.STORE_UNAVAILABLE:
            log_store_failure(request.scope, exc)
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read a JSON body (not UTF-8, say)
            return error_response(GenhookError(ErrorCode.INVALID_JSON, _NOT_JSON))
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_VALUE)
        response = error_response(GenhookError(code, str(exc.detail)))
        response.status_code = exc.status_code
        response.headers.update(exc.headers or {})  # e.g. a 405's Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":  # as the trigger routes answer it
            return error_response(GenhookError(ErrorCode.INVALID_JSON, _NOT_JSON))
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
        return error_response(
            GenhookError(
                ErrorCode.INVALID_VALUE,
                f"{'.'.join(loc) or 'request'}: {first.get('msg')}",
                field=loc[0] if loc else None,
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(GenhookError(ErrorCode.INTERNAL_ERROR))
