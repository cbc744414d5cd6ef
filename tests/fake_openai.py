"""A faithful fake of OpenAI's Images API (``POST /v1/images/generations``), for tests.

It is a real HTTP/1.1 server on 127.0.0.1 (a free port by default) in a background thread. Like
the real API it checks ``Authorization: Bearer <key>`` (401 with an OpenAI-style error otherwise),
validates the JSON body (400 ``invalid_request_error`` for unparsable JSON, a missing or empty
``prompt``, a ``size`` that is not ``WxH`` or ``auto``, ``n`` outside 1..10, an unknown
``response_format``, or any ``response_format`` for the ``gpt-image-*`` models, which refuse it),
renders a real PNG of the requested size (a gradient with shapes and the prompt set in type,
deterministic per prompt and size, passing genhook's quality checks) and answers
``{"created", "data": [{"b64_json", "revised_prompt"}]}``; ``"response_format": "url"`` gets a
``url`` item served by the fake itself. Errors have the API's shape::

    {"error": {"message": "...", "type": "...", "param": null, "code": "..."}}

In-process use::

    with FakeOpenAI() as fake:              # fake.base_url == "http://127.0.0.1:<port>/v1"
        fake.script(["503", {"status": 429, "retry_after": 3}, "ok"])
        ...
        fake.requests                      # [Recorded(method, path, headers, json), ...]
        fake.reset()                       # empty script and record

Script: each ``POST .../images/generations`` that passes the key check takes the next behaviour
from the queue (``default``, normally ``"ok"``, once the queue is empty). A wrong key gets 401
and takes nothing. Behaviours, as strings or JSON objects:

- ``"ok"``: validate the body and answer with an image (base64, or a url when asked for).
- ``"url"``: like ``"ok"`` but answer with a ``url`` item whatever ``response_format`` was.
- ``"<status>"`` such as ``"503"``, ``"429"``, ``"500"``, ``"401"``, ``"404"``: that status with
  the real API's error body for it.
- ``"content_policy"``: 400 with code ``content_policy_violation``.
- ``"insufficient_quota"``: 429 with code ``insufficient_quota`` (billing, not a rate limit).
- ``"drop"``: read the request, then close the connection without answering.
- ``"garbage"``: 200 with a body that is not JSON.
- ``"empty"``: 200 with ``"data": []``.
- ``"bad_image"``: 200 with ``b64_json`` that decodes to bytes that are no image.
- ``"sleep:<seconds>"``: wait, then behave as ``"ok"``.
- an object with any of: ``"do"`` (one of the strings above, default ``"ok"``), ``"status"``
  (an int: answer with that error status), ``"retry_after"`` (seconds, sent as ``Retry-After``),
  ``"delay"`` (seconds to wait first), ``"error"`` (fields overriding the error body:
  ``message``, ``type``, ``param``, ``code``), ``"size"`` (``"WxH"``: render this size instead of
  the requested one), ``"url"`` (answer ``{"url": <this>}`` without rendering anything).

As a separate process (for acceptance tests)::

    python -m tests.fake_openai --port 0 --script ok [--api-key KEY] [--default ok]

prints ``READY <port>`` on stdout once listening and serves until SIGTERM or SIGINT. ``--script``
is a comma-separated list (``503,503,ok``) or a JSON list. At run time, without the key:

- ``POST /_fake/script`` with a JSON list replaces the queue (``{"script": [...],
  "default": "ok"}`` also sets the default); answers ``{"queued": n}``.
- ``GET /_fake/requests`` returns the recorded requests as a JSON list of
  ``{"method", "path", "headers", "json"}`` (header names lower-case).
- ``POST /_fake/reset`` empties the queue and the record.

Every request other than these three is recorded, including downloads of ``url`` images
(``GET /_fake/images/<name>.png``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FAKE_API_KEY = "sk-genhook-fake-key"
GENERATIONS_PATH = "/v1/images/generations"
MODELS_PATH = "/v1/models"
MODELS = ("gpt-image-1", "dall-e-3", "dall-e-2")
"""What ``GET /v1/models`` lists (the real API lists every model the key may use)."""
ADMIN_PATHS = ("/_fake/script", "/_fake/requests", "/_fake/reset")
IMAGES_PREFIX = "/_fake/images/"
SIZE_RE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
MAX_SIDE = 4096
WORDS = (
    "ok",
    "url",
    "drop",
    "content_policy",
    "insufficient_quota",
    "garbage",
    "empty",
    "bad_image",
)

ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: (
        "Incorrect API key provided. You can find your API key in your account settings.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to use this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    409: ("Conflict.", "invalid_request_error", None),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: (
        "Rate limit reached for images per minute. Please try again later.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
}


@dataclass(frozen=True)
class Behaviour:
    """What the fake does with one generation request."""

    do: str = "ok"
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    error: Mapping[str, Any] = field(default_factory=dict)
    size: str | None = None
    url: str | None = None

    @classmethod
    def parse(cls, item: str | int | Mapping[str, Any] | Behaviour) -> Behaviour:
        """A behaviour from its script form (see the module docstring); ValueError if invalid."""
        if isinstance(item, Behaviour):
            return item
        if isinstance(item, int) and not isinstance(item, bool):
            return cls(do="status", status=item)
        if isinstance(item, str):
            word = item.strip()
            if word.isdigit():
                return cls(do="status", status=int(word))
            if word.startswith("sleep:"):
                return cls(delay=float(word.removeprefix("sleep:")))
            if word in WORDS:
                return cls(do=word)
            raise ValueError(f"unknown fake behaviour {item!r}")
        if isinstance(item, Mapping):
            unknown = set(item) - {"do", "status", "retry_after", "delay", "error", "size", "url"}
            if unknown:
                raise ValueError(f"unknown fake behaviour keys {sorted(unknown)}")
            base = cls.parse(str(item.get("do", "ok")))
            status = item.get("status", base.status)
            size = item.get("size")
            if size is not None and not SIZE_RE.match(str(size)):
                raise ValueError(f"fake behaviour size {size!r} is not WxH")
            retry = item.get("retry_after")
            return cls(
                do="status" if status is not None else base.do,
                status=int(status) if status is not None else None,
                retry_after=float(retry) if retry is not None else None,
                delay=float(item.get("delay", base.delay)),
                error=dict(item.get("error", {})),
                size=str(size) if size is not None else None,
                url=str(item["url"]) if item.get("url") is not None else None,
            )
        raise ValueError(f"unknown fake behaviour {item!r}")


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    behaviour: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ScriptItem = str | int | Mapping[str, Any] | Behaviour


class FakeOpenAI:
    """The fake API server; a context manager that starts and stops it."""

    def __init__(
        self,
        *,
        api_key: str = FAKE_API_KEY,
        port: int = 0,
        script: Iterable[ScriptItem] = (),
        default: ScriptItem = "ok",
    ) -> None:
        self.api_key = api_key
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque(Behaviour.parse(b) for b in script)
        self._default = Behaviour.parse(default)
        self._requests: list[Recorded] = []
        self._images: dict[str, bytes] = {}
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler, self)
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What GENHOOK_OPENAI_BASE_URL should be set to."""
        return f"{self.origin}/v1"

    def start(self) -> FakeOpenAI:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-openai-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end pending delays, close every connection; idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.close_all()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting and records ---------------------------------------------------------------

    def script(self, items: Iterable[ScriptItem], *, default: ScriptItem | None = None) -> None:
        """Replace the queue of behaviours (and optionally the default once it is empty)."""
        parsed = [Behaviour.parse(item) for item in items]
        with self._lock:
            self._queue = deque(parsed)
            if default is not None:
                self._default = Behaviour.parse(default)

    def reset(self) -> None:
        """Empty the queue and the record; the default goes back to ``"ok"``."""
        with self._lock:
            self._queue.clear()
            self._default = Behaviour()
            self._requests.clear()
            self._images.clear()

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far (not the admin ones), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def generations(self) -> list[Recorded]:
        """The generation requests only."""
        return [r for r in self.requests if r.path == GENERATIONS_PATH]

    def publish(self, prompt: str, width: int, height: int) -> str:
        """Render an image and serve it at a URL of this fake; return the URL."""
        return self._store(render_png(prompt, width, height))

    # -- used by the handler -----------------------------------------------------------------

    def _next(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    def _record(self, entry: Recorded) -> None:
        with self._lock:
            self._requests.append(entry)

    def _store(self, png: bytes) -> str:
        name = hashlib.sha256(png).hexdigest()[:16]
        with self._lock:
            self._images[name] = png
        return f"{self.origin}{IMAGES_PREFIX}{name}.png"

    def _image(self, name: str) -> bytes | None:
        with self._lock:
            return self._images.get(name)

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the fake is closing meanwhile."""
        return not self._stopping.wait(seconds) if seconds > 0 else True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # a burst of concurrent jobs is not refused at the listen queue

    def __init__(self, address: tuple[str, int], handler: type[_Handler], fake: FakeOpenAI) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        """Shut down open keep-alive connections so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "fake-openai/1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the record, not a log."""

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. it timed out): nothing to answer
            self.close_connection = True

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _error(
        self,
        status: int,
        message: str | None = None,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        default_message, default_type, default_code = ERRORS.get(
            status, ("Error.", "server_error" if status >= 500 else "invalid_request_error", None)
        )
        error: dict[str, Any] = {
            "message": message or default_message,
            "type": type_ or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
        error.update(overrides or {})
        self._json(status, {"error": error}, headers=headers)

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_fake/requests":
            self._json(200, [r.to_dict() for r in self.fake.requests])
            return
        self._record(path, None)
        if path == MODELS_PATH:
            if self._refuse_key():
                return
            models = [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"}
                for m in MODELS
            ]
            self._json(200, {"object": "list", "data": models})
            return
        if path.startswith(IMAGES_PREFIX) and path.endswith(".png"):
            png = self.fake._image(path.removeprefix(IMAGES_PREFIX).removesuffix(".png"))
            if png is not None:
                self._send(200, png, "image/png")
                return
        self._error(404, f"Invalid URL (GET {path})", code=None)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        raw = self._body()
        if path in ADMIN_PATHS:
            self._admin(path, raw)
            return
        parsed = _parse_json(raw)
        if path != GENERATIONS_PATH:
            self._record(path, parsed)
            self._error(404, f"Invalid URL (POST {path})", code=None)
            return
        if self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            self._record(path, parsed, "401")
            self._refuse_key()
            return
        behaviour = self.fake._next()
        self._record(path, parsed, _describe(behaviour))
        if not self.fake._wait(behaviour.delay):
            self.close_connection = True
            return
        self._behave(behaviour, raw, parsed)

    def _refuse_key(self) -> bool:
        """Answer 401 as the real API does when the key is missing or wrong; True if it did."""
        if self.headers.get("Authorization") == f"Bearer {self.fake.api_key}":
            return False
        if not self.headers.get("Authorization"):
            self._error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code=None,
            )
        else:
            self._error(401)
        return True

    def _record(self, path: str, parsed: Any, behaviour: str = "") -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake._record(Recorded(self.command, path, headers, parsed, behaviour))

    def _admin(self, path: str, raw: bytes) -> None:
        if path == "/_fake/reset":
            self.fake.reset()
            self._json(200, {"reset": True})
            return
        if path == "/_fake/requests":
            self._error(405, "Use GET.")
            return
        payload = _parse_json(raw)
        default = None
        if isinstance(payload, dict):
            default = payload.get("default")
            payload = payload.get("script")
        if not isinstance(payload, list):
            self._error(400, 'Expected a JSON list of behaviours (or {"script": [...]}).')
            return
        try:
            self.fake.script(payload, default=default)
        except (ValueError, TypeError) as exc:
            self._error(400, str(exc))
            return
        self._json(200, {"queued": len(payload)})

    # -- behaviours --------------------------------------------------------------------------

    def _behave(self, behaviour: Behaviour, raw: bytes, parsed: Any) -> None:
        headers = (
            {"Retry-After": f"{behaviour.retry_after:g}"}
            if behaviour.retry_after is not None
            else {}
        )
        if behaviour.do == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour.do == "status" and behaviour.status is not None:
            self._error(behaviour.status, overrides=behaviour.error, headers=headers)
            return
        if behaviour.do == "content_policy":
            self._error(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our safety system.",
                code="content_policy_violation",
                overrides=behaviour.error,
                headers=headers,
            )
            return
        if behaviour.do == "insufficient_quota":
            self._error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                type_="insufficient_quota",
                code="insufficient_quota",
                overrides=behaviour.error,
                headers=headers,
            )
            return
        if behaviour.do == "garbage":
            self._send(200, b"<html>upstream hiccup</html>", "text/html", headers)
            return
        if behaviour.do == "empty":
            self._json(200, {"created": int(time.time()), "data": []}, headers)
            return
        if behaviour.do == "bad_image":
            junk = base64.b64encode(b"this is not an image at all").decode()
            self._json(200, {"created": int(time.time()), "data": [{"b64_json": junk}]}, headers)
            return
        if behaviour.url is not None:
            self._json(
                200, {"created": int(time.time()), "data": [{"url": behaviour.url}]}, headers
            )
            return
        self._generate(behaviour, raw, parsed, headers)

    def _generate(
        self, behaviour: Behaviour, raw: bytes, body: Any, headers: Mapping[str, str]
    ) -> None:
        """The real API's validation, then a rendered image."""
        if not isinstance(body, dict):
            self._error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON.)",
            )
            return
        problem = validate(body)
        if problem is not None:
            message, param, code = problem
            self._error(400, message, param=param, code=code)
            return
        model = str(body.get("model") or "dall-e-2")
        size = behaviour.size or str(body.get("size") or "1024x1024")
        if size == "auto":
            size = "1024x1024"
        width, height = (int(v) for v in size.split("x"))
        prompt = str(body["prompt"])
        png = render_png(prompt, width, height)
        revised = f"{prompt} (rendered by the fake OpenAI images API)"
        wants_url = behaviour.do == "url" or body.get("response_format") == "url"
        if wants_url and not model.startswith("gpt-image"):
            item: dict[str, Any] = {"url": self.fake._store(png), "revised_prompt": revised}
        else:
            item = {"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": revised}
        self._json(200, {"created": int(time.time()), "data": [item]}, headers)


def validate(body: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The real API's 400 for a generation body: (message, param, code), or None when valid."""
    prompt = body.get("prompt")
    if prompt is None:
        return "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
    if not isinstance(prompt, str):
        return "Invalid type for 'prompt': expected a string.", "prompt", "invalid_type"
    if not prompt.strip():
        return "Invalid 'prompt': empty string.", "prompt", "empty_string"
    model = body.get("model", "dall-e-2")
    if not isinstance(model, str) or not model:
        return "Invalid value for 'model'.", "model", "invalid_value"
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        return f"Invalid value for 'n': {n!r}. Must be between 1 and 10.", "n", "invalid_value"
    if "response_format" in body:
        if model.startswith("gpt-image"):
            return (
                "Unknown parameter: 'response_format'.",
                "response_format",
                "unknown_parameter",
            )
        if body["response_format"] not in ("url", "b64_json"):
            return (
                f"Invalid value: {body['response_format']!r}. Supported values are: 'url' and "
                "'b64_json'.",
                "response_format",
                "invalid_value",
            )
    size = body.get("size", "1024x1024")
    if size != "auto":
        match = SIZE_RE.match(size) if isinstance(size, str) else None
        if match is None:
            return (
                f"Invalid value: {size!r}. Size must be 'WIDTHxHEIGHT' (e.g. '1024x1024').",
                "size",
                "invalid_value",
            )
        width, height = int(match.group(1)), int(match.group(2))
        if not (16 <= width <= MAX_SIDE and 16 <= height <= MAX_SIDE):
            return (
                f"Invalid value: {size!r}. Each side must be between 16 and {MAX_SIDE} pixels.",
                "size",
                "invalid_value",
            )
    return None


def render_png(prompt: str, width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height``: a gradient, shapes and the prompt in type.

    Deterministic for (prompt, width, height). Its hard edges and light/dark spread give it a
    grayscale standard deviation well above 20 and a Laplacian variance well above 100.
    """
    digest = hashlib.sha256(prompt.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    top = rng.integers(0, 90, 3)
    bottom = rng.integers(150, 256, 3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float64)[:, None, None]
    across = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :, None]
    mix = 0.75 * ramp + 0.25 * across
    background = top[None, None, :] * (1 - mix) + bottom[None, None, :] * mix
    image = Image.fromarray(np.ascontiguousarray(background.astype(np.uint8)), "RGB")
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(6 + int(rng.integers(0, 4))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = max(4, int(side * rng.uniform(0.12, 0.35)))
        box = (x0 - extent // 2, y0 - extent // 2, x0 + extent // 2, y0 + extent // 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        outline = (255, 255, 255) if sum(fill) < 384 else (0, 0, 0)
        line = max(1, side // 128)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill, outline=outline, width=line)
        else:
            draw.rectangle(box, fill=fill, outline=outline, width=line)
    stripe = max(2, side // 48)
    for i, x in enumerate(range(0, width, stripe)):
        shade = 20 if i % 2 else 235
        draw.rectangle((x, height - stripe * 2, x + stripe - 1, height - 1), fill=(shade,) * 3)
    font = ImageFont.load_default(size=max(8, side // 14))
    text = " ".join(prompt.split()[:4])[:40] or "fake"
    margin = max(2, side // 24)
    draw.text(
        (margin, margin),
        text,
        fill=(255, 255, 255),
        font=font,
        stroke_width=max(1, side // 200),
        stroke_fill=(0, 0, 0),
    )
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _describe(behaviour: Behaviour) -> str:
    if behaviour.do == "status":
        return str(behaviour.status)
    return behaviour.do if not behaviour.delay else f"{behaviour.do} after {behaviour.delay:g}s"


def _script_arg(text: str) -> list[Any]:
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("--script JSON must be a list")
        return items
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Serve the fake until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_openai",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--script", default="", help="behaviours: 'ok,503' or a JSON list")
    parser.add_argument("--default", default="ok", help="behaviour once the script is used up")
    parser.add_argument("--api-key", default=FAKE_API_KEY, help="the Bearer key accepted")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeOpenAI(
        api_key=args.api_key, port=args.port, script=_script_arg(args.script), default=args.default
    ) as fake:
        print(f"READY {fake.port}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
