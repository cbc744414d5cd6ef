"""The ``openai`` backend: OpenAI's Images API and the many gateways that serve the same protocol.

One generation is one ``POST {base_url}/images/generations`` with ``Authorization: Bearer <key>``
and the JSON body ``{"model", "prompt", "n": 1, "size": "WxH", "response_format": "b64_json"}``
(plus ``quality``, ``style``, ``user``, ``background``, ``moderation``, ``output_format`` and
``output_compression`` when the request's options name them). The API has no negative prompt, so a
non-empty one is appended to the prompt as ``Avoid: ...``; it has no seed either, so results are
not reproducible. The GPT image models (``gpt-image-*``) always answer in base64 and refuse the
``response_format`` parameter, so it is left out for them. The answer is
``{"created", "data": [{"b64_json" | "url", "revised_prompt"?}]}``; a ``url`` item is downloaded
with the same client (the key is sent only to the API's own origin). The PNG, JPEG or WebP is
decoded to RGB pixels at whatever size came back.

A request composed for an aspect class (its ``frame`` is set) is sent the size the model supports
nearest the class's (:data:`MODEL_SIZES`; other models get the size asked) and one sentence on
composition (keep subject and text clear of the edges; on white: the product alone on pure
white). An on-white frame asks the ``gpt-image-*`` models for a transparent background, which
:func:`decode` composes over pure white.

Its settings (``genhook.config.OpenAISettings``, read from the environment by
``genhook.config`` alone) reach it through :meth:`OpenAIImagesBackend.from_settings`:

- ``GENHOOK_OPENAI_BASE_URL``: default ``https://api.openai.com/v1``
- ``GENHOOK_OPENAI_API_KEY`` (or ``OPENAI_API_KEY``): required; without it the backend is not
  ready
- ``GENHOOK_OPENAI_TIMEOUT``: seconds per HTTP exchange, default 120

Its prices are the pricing file's (``GENHOOK_PRICING_FILE``, entry ``openai``), as every
backend's are.

:meth:`OpenAIImagesBackend.probe` checks readiness with ``GET {base_url}/models`` and the key:
any answer but 401/403 (or 5xx) means the engine is there and takes the key.

Failures are translated at this edge into :class:`GenhookError` codes: a refused connection or a
dropped one is ``backend_unavailable``; a timeout is ``backend_timeout``; HTTP 429 is
``backend_rate_limited`` (``retry_after`` from ``Retry-After``), except an exhausted quota
(``insufficient_quota``), which waiting does not cure and so is ``backend_rejected``; HTTP 5xx and
malformed answers are ``backend_error``; HTTP 401 is ``backend_not_configured``; any other 4xx
is ``backend_rejected`` with the API's error code and message in the description.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from genhook.backends.base import (
    AssetKind,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
)
from genhook.backends.hosted import (
    SharedClient,
    clip,
    decode,
    json_object,
    origin,
    origin_text,
    reason,
    retry_after,
    transport_error,
)
from genhook.config import OpenAISettings, Settings
from genhook.errors import ErrorCode, GenhookError
from genhook.media.aspect import Frame, ratio_text
from genhook.pricing import Pricing, load_pricing, shipped_pricing

PASSED_OPTIONS = (
    "quality",
    "style",
    "user",
    "background",
    "moderation",
    "output_format",
    "output_compression",
)
"""Keys of ``GenerationRequest.options`` sent as-is in the request body."""
NO_RESPONSE_FORMAT_PREFIX = "gpt-image"
"""Models whose names start with this refuse ``response_format`` (they always send base64)."""


class OpenAIImagesBackend:
    """Generates images through an OpenAI-compatible ``/images/generations`` endpoint."""

    name = "openai"
    kinds: frozenset[AssetKind] = frozenset({"image"})
    cpu_bound = False  # waits on a remote engine, outside the CPU gate

    def __init__(
        self, config: OpenAISettings | None = None, pricing: Pricing | None = None
    ) -> None:
        config = config or OpenAISettings()
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.api_key = config.api_key
        self.timeout = config.timeout
        self.pricing = pricing or shipped_pricing()
        self._problem = "GENHOOK_OPENAI_API_KEY is not set" if self.api_key is None else None
        self._client = SharedClient(self.timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIImagesBackend:
        """The factory the backend registry calls: this backend from the process's settings
        (its prices from the pricing file)."""
        path = settings.pricing_file
        return cls(settings.openai, load_pricing(path) if path is not None else None)

    # -- the Backend protocol ----------------------------------------------------------------

    def status(self) -> BackendStatus:
        """Ready when a key (and a valid configuration) is set; makes no network call."""
        if self._problem:
            return BackendStatus(False, self._problem)
        where = origin_text(self.base_url) + urlsplit(self.base_url).path
        return BackendStatus(True, f"{where}{self._price_text()}")

    def probe(self, timeout: float) -> BackendStatus:
        """Configured and answering: ``GET {base_url}/models`` with the key, within ``timeout``."""
        if self._problem:
            return BackendStatus(False, self._problem)
        where = origin_text(self.base_url)
        url = f"{self.base_url}/models"
        try:
            with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False) as client:
                response = client.get(url, headers={**self._auth(), "User-Agent": "genhook"})
        except httpx.TimeoutException:
            return BackendStatus(False, f"{where} did not answer within {timeout:g}s")
        except httpx.HTTPError as exc:
            return BackendStatus(False, f"{where} is not reachable ({reason(exc)})")
        status = response.status_code
        if status in (401, 403):
            return BackendStatus(False, f"key refused by {where} (HTTP {status})")
        if status >= 500:
            return BackendStatus(False, f"{where} answers HTTP {status}")
        return BackendStatus(True, f"{where} answering{self._price_text()}")

    def estimate_cost(self, request: GenerationRequest) -> float:
        """The pricing file's credits for one image of ``request.model``."""
        return self.pricing.price(self.name, request.model, "image", 1)

    def generate(
        self, request: GenerationRequest, control: Control | None = None
    ) -> GenerationResult:
        """One image for ``request``, or a GenhookError whose code says if a retry may help."""
        if self._problem:
            raise GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"openai: {self._problem}")
        if control is not None and control.is_cancelled():
            raise GenhookError(ErrorCode.CANCELLED)
        started = time.perf_counter()
        client = self._client.get()
        url = f"{self.base_url}/images/generations"
        left = control.remaining(self.timeout) if control is not None else None
        timeout = self.timeout if left is None else left
        if timeout <= 0:
            raise GenhookError(ErrorCode.BACKEND_TIMEOUT, "openai: no time left in the run")
        try:
            response = client.post(
                url, json=self.body(request), headers=self._auth(), timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc
        _raise_for_status(response)
        image_bytes = self._image_bytes(client, json_object("openai", response))
        return GenerationResult(
            pixels=decode(image_bytes, "openai"),
            request=request,
            model_id=f"openai/{request.model}",
            credit_cost=self.estimate_cost(request),
            seconds=time.perf_counter() - started,
        )

    # -- the pieces --------------------------------------------------------------------------

    def _price_text(self) -> str:
        """``, N credits per image`` for any model (the pricing file's ``"*"``), if priced."""
        price = self.pricing.unit_price(self.name, "*", "image")
        return "" if price is None else f", {price:g} credits per image"

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        """The JSON body of the ``/images/generations`` request for ``request``."""
        prompt = request.prompt
        negative = request.negative_prompt.strip()
        if negative:
            prompt = f"{prompt.rstrip()}\n\nAvoid: {negative}"
        frame = request.frame
        width, height = request.width, request.height
        if frame is not None:  # composed for an aspect class: the model's nearest size
            width, height = size_for(request.model, width, height)
            prompt = f"{prompt.rstrip()}\n\n{frame_hint(frame, width, height)}"
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": prompt,
            "n": 1,
            "size": f"{width}x{height}",
        }
        if not request.model.startswith(NO_RESPONSE_FORMAT_PREFIX):
            body["response_format"] = "b64_json"
        elif frame is not None and frame.on_white and _alpha_allowed(request.options):
            body["background"] = "transparent"  # decoded over pure white
        for key in PASSED_OPTIONS:
            value = request.options.get(key)
            if value is not None:
                body[key] = value
        return body

    def close(self) -> None:
        """Close the HTTP client (a later generation opens a new one)."""
        self._client.close()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _image_bytes(self, client: httpx.Client, payload: Mapping[str, Any]) -> bytes:
        """The encoded image of the answer's first ``data`` item (decoded base64 or downloaded)."""
        data = payload.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise GenhookError(ErrorCode.BACKEND_ERROR, "openai answered without any image data")
        item: dict[str, Any] = data[0]
        b64 = item.get("b64_json")
        if isinstance(b64, str) and b64:
            try:
                return base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise GenhookError(
                    ErrorCode.BACKEND_ERROR, "openai answered with invalid base64 image data"
                ) from exc
        link = item.get("url")
        if isinstance(link, str) and link:
            return self._download(client, urljoin(self.base_url + "/", link))
        raise GenhookError(ErrorCode.BACKEND_ERROR, "openai answered with neither b64_json nor url")

    def _download(self, client: httpx.Client, url: str) -> bytes:
        """GET a generated image; the key goes only to the API's own origin."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise GenhookError(ErrorCode.BACKEND_ERROR, "openai answered with a non-http image url")
        headers = self._auth() if origin(url) == origin(self.base_url) else {}
        try:
            response = client.get(url, headers=headers, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url) from exc
        if response.status_code != 200:
            raise GenhookError(
                ErrorCode.BACKEND_ERROR,
                f"downloading the generated image failed with HTTP {response.status_code}",
            )
        return response.content


MODEL_SIZES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("gpt-image", ((1024, 1024), (1536, 1024), (1024, 1536))),
    ("dall-e-3", ((1024, 1024), (1792, 1024), (1024, 1792))),
    ("dall-e-2", ((1024, 1024), (512, 512), (256, 256))),
)
"""Model name prefix -> the sizes its ``size`` accepts (other models get the size asked)."""


def size_for(model: str, width: int, height: int) -> tuple[int, int]:
    """The size ``model`` supports nearest ``width x height``: the nearest aspect ratio (on a log
    scale), then the nearest pixel count; a model not in :data:`MODEL_SIZES` gets it as asked."""
    sizes = next((sizes for prefix, sizes in MODEL_SIZES if model.startswith(prefix)), None)
    if sizes is None:
        return width, height
    want, area = math.log(width / height), width * height
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - want), abs(s[0] * s[1] - area)))


def _alpha_allowed(options: Mapping[str, Any]) -> bool:
    """No background chosen, and a format with transparency."""
    return "background" not in options and options.get("output_format", "png") != "jpeg"


def frame_hint(frame: Frame, width: int, height: int) -> str:
    """Composition words for an aspect class: the frame, the safe area, a white backdrop."""
    shape = "square" if width == height else "portrait" if width < height else "landscape"
    text = (
        f"Composition: a {shape} {ratio_text(frame.ratio)} frame; keep the subject and any text "
        "well inside it, clear of the edges."
    )
    if frame.on_white:
        text += " The product alone on a pure white (#ffffff) background: no props, no text."
    return text


def _raise_for_status(response: httpx.Response) -> None:
    """Translate a non-200 answer into its GenhookError."""
    status = response.status_code
    if status == 200:
        return
    code, message = _api_error(response)
    detail = f"HTTP {status}" + (f", {code}" if code else "") + (f": {message}" if message else "")
    if status == 401:
        raise GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"openai API key refused ({detail})")
    if status == 429 and code != "insufficient_quota":
        raise GenhookError(
            ErrorCode.BACKEND_RATE_LIMITED,
            f"openai rate limit ({detail})",
            retry_after=retry_after(response),
        )
    if status == 408:
        raise GenhookError(ErrorCode.BACKEND_TIMEOUT, f"openai timed out ({detail})")
    if status >= 500:
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"openai failed ({detail})", retry_after=retry_after(response)
        )
    if 400 <= status < 500:
        raise GenhookError(ErrorCode.BACKEND_REJECTED, f"openai refused the request ({detail})")
    raise GenhookError(ErrorCode.BACKEND_ERROR, f"openai answered with unexpected {detail}")


def _api_error(response: httpx.Response) -> tuple[str | None, str]:
    """The ``error.code`` (or ``error.type``) and ``error.message`` of an API error answer."""
    try:
        payload = response.json()
    except ValueError:
        return None, clip(" ".join(response.text.split()))
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, clip(" ".join(response.text.split()))
    code = error.get("code") or error.get("type")
    message = error.get("message")
    return (
        str(code) if code not in (None, "") else None,
        clip(str(message)) if message is not None else "",
    )


__all__ = ["OpenAIImagesBackend", "decode", "frame_hint", "size_for"]
