"""A faithful fake of fal's queue API, for tests.

What it follows (fal's queue documentation, "Queue endpoints", and fal_client's
``projects/fal_client/src/fal_client/client.py``: ``_BaseRequestHandle``, ``_parse_status``,
``_raise_for_status``, ``AppId``):

- ``POST /{model_id}`` (``model_id`` may have a subpath: ``fal-ai/flux/schnell``) with
  ``Authorization: Key <key>`` (401 ``{"detail"}`` otherwise) and the input as JSON answers
  ``{request_id, response_url, status_url, cancel_url, queue_position}``; the request URLs live
  under ``/{owner}/{alias}/requests/{id}``, without the subpath.
- ``GET .../requests/{id}/status`` (``?logs=1`` adds ``logs: [{message, level, source,
  timestamp}]``): ``{"status": "IN_QUEUE", "queue_position"}`` -> ``IN_PROGRESS`` (logs with
  tqdm lines) -> ``COMPLETED`` (``logs``, ``metrics``; ``error`` when it failed); unknown id 404.
- ``GET .../requests/{id}``: the result (``{"images": [{url, width, height, content_type}],
  "seed", "has_nsfw_concepts", "timings", "prompt"}``; video models ``{"video": {url,
  content_type, file_name, file_size}, "seed"}``); a failed one its error status, validation
  ``422 {"detail": [{"loc": ["body", name], "msg", "type"}]}``; not finished 400.
- ``PUT .../requests/{id}/cancel``: 202 ``{"status": "CANCELLATION_REQUESTED"}`` (recorded in
  :attr:`FakeFal.cancels`), 400 ``ALREADY_COMPLETED`` after the end.

Switches: :meth:`FakeFal.script` (one-shot answers to the next submissions: ``{"status": 429,
"retry_after": 2}``, ``{"status": 500}``), ``invalid`` (an input name the result refuses with
422), ``outcome`` (``ok``, ``stuck``: stays IN_PROGRESS), ``queue_seconds``, ``run_seconds``,
``fail_files_once``; outputs are real PNGs and a real MP4 served by the fake (``/_files/``).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fake_openai import render_png
from tests.fake_replicate import Answer, FakeHTTP, json_answer, tiny_mp4

FAKE_KEY = "fal-genhook-fake-key:0123456789abcdef"


@dataclass
class Queued:
    id: str
    model: str
    input: dict[str, Any]
    created: float
    canceled: bool = False
    result: Any = None


class FakeFal(FakeHTTP):
    """The fake fal queue; ``base_url`` is what GENHOOK_FAL_BASE_URL should be."""

    def __init__(
        self,
        *,
        key: str = FAKE_KEY,
        queue_seconds: float = 0.2,
        run_seconds: float = 0.3,
        image_scale: float = 0.05,
    ) -> None:
        super().__init__()
        self.key = key
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.image_scale = image_scale
        self.outcome = "ok"
        self.invalid: str | None = None
        self.queue: deque[dict[str, Any]] = deque()
        self.jobs: dict[str, Queued] = {}
        self.cancels: list[str] = []

    @property
    def base_url(self) -> str:
        return self.origin

    def script(self, *answers: dict[str, Any]) -> None:
        with self.lock:
            self.queue.extend(answers)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: Any) -> Answer:
        parts_ = urlsplit(path)
        query = parse_qs(parts_.query)
        parts = parts_.path.strip("/").split("/")
        if headers.get("authorization") != f"Key {self.key}":
            return json_answer(401, {"detail": "Unauthorized: invalid key"})
        if len(parts) >= 4 and parts[2] == "requests":
            job = self.jobs.get(parts[3])
            if job is None:
                return json_answer(404, {"detail": f"Request {parts[3]} not found"})
            rest = parts[4:]
            if method == "GET" and rest == ["status"]:
                return json_answer(200, self._status(job, "1" in query.get("logs", [])))
            if method == "GET" and not rest:
                return self._result(job)
            if method == "PUT" and rest == ["cancel"]:
                with self.lock:
                    self.cancels.append(job.id)
                if self._status(job, False)["status"] == "COMPLETED":
                    return json_answer(400, {"status": "ALREADY_COMPLETED"})
                job.canceled = True
                return json_answer(202, {"status": "CANCELLATION_REQUESTED"})
            return json_answer(405, {"detail": "Method not allowed"})
        if method == "POST" and len(parts) >= 2:
            return self._submit("/".join(parts), body)
        return json_answer(404, {"detail": "Not found"})

    def _submit(self, model: str, body: Any) -> Answer:
        with self.lock:
            scripted = self.queue.popleft() if self.queue else None
        if scripted is not None:
            status = int(scripted["status"])
            extra = (
                {"Retry-After": str(scripted["retry_after"])} if "retry_after" in scripted else {}
            )
            return json_answer(status, {"detail": f"scripted HTTP {status}"}, extra)
        if not isinstance(body, dict):
            return json_answer(422, {"detail": [{"loc": ["body"], "msg": "not an object"}]})
        job = Queued(uuid.uuid4().hex, model, body, time.monotonic())
        with self.lock:
            self.jobs[job.id] = job
        app = "/".join(model.split("/")[:2])
        base = f"{self.origin}/{app}/requests/{job.id}"
        return json_answer(
            200,
            {
                "status": "IN_QUEUE",
                "request_id": job.id,
                "response_url": base,
                "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel",
                "queue_position": 0,
            },
        )

    def _status(self, job: Queued, logs: bool) -> dict[str, Any]:
        elapsed = time.monotonic() - job.created
        base = f"{self.origin}/{'/'.join(job.model.split('/')[:2])}/requests/{job.id}"
        out: dict[str, Any] = {"response_url": base, "status_url": f"{base}/status"}
        if job.canceled:
            out.update(status="COMPLETED", logs=[] if logs else None, error="Request cancelled")
            return out
        if elapsed < self.queue_seconds:
            out.update(status="IN_QUEUE", queue_position=max(0, 2 - int(elapsed * 10)))
            return out
        running = elapsed - self.queue_seconds
        done = self.outcome != "stuck" and running >= self.run_seconds
        steps = 4
        k = steps if done else min(steps - 1, int(running / max(self.run_seconds, 1e-6) * steps))
        lines = [
            {
                "message": f"{int(i / steps * 100):3d}%|{'█' * i}{' ' * (steps - i)}| {i}/{steps}",
                "level": "INFO",
                "source": "user",
                "timestamp": "2026-01-01T00:00:00.000000",
            }
            for i in range(k + 1)
        ]
        out.update(status="COMPLETED" if done else "IN_PROGRESS", logs=lines if logs else None)
        if done:
            out["metrics"] = {"inference_time": self.run_seconds}
        return out

    def _result(self, job: Queued) -> Answer:
        if self._status(job, False)["status"] != "COMPLETED":
            return json_answer(400, {"detail": "Request is still in progress"})
        if job.canceled:
            return json_answer(400, {"detail": "Request was cancelled"})
        if self.invalid is not None:
            detail = [
                {"loc": ["body", self.invalid], "msg": "value is not valid", "type": "value_error"}
            ]
            return json_answer(422, {"detail": detail})
        prompt = job.input.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return json_answer(
                422,
                {
                    "detail": [
                        {"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}
                    ]
                },
            )
        if job.result is None:
            if "num_frames" in job.input:
                data = tiny_mp4()
                url = self.store(data, "video/mp4", ".mp4")
                job.result = {
                    "video": {"url": url, "content_type": "video/mp4", "file_name": "output.mp4",
                              "file_size": len(data)},
                    "seed": job.input.get("seed", 0),
                }  # fmt: skip
            else:
                size = job.input.get("image_size") or {"width": 1024, "height": 768}
                w = max(16, int(int(size["width"]) * self.image_scale))
                h = max(16, int(int(size["height"]) * self.image_scale))
                url = self.store(render_png(prompt, w, h), "image/png", ".png")
                job.result = {
                    "images": [{"url": url, "width": w, "height": h, "content_type": "image/png"}],
                    "seed": job.input.get("seed", 0),
                    "has_nsfw_concepts": [False],
                    "timings": {"inference": self.run_seconds},
                    "prompt": prompt,
                }
        return json_answer(200, job.result)
