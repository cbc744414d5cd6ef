"""A faithful fake of Replicate's predictions API, for tests (and the HTTP server both fakes
of hosted engines use).

What it follows (Replicate's HTTP API reference and replicate-python, ``replicate/prediction.py``
and ``replicate/exceptions.py``):

- ``POST /v1/models/{owner}/{name}/predictions`` (official models) and ``POST /v1/predictions``
  with ``"version"``, ``Authorization: Bearer <token>`` (401 problem details otherwise), body
  ``{"input": {...}}``; answers 201 with the prediction ``{id, model, version, input, status,
  output, error, logs, metrics, created_at, started_at, completed_at, urls: {get, cancel,
  stream}}``.
- ``Prefer: wait`` / ``Prefer: wait=N`` (1..60) holds the request until the prediction ends or N
  seconds pass (replicate-python ``_create_prediction_headers``), then answers it as it stands;
  ``honour_wait=False`` answers at once (an account or proxy without sync mode).
- ``status``: ``starting`` -> ``processing`` (logs with tqdm lines ``NN%|███ | k/N [..]``, the
  form replicate-python's ``Prediction.Progress`` parses) -> ``succeeded`` | ``failed`` (with
  ``error``) | ``canceled``.
- ``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel`` (recorded in
  :attr:`FakeReplicate.cancels`), ``GET /v1/account`` (the probe).
- Errors as RFC 7807 problem details ``{"title", "detail", "status"}``; input validation is 422
  ``title: "Input validation failed"`` with one ``- input.<name>: <message>`` line per input in
  ``detail`` (and ``invalid_fields``); 429 carries ``Retry-After``.
- ``output``: a list of file URLs (images, FLUX-style) or one URL (video), served by the fake
  itself (``/_files/<name>``) as real PNGs (Pillow) and a real MP4 (PyAV, made once a session).

Switches: :meth:`FakeReplicate.script` queues one-shot answers to the next creations
(``{"status": 429, "retry_after": 2}``, ``{"status": 500}``, ``{"status": 422, "field":
"width"}``); ``outcome`` (``succeeded``, ``stuck``: stays processing, ``failed``) with
``error``; ``run_seconds``; ``honour_wait``; ``fail_polls`` (the next N polls answer 503);
``fail_files_once`` (the first download of each output file answers 500); ``image_scale``
(outputs smaller than the real model's, for speed).
"""

from __future__ import annotations

import functools
import io
import json
import math
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.fake_openai import render_png

FAKE_TOKEN = "r8_genhook-fake-token-0123456789"
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
Answer = tuple[int, dict[str, str], bytes]


@functools.cache
def tiny_mp4(width: int = 64, height: int = 48, fps: int = 12, frames: int = 12) -> bytes:
    """A real H.264 MP4 (moving gradient), encoded once per session with PyAV."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            x = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
            y = np.linspace(0, 255, height, dtype=np.float64)[:, None, None]
            rgb = ((x + y * 0.5 + i * 12) % 256).astype(np.uint8).repeat(3, axis=2)
            rgb[..., 1] = 255 - rgb[..., 1]
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeHTTP:
    """A real HTTP/1.1 server on 127.0.0.1 in a thread; subclasses answer in :meth:`handle`.
    Serves stored files at ``/_files/<name>`` (``fail_files_once``: each file's first GET 500)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.file_gets: dict[str, int] = {}
        self.fail_files_once = False
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake.lock:
                    fake.requests.append(Recorded(self.command, self.path, headers, body))
                status, extra, data = fake.dispatch(self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHTTP:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def store(self, data: bytes, content_type: str, suffix: str) -> str:
        name = f"{uuid.uuid4().hex}{suffix}"
        with self.lock:
            self.files[name] = (content_type, data)
        return f"{self.origin}/_files/{name}"

    def dispatch(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        if path.startswith("/_files/") and method == "GET":
            name = path.removeprefix("/_files/")
            with self.lock:
                found = self.files.get(name)
                count = self.file_gets[name] = self.file_gets.get(name, 0) + 1
            if found is None:
                return json_answer(404, {"detail": "Not found"})
            if self.fail_files_once and count == 1:
                return json_answer(500, {"detail": "upstream storage hiccup"})
            return 200, {"Content-Type": found[0]}, found[1]
        return self.handle(method, path, headers, body)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        return json_answer(404, {"detail": "Not found"})

    def recorded(self, method: str, prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]


def json_answer(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )


def image_size(ratio: str, megapixels: float) -> tuple[int, int]:
    w, h = (int(v) for v in ratio.split(":"))
    height = math.sqrt(megapixels * 1_000_000 * h / w)
    width = height * w / h
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    created: float
    outcome: str
    error: str | None
    canceled: bool = False
    output: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeReplicate(FakeHTTP):
    """The fake Replicate API; ``base_url`` is what GENHOOK_REPLICATE_BASE_URL should be."""

    def __init__(
        self,
        *,
        token: str = FAKE_TOKEN,
        run_seconds: float = 0.4,
        honour_wait: bool = True,
        image_scale: float = 0.05,
    ) -> None:
        super().__init__()
        self.token = token
        self.run_seconds = run_seconds
        self.honour_wait = honour_wait
        self.image_scale = image_scale
        self.outcome = "succeeded"
        self.error: str | None = None
        self.queue: deque[dict[str, Any]] = deque()
        self.predictions: dict[str, Prediction] = {}
        self.cancels: list[str] = []
        self.fail_polls = 0

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def script(self, *answers: dict[str, Any]) -> None:
        with self.lock:
            self.queue.extend(answers)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        route = urlsplit(path).path
        if headers.get("authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if method == "GET" and route == "/v1/account":
            return json_answer(200, {"type": "user", "username": "genhook", "name": "genhook"})
        parts = route.strip("/").split("/")
        if method == "POST" and (
            route == "/v1/predictions" or (len(parts) == 5 and parts[1] == "models")
        ):
            model = (
                "/".join(parts[2:4]) if parts[1] == "models" else str((body or {}).get("version"))
            )
            return self._create(model, body, headers)
        if len(parts) >= 3 and parts[1] == "predictions":
            prediction = self.predictions.get(parts[2])
            if prediction is None:
                return problem(404, "Not found", "The requested resource could not be found.")
            if method == "POST" and parts[3:] == ["cancel"]:
                with self.lock:
                    self.cancels.append(prediction.id)
                    if self._state(prediction)["status"] not in ("succeeded", "failed"):
                        prediction.canceled = True
                return json_answer(200, self._state(prediction))
            if method == "GET" and len(parts) == 3:
                with self.lock:
                    failing, self.fail_polls = self.fail_polls > 0, max(0, self.fail_polls - 1)
                if failing:
                    return problem(
                        503, "Service Unavailable", "Please retry.", {"Retry-After": "1"}
                    )
                return json_answer(200, self._state(prediction))
        return problem(404, "Not found", "The requested resource could not be found.")

    def _create(self, model: str, body: Any, headers: Mapping[str, str]) -> Answer:
        with self.lock:
            scripted = self.queue.popleft() if self.queue else None
        if scripted is not None:
            status = int(scripted["status"])
            if status == 422:
                return invalid(str(scripted.get("field", "prompt")), "Invalid value.")
            extra = (
                {"Retry-After": str(scripted["retry_after"])} if "retry_after" in scripted else {}
            )
            title = {429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "Error")
            return problem(status, title, "Request was throttled." if status == 429 else "", extra)
        inputs = body.get("input") if isinstance(body, dict) else None
        if not isinstance(inputs, dict):
            return problem(
                422, "Input validation failed", "- input: Invalid type. Expected: object"
            )
        problem_ = validate(model, inputs)
        if problem_ is not None:
            return invalid(*problem_)
        prediction = Prediction(
            uuid.uuid4().hex[:20], model, inputs, time.monotonic(), self.outcome, self.error
        )
        with self.lock:
            self.predictions[prediction.id] = prediction
        wait = parse_wait(headers.get("prefer", ""))
        if wait and self.honour_wait:
            until = time.monotonic() + wait
            while time.monotonic() < until and not self.stopping.is_set():
                if self._state(prediction)["status"] in ("succeeded", "failed", "canceled"):
                    break
                time.sleep(0.02)
        return json_answer(201, self._state(prediction))

    def _state(self, p: Prediction) -> dict[str, Any]:
        elapsed = time.monotonic() - p.created
        progress = min(1.0, elapsed / self.run_seconds) if self.run_seconds else 1.0
        steps = 4
        done = int(progress * steps)
        logs = "".join(
            f"{int(k / steps * 100):3d}%|{'█' * k}{' ' * (steps - k)}| {k}/{steps} [00:00<00:00]\n"
            for k in range(done + 1)
        )
        status = "starting" if progress < 0.2 else "processing"
        output = None
        error = None
        if p.canceled:
            status = "canceled"
        elif progress >= 1.0 and p.outcome != "stuck":
            status = p.outcome
            if status == "failed":
                error = p.error or "CUDA out of memory"
            else:
                output = self._output(p)
        base = f"{self.base_url}/predictions/{p.id}"
        return {
            "id": p.id,
            "model": p.model,
            "version": "dp-4d0bcc010b3049749a251855f12800be",
            "input": p.input,
            "logs": logs,
            "output": output,
            "error": error,
            "status": status,
            "created_at": "2026-01-01T00:00:00.000Z",
            "urls": {"get": base, "cancel": f"{base}/cancel", "stream": f"{base}/stream"},
        }

    def _output(self, p: Prediction) -> Any:
        with self.lock:
            if p.output is not None:
                return p.output
        if "num_frames" in p.input or p.model.startswith("wan-video/"):
            output: Any = self.store(tiny_mp4(), "video/mp4", ".mp4")
        else:
            if "aspect_ratio" in p.input:
                w, h = image_size(str(p.input["aspect_ratio"]), 1.0)
            else:
                w, h = int(p.input.get("width", 1024)), int(p.input.get("height", 1024))
            w, h = max(16, int(w * self.image_scale)), max(16, int(h * self.image_scale))
            output = [self.store(render_png(str(p.input["prompt"]), w, h), "image/png", ".png")]
        with self.lock:
            p.output = output
        return output


def parse_wait(prefer: str) -> int:
    """Seconds a ``Prefer: wait`` / ``wait=N`` asks to hold (0: none), at most 60."""
    for part in prefer.split(","):
        part = part.strip()
        if part == "wait":
            return 60
        if part.startswith("wait="):
            try:
                return max(1, min(60, int(part.removeprefix("wait="))))
            except ValueError:
                return 0
    return 0


def validate(model: str, inputs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(input, message) of the first invalid input, as the model's schema would refuse it."""
    if not isinstance(inputs.get("prompt"), str) or not inputs["prompt"]:
        return "prompt", "prompt is required"
    if model.startswith("black-forest-labs/flux"):
        ratio = inputs.get("aspect_ratio", "1:1")
        if ratio not in FLUX_RATIOS:
            return (
                "aspect_ratio",
                f"aspect_ratio must be one of the following: {', '.join(FLUX_RATIOS)}",
            )
        if inputs.get("output_format", "webp") not in ("webp", "jpg", "png"):
            return "output_format", "output_format must be one of the following: webp, jpg, png"
    for name in ("width", "height"):
        value = inputs.get(name)
        if value is not None and (not isinstance(value, int) or not 16 <= value <= 4096):
            return name, "Must be between 16 and 4096"
    return None


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> Answer:
    return json_answer(status, {"title": title, "detail": detail, "status": status}, headers)


def invalid(name: str, message: str) -> Answer:
    return json_answer(
        422,
        {
            "title": "Input validation failed",
            "detail": f"- input.{name}: {message}\n",
            "status": 422,
            "invalid_fields": [
                {"type": "invalid", "field": f"input.{name}", "description": message}
            ],
        },
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
