"""``/dashboard``: the operations dashboard (HTML), behind the operator key.

Two ways in: ``Authorization: Bearer <GENHOOK_ADMIN_KEY>`` (scripts, a proxy that adds it), or
the log-in form, which takes the key once and sets a session cookie: signed with a key derived
from the operator key (so changing ``GENHOOK_ADMIN_KEY`` ends every session), ``HttpOnly``,
``SameSite=Strict``, ``Secure`` over https, for 12 hours. Every form that changes something
(resume, replay, log out) carries a CSRF token tied to the session, and is refused without it;
a request with the Bearer header needs none (a browser never adds that header by itself). With
no operator key configured every dashboard route answers 403, like ``/v1/ops``.

The pages send no script and load nothing from elsewhere; their Content-Security-Policy says so.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from genhook.api.auth import api_store, runtime_of
from genhook.api.errors import json_errors
from genhook.api.ops import (
    OPERATOR_RESPONSES,
    admin_key,
    bearer_token,
    check_window,
    is_operator_key,
    operator_bearer,
)
from genhook.dashboard import STATIC, pages
from genhook.errors import ErrorCode, GenhookError
from genhook.store.ops import DEFAULT_WINDOW

COOKIE = "genhook_session"
SESSION_SECONDS = 12 * 3600.0
FORM_BYTES = 8 * 1024
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_FILES = {"dashboard.css": "text/css", "logo.svg": "image/svg+xml"}

router = APIRouter(responses=OPERATOR_RESPONSES)


# -- sessions ------------------------------------------------------------------------------------


def _session_key(key: str) -> bytes:
    return hmac.new(key.encode("utf-8"), b"genhook dashboard session v1", hashlib.sha256).digest()


def _sign(key: str, message: str) -> str:
    return hmac.new(_session_key(key), message.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Operator:
    """A request admitted as the operator; ``csrf`` is its session's token (None when it came
    with the Bearer header, which needs none)."""

    csrf: str | None


def new_session(key: str, now: float) -> str:
    """A session cookie's value: ``v1.<expiry>.<nonce>.<signature>``."""
    body = f"v1.{int(now + SESSION_SECONDS)}.{secrets.token_urlsafe(18)}"
    return f"{body}.{_sign(key, body)}"


def session_csrf(key: str, cookie: str | None, now: float) -> str | None:
    """The CSRF token of a valid, unexpired session cookie; None for any other value."""
    if not cookie or len(cookie) > 200:
        return None
    body, _, signature = cookie.rpartition(".")
    parts = body.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
        return None
    if not hmac.compare_digest(_sign(key, body), signature) or int(parts[1]) < now:
        return None
    return _sign(key, f"csrf.{parts[2]}")


def operator_of(request: Request) -> Operator | None:
    """The operator, by Bearer header or session cookie; None when neither (the pages then
    send the browser to the log-in form). 403 with no operator key configured; 401 for a
    Bearer header with another token."""
    key = admin_key(request)
    token = bearer_token(request)
    if token is not None:
        if not is_operator_key(token, key):
            raise GenhookError(ErrorCode.UNAUTHORIZED, "not the operator key")
        return Operator(csrf=None)
    csrf = session_csrf(key, request.cookies.get(COOKIE), runtime_of(request).clock.now())
    return None if csrf is None else Operator(csrf=csrf)


async def form_of(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the dashboard's forms), first values."""
    body = await request.body()
    if len(body) > FORM_BYTES:
        raise GenhookError(ErrorCode.PAYLOAD_TOO_LARGE, "the form is too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def checked(request: Request, form: dict[str, str]) -> Operator:
    """The operator of a form post: a valid session and its CSRF token, or the Bearer header."""
    operator = operator_of(request)
    if operator is None:
        raise GenhookError(ErrorCode.UNAUTHORIZED, "log in at /dashboard/login first")
    if operator.csrf is not None and not hmac.compare_digest(
        operator.csrf.encode(), form.get("csrf", "").encode()
    ):
        raise GenhookError(ErrorCode.FORBIDDEN, "the form's CSRF token is missing or wrong")
    return operator


def html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code, headers=HEADERS)


def to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303, headers=HEADERS)


def back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers=HEADERS)


def _window(window: str) -> str:
    return window if window in ("1h", "24h", "7d") else DEFAULT_WINDOW


# -- pages ---------------------------------------------------------------------------------------


@router.get(
    "/dashboard",
    summary="The operations dashboard (HTML)",
    response_class=HTMLResponse,
    dependencies=[Security(operator_bearer)],
    responses={
        303: {"description": "No operator key or session: to the log-in form."},
        **json_errors(OPERATOR_RESPONSES),
    },
)
def dashboard(
    request: Request,
    window: str = Query(DEFAULT_WINDOW, description="`1h`, `24h` or `7d`."),
    resumed: str | None = Query(None, include_in_schema=False),
    released: int = Query(0, include_in_schema=False),
) -> Response:
    """Per service and workflow: trigger volume, completion rate, average generation time, QC
    pass rate, credits per job, retry and failure rates, budget use and breaker state, as
    figures and as charts; held jobs by reason; the resume button. Without the Bearer header
    or a session cookie it sends the browser to the log-in form (`/dashboard/login`)."""
    operator = operator_of(request)
    if operator is None:
        return to_login()
    store = api_store(runtime_of(request))
    window = check_window(window)
    summary = store.ops_summary(window)
    series = store.ops_series(window)
    notice = None
    if resumed:
        notice = f"Resumed {resumed}: {released} held job{'s' if released != 1 else ''} released."
    return html(pages.overview(summary, series, csrf=operator.csrf, notice=notice))


@router.get("/dashboard/held", include_in_schema=False)
def held_page(request: Request, window: str = DEFAULT_WINDOW) -> Response:
    operator = operator_of(request)
    if operator is None:
        return to_login()
    store = api_store(runtime_of(request))
    summary = store.ops_summary(_window(window))
    return html(pages.held(summary, store.held_jobs(100), csrf=operator.csrf))


@router.get("/dashboard/deliveries", include_in_schema=False)
def deliveries_page(
    request: Request, window: str = DEFAULT_WINDOW, replayed: str | None = None
) -> Response:
    operator = operator_of(request)
    if operator is None:
        return to_login()
    rows = api_store(runtime_of(request)).failed_deliveries(100)
    notice = f"Delivery {replayed} is queued to be sent again now." if replayed else None
    return html(pages.failed_deliveries(_window(window), rows, csrf=operator.csrf, notice=notice))


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static_file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise GenhookError(ErrorCode.NOT_FOUND, "no such file")
    return FileResponse(
        STATIC / name,
        media_type=media_type,
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# -- log-in --------------------------------------------------------------------------------------


@router.get("/dashboard/login", include_in_schema=False)
def login_page(request: Request) -> Response:
    admin_key(request)  # 403 when operator routes are off
    return html(pages.login())


@router.post("/dashboard/login", include_in_schema=False)
async def login(request: Request) -> Response:
    key = admin_key(request)
    form = await form_of(request)
    if not is_operator_key(form.get("key", "").strip(), key):
        return html(pages.login(error="That is not the operator key."), 401)
    response = back("/dashboard")
    secure = request.url.scheme == "https" or runtime_of(request).settings.public_url.startswith(
        "https:"
    )
    response.set_cookie(
        COOKIE,
        new_session(key, runtime_of(request).clock.now()),
        max_age=int(SESSION_SECONDS),
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


@router.post("/dashboard/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    checked(request, await form_of(request))
    response = back("/dashboard/login")
    response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
    return response


# -- actions -------------------------------------------------------------------------------------


@router.post("/dashboard/services/{service}/resume", include_in_schema=False)
async def resume(service: str, request: Request) -> Response:
    form = await form_of(request)
    checked(request, form)
    runtime = runtime_of(request)
    done = await run_in_threadpool(api_store(runtime).resume_service, service)
    if done is None:
        raise GenhookError(ErrorCode.SERVICE_NOT_FOUND, f"no service named {service[:100]!r}")
    runtime.jobs_signal.notify()
    if form.get("next") == "held":
        return back("/dashboard/held")
    query: dict[str, Any] = {
        "window": _window(form.get("window", DEFAULT_WINDOW)),
        "resumed": done.service,
        "released": done.released,
    }
    return back("/dashboard?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items()))


@router.post("/dashboard/deliveries/{delivery_id}/replay", include_in_schema=False)
async def replay(delivery_id: str, request: Request) -> Response:
    checked(request, await form_of(request))
    runtime = runtime_of(request)
    store = api_store(runtime)
    if await run_in_threadpool(store.delivery, delivery_id) is None:
        raise GenhookError(ErrorCode.NOT_FOUND, "no such delivery")
    if not await run_in_threadpool(store.replay, delivery_id):
        raise GenhookError(
            ErrorCode.DELIVERY_IN_FLIGHT, "an attempt of this delivery is in flight; try again"
        )
    runtime.deliveries_signal.notify()
    return back(f"/dashboard/deliveries?replayed={quote(delivery_id, safe='')}")
