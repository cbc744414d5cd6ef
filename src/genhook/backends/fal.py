"""The ``fal`` backend: fal's queue API, images and video.

One generation is one queued request: ``POST {base}/{model_id}`` with ``Authorization: Key
<key>`` and the model's input as JSON answers ``{request_id, response_url, status_url,
cancel_url}``. genhook polls ``GET {status_url}?logs=1``: ``IN_QUEUE`` (with
``queue_position``), ``IN_PROGRESS`` (with ``logs``, whose tqdm lines become progress),
``COMPLETED``; then ``GET {response_url}`` gives the result: ``{"images": [{"url", "width",
"height", "content_type"}], "seed"}`` for images, ``{"video": {"url"}}`` for video. A cancelled
job, or one past its bound (the job's run timeout and ``GENHOOK_FAL_TIMEOUT``, whichever ends
first), is cancelled with ``PUT {cancel_url}``; both are checked every 0.25 s.

The input (:func:`input_for`): ``prompt``, ``seed``, ``image_size`` ``{width, height}`` (video
models: ``aspect_ratio``, ``resolution``, ``num_frames``, ``frames_per_second``),
``negative_prompt`` where the model takes one (not the FLUX models), ``num_images: 1``, image
inputs as data URIs (over 1 MiB: their URL) and ``request.options`` passed through last.

The probe is ``GET {base}/{owner}/{alias}/requests/<a nil id>/status`` with the key: fal has no
account endpoint on its queue host, and the status of a request that does not exist is free,
authenticated and runs nothing (401/403: key refused; 404: the key was taken).

Errors: no key or a refused one (401/403) ``backend_not_configured``; 429 ``backend_rate_limited``
(``Retry-After``); 422 (``detail: [{loc, msg}]``) ``backend_rejected`` naming the input (the last
part of ``loc``); other 4xx ``backend_rejected``; 5xx and connection failures transient.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from genhook.backends.base import Control, GenerationRequest, GenerationResult
from genhook.backends.hosted import (
    HostedBackend,
    Run,
    clip,
    data_uri,
    json_object,
    log_progress,
    nearest_ratio,
    status_error,
    transport_error,
)
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.pricing import load_pricing

log = logging.getLogger(__name__)

NO_NEGATIVE = ("fal-ai/flux",)
"""Model prefixes that take no ``negative_prompt``."""
VIDEO_RATIOS = ("16:9", "9:16", "1:1")
NIL_ID = "00000000-0000-0000-0000-000000000000"
POLL_FIRST, POLL_MAX = 0.25, 2.0


def app_path(model: str) -> str:
    """``owner/alias`` of a model id (``fal-ai/flux/schnell`` -> ``fal-ai/flux``): status and
    result live there, without the subpath (fal_client's AppId)."""
    parts = model.split("/")
    return "/".join(parts[:2])


def input_for(request: GenerationRequest) -> dict[str, Any]:
    """The JSON input of the queued request for ``request``."""
    body: dict[str, Any] = {"prompt": request.prompt, "seed": request.seed}
    if request.negative_prompt.strip() and not request.model.startswith(NO_NEGATIVE):
        body["negative_prompt"] = request.negative_prompt
    if request.kind == "video":
        seconds = request.duration_seconds or 5.0
        fps = request.fps or 16.0
        body["aspect_ratio"] = nearest_ratio(request.width, request.height, VIDEO_RATIOS)
        body["resolution"] = "720p" if max(request.width, request.height) > 854 else "480p"
        body["frames_per_second"] = round(fps)
        body["num_frames"] = round(seconds * fps)
    else:
        body["image_size"] = {"width": request.width, "height": request.height}
        body["num_images"] = 1
    for name, media in request.inputs.items():
        body[f"{name}_url" if not name.endswith("_url") else name] = data_uri(media)
    body.update(request.options)
    return body


class FalBackend(HostedBackend):
    """Generates images and video through fal's queue API."""

    name = "fal"
    key_variable = "GENHOOK_FAL_KEY"

    @classmethod
    def from_settings(cls, settings: Settings) -> FalBackend:
        """The factory the backend registry calls."""
        path = settings.pricing_file
        return cls(settings.fal, load_pricing(path) if path is not None else None)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def probe_url(self) -> str:
        return f"{self.base_url}/{app_path(self.config.model)}/requests/{NIL_ID}/status"

    def _generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        run = Run(control, self.config.timeout, self.name)
        if (stop := run.stopped()) is not None:
            raise stop
        started = time.perf_counter()
        url = f"{self.base_url}/{request.model}"
        client = self._client.get()
        try:
            response = client.post(url, json=input_for(request), headers=self.auth())
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc
        if response.status_code not in (200, 201, 202):
            raise _api_error(response)
        queued = json_object(self.name, response)
        base = f"{self.base_url}/{app_path(request.model)}/requests/{queued.get('request_id')}"
        handle = {
            "status": str(queued.get("status_url") or f"{base}/status"),
            "response": str(queued.get("response_url") or base),
            "cancel": str(queued.get("cancel_url") or f"{base}/cancel"),
        }
        self._wait(handle, run)
        try:
            answer = client.get(handle["response"], headers=self.auth())
        except httpx.HTTPError as exc:
            raise transport_error(exc, handle["response"]) from exc
        if answer.status_code != 200:
            raise _api_error(answer)
        payload = json_object(self.name, answer)
        return self.result(request, _outputs(payload), run, started, f"fal/{request.model}")

    def _wait(self, handle: Mapping[str, str], run: Run) -> None:
        """Poll the status until COMPLETED, reporting progress; cancel on a stop."""
        pause = POLL_FIRST
        client = self._client.get()
        while True:
            try:
                response = client.get(
                    handle["status"], params={"logs": 1}, headers=self.auth(), timeout=15.0
                )
            except httpx.HTTPError as exc:
                log.debug("fal: polling failed (%s)", transport_error(exc, handle["status"]).code)
                response = None
            if response is not None and response.status_code in (200, 202):
                status = json_object(self.name, response)
                state = status.get("status")
                if state == "IN_QUEUE":
                    position = status.get("queue_position")
                    run.control.progress(0, 1, f"queued at position {position}")
                logs = status.get("logs")
                if isinstance(logs, list):
                    lines = [str(e.get("message", "")) for e in logs if isinstance(e, dict)]
                    found = log_progress(lines)
                    if found is not None:
                        run.control.progress(found[0], found[1], "sampling")
                if state == "COMPLETED":
                    return
            elif (
                response is not None and response.status_code < 500 and response.status_code != 429
            ):
                raise _api_error(response)
            if (stop := run.sleep(pause)) is not None:
                self._cancel(handle)
                raise stop
            pause = min(POLL_MAX, pause * 1.5)

    def _cancel(self, handle: Mapping[str, str]) -> None:
        try:
            self._client.get().put(handle["cancel"], headers=self.auth(), timeout=10.0)
            log.info("fal: cancelled the queued request")
        except httpx.HTTPError as exc:
            log.warning("fal: cancelling failed (%s)", exc)


def _outputs(payload: Mapping[str, Any]) -> list[str]:
    images = payload.get("images")
    if isinstance(images, list):
        return [str(i["url"]) for i in images if isinstance(i, dict) and i.get("url")]
    for key in ("video", "image"):
        item = payload.get(key)
        if isinstance(item, dict) and item.get("url"):
            return [str(item["url"])]
    return []


def _api_error(response: httpx.Response) -> GenhookError:
    """A fal error answer: ``{"detail": "..."}`` or, for validation, ``{"detail": [{"loc",
    "msg", "type"}]}`` (422) naming the input."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = item.get("loc")
                name = str(loc[-1]) if isinstance(loc, list) and loc else "?"
                parts.append(f"input {name!r}: {item.get('msg', '')}")
        text = clip("; ".join(parts))
        if response.status_code in (400, 422):
            return GenhookError(
                ErrorCode.BACKEND_REJECTED,
                f"fal refused the input (HTTP {response.status_code}): {text}",
            )
        return status_error("fal", response, text)
    message = clip(str(detail)) if detail else clip(response.text)
    return status_error("fal", response, message)
