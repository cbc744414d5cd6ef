"""The ``replicate`` backend: Replicate's predictions API, images and video.

One generation is one prediction: ``POST {base}/models/{owner}/{name}/predictions`` (an official
model, ``model: owner/name``) or ``POST {base}/predictions`` with ``"version"`` (``model:
owner/name:version``), with ``Authorization: Bearer <token>``, ``Prefer: wait=N`` (N up to 60 s,
what is left of the run) and ``{"input": {...}}``. The answer is the prediction ``{id, status:
starting|processing|succeeded|failed|canceled, output, error, logs, urls: {get, cancel}}``;
one not finished when the wait ends is polled at ``urls.get``. Progress comes from the logs
where the model prints tqdm lines (``NN%|███ | k/N``, parsed as replicate-python does). A
cancelled job, or one past its bound (the job's run timeout and ``GENHOOK_REPLICATE_TIMEOUT``,
whichever ends first), cancels the prediction (``POST urls.cancel``); the cancel and the bound
are checked every 0.25 s, also while the ``Prefer: wait`` request is held (the prediction is
cancelled as soon as its id is known). Output URLs (a URL or a list of them) are downloaded,
a failure retried once.

The input (:func:`input_for`): ``prompt``, ``seed``, the size as the model takes it
(:data:`MODELS`: ``aspect_ratio`` for the FLUX models, ``width``/``height`` for others),
``negative_prompt`` where the model takes one, image inputs (``request.inputs``) as data URIs
(over 1 MiB: their URL), and ``request.options`` passed through last (they win).

Errors: no token or a refused one (401/403) ``backend_not_configured``; 429 (with
``Retry-After``) ``backend_rate_limited``; 422 (input validation) ``backend_rejected`` naming the
input; other 4xx ``backend_rejected``; 5xx ``backend_error``; a failed prediction whose error
speaks of NSFW content or invalid input ``backend_rejected``, any other ``backend_error``.
"""

from __future__ import annotations

import logging
import re
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

FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
WAN_RATIOS = ("16:9", "9:16")


MODELS: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("black-forest-labs/flux", {"size": "aspect_ratio", "ratios": FLUX_RATIOS, "negative": False,
                                "extra": {"output_format": "png", "num_outputs": 1}}),
    ("wan-video/", {"size": "wan", "ratios": WAN_RATIOS, "negative": True}),
    ("", {"size": "width_height", "negative": True}),
)  # fmt: skip
"""Model name prefix -> how it takes its input: ``size`` (``aspect_ratio``: the nearest of
``ratios``; ``width_height``; ``wan``: ``aspect_ratio``, ``resolution``, ``num_frames`` and
``frames_per_second``), ``negative`` (takes ``negative_prompt``), ``extra`` (fixed inputs)."""
TERMINAL = ("succeeded", "failed", "canceled")
REJECTED_WORDS = re.compile(
    r"nsfw|safety|content policy|flagged|sensitive content|invalid|validation|must be|"
    r"not allowed|unsupported",
    re.IGNORECASE,
)
"""A failed prediction whose error matches is the request's fault (not retried)."""
MAX_WAIT = 60
POLL_FIRST, POLL_MAX = 0.25, 2.0


def spec_for(model: str) -> Mapping[str, Any]:
    return next(spec for prefix, spec in MODELS if model.startswith(prefix))


def input_for(request: GenerationRequest) -> dict[str, Any]:
    """The prediction's ``input`` for ``request`` (see :data:`MODELS`)."""
    spec = spec_for(request.model)
    body: dict[str, Any] = {"prompt": request.prompt, "seed": request.seed}
    if spec["negative"] and request.negative_prompt.strip():
        body["negative_prompt"] = request.negative_prompt
    size = spec["size"]
    if size in ("aspect_ratio", "wan"):
        body["aspect_ratio"] = nearest_ratio(request.width, request.height, spec["ratios"])
    else:
        body["width"], body["height"] = request.width, request.height
    if request.kind == "video":
        seconds = request.duration_seconds or 5.0
        fps = request.fps or 16.0
        if size == "wan":
            body["resolution"] = "720p" if max(request.width, request.height) > 854 else "480p"
            body["frames_per_second"] = round(fps)
            body["num_frames"] = round(seconds * fps)
        else:
            body["duration"], body["fps"] = seconds, fps
    body.update(spec.get("extra", {}))
    for name, media in request.inputs.items():
        body[name] = data_uri(media)
    body.update(request.options)
    return body


class ReplicateBackend(HostedBackend):
    """Generates images and video through Replicate's predictions API."""

    name = "replicate"
    key_variable = "GENHOOK_REPLICATE_API_TOKEN"

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicateBackend:
        """The factory the backend registry calls."""
        path = settings.pricing_file
        return cls(settings.replicate, load_pricing(path) if path is not None else None)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def probe_url(self) -> str:
        """``GET /account``: authenticated, cheap, runs nothing."""
        return f"{self.base_url}/account"

    def _generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        run = Run(control, self.config.timeout, self.name)
        if (stop := run.stopped()) is not None:
            raise stop
        started = time.perf_counter()
        model, _, version = request.model.partition(":")
        if version:
            url = f"{self.base_url}/predictions"
            body: dict[str, Any] = {"version": version, "input": input_for(request)}
        else:
            url = f"{self.base_url}/models/{model}/predictions"
            body = {"input": input_for(request)}
        wait = max(1, min(MAX_WAIT, int(run.remaining())))
        headers = {**self.auth(), "Prefer": f"wait={wait}"}
        log.debug("replicate: creating a prediction of %s (wait %ss)", request.model, wait)
        prediction = run.call(
            lambda: self._create(url, body, headers, wait + 15), self._cancel_quietly
        )
        prediction = self._follow(prediction, run)
        return self.result(
            request, _outputs(prediction), run, started, f"replicate/{request.model}"
        )

    def _create(
        self, url: str, body: dict[str, Any], headers: dict[str, str], timeout: float
    ) -> dict[str, Any]:
        client = self._client.get()
        try:
            response = client.post(url, json=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc
        if response.status_code not in (200, 201, 202):
            raise _api_error(response)
        return json_object(self.name, response)

    def _follow(self, prediction: dict[str, Any], run: Run) -> dict[str, Any]:
        """Poll ``urls.get`` until the prediction ends, reporting progress; cancel it on a
        stop. Transient poll failures are waited out (the prediction runs on)."""
        pause = POLL_FIRST
        while True:
            self._progress(prediction, run.control)
            status = prediction.get("status")
            if status in TERMINAL:
                return _finished(prediction)
            if (stop := run.sleep(pause)) is not None:
                self._cancel_quietly(prediction)
                raise stop
            pause = min(POLL_MAX, pause * 1.5)
            url = _urls(prediction).get("get") or f"{self.base_url}/predictions/{prediction['id']}"
            try:
                response = self._client.get().get(url, headers=self.auth(), timeout=15.0)
            except httpx.HTTPError as exc:
                log.debug("replicate: polling failed (%s)", transport_error(exc, url).code)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                continue
            if response.status_code != 200:
                self._cancel_quietly(prediction)
                raise _api_error(response)
            prediction = json_object(self.name, response)

    def _progress(self, prediction: Mapping[str, Any], control: Control) -> None:
        logs = prediction.get("logs")
        if isinstance(logs, str) and logs:
            found = log_progress(logs.splitlines())
            if found is not None:
                control.progress(found[0], found[1], "sampling")

    def _cancel_quietly(self, prediction: Mapping[str, Any]) -> None:
        """``POST urls.cancel``; a failure is only logged (the prediction ends on its own)."""
        if prediction.get("status") in TERMINAL:
            return
        url = _urls(prediction).get("cancel")
        if not url and prediction.get("id"):
            url = f"{self.base_url}/predictions/{prediction['id']}/cancel"
        if not url:
            return
        try:
            self._client.get().post(url, headers=self.auth(), timeout=10.0)
            log.info("replicate: cancelled prediction %s", prediction.get("id"))
        except httpx.HTTPError as exc:
            log.warning("replicate: cancelling %s failed (%s)", prediction.get("id"), exc)


def _urls(prediction: Mapping[str, Any]) -> dict[str, str]:
    urls = prediction.get("urls")
    return {str(k): str(v) for k, v in urls.items()} if isinstance(urls, dict) else {}


def _finished(prediction: dict[str, Any]) -> dict[str, Any]:
    status = prediction.get("status")
    if status == "succeeded":
        return prediction
    error = clip(str(prediction.get("error") or "no error given"))
    if status == "canceled":
        raise GenhookError(ErrorCode.BACKEND_ERROR, "replicate: the prediction was canceled")
    if REJECTED_WORDS.search(error):
        raise GenhookError(ErrorCode.BACKEND_REJECTED, f"replicate: the prediction failed: {error}")
    raise GenhookError(ErrorCode.BACKEND_ERROR, f"replicate: the prediction failed: {error}")


def _outputs(prediction: Mapping[str, Any]) -> list[str]:
    output = prediction.get("output")
    if isinstance(output, str):
        return [output]
    if isinstance(output, list):
        return [item for item in output if isinstance(item, str)]
    if isinstance(output, dict):
        return [v for v in output.values() if isinstance(v, str) and ("://" in v or "data:" in v)]
    return []


FIELD = re.compile(r"^\s*-?\s*input\.?(?P<name>[A-Za-z0-9_]+)?:\s*(?P<message>.+)$")


def _api_error(response: httpx.Response) -> GenhookError:
    """A Replicate error answer (RFC 7807 problem details: ``title``, ``detail``, ``status``)
    as its GenhookError; a 422 names the input its ``detail`` names (``- input.width: ...``)."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    title = detail = ""
    if isinstance(payload, dict):
        title = str(payload.get("title") or "")
        detail = str(payload.get("detail") or "")
    else:
        detail = response.text
    if response.status_code == 422:
        names = []
        for line in detail.splitlines():
            match = FIELD.match(line)
            if match and match["name"]:
                names.append(f"input {match['name']!r}: {match['message'].strip()}")
        text = "; ".join(names) or clip(detail)
        return GenhookError(
            ErrorCode.BACKEND_REJECTED,
            f"replicate refused the input (HTTP 422{', ' + title if title else ''}): {clip(text)}",
        )
    message = clip(": ".join(part for part in (title, detail) if part))
    return status_error("replicate", response, message)
