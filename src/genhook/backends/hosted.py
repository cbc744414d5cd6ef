"""What the hosted engines (``openai``, ``replicate``, ``fal``) share.

- :class:`SharedClient`: one thread-safe ``httpx.Client`` per backend, made on first use;
- :func:`transport_error` and :func:`status_error`: a transport failure or an HTTP status as
  the GenhookError code that says whether a retry may help (``Retry-After`` honoured);
- :class:`Run`: one generation's bound (the job's deadline and the backend's own timeout,
  whichever ends first) and its cancel, checked every :data:`TICK` seconds while waiting;
- :func:`download`: an output URL fetched with one retry and a size cap (the key only to the
  API's own origin);
- :func:`decode`: image bytes as RGB pixels; :func:`video_clip`: a downloaded video written into
  the attempt's folder and probed with PyAV into a :class:`VideoClip` and its poster frame.

Credentials never reach an error's description: :func:`scrub` removes the key from any text an
engine sends back before it is quoted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np

from genhook.backends.base import (
    AssetKind,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
    InputMedia,
    VideoClip,
)
from genhook.config import HostedSettings
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.pricing import Pricing, shipped_pricing
from genhook.retry import parse_retry_after

T = TypeVar("T")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_DETAIL = 300
"""Longest excerpt of an engine's error message or body quoted in an error description."""
TICK = 0.25
"""Seconds between two checks of cancel and deadline while a generation waits."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_VIDEO_BYTES = 512 * 1024 * 1024
CHUNK = 256 * 1024
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
"""Connections one backend's client may hold: a worker runs many jobs at once, each holding
one (a ``Prefer: wait`` request for up to 60 s); httpx's default of 100 made the rest queue."""


class SharedClient:
    """One ``httpx.Client`` for a backend, made on first use (httpx clients are thread-safe)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        timeout=httpx.Timeout(self.timeout),
                        limits=LIMITS,
                        headers={"User-Agent": "genhook"},
                        follow_redirects=False,
                    )
                client = self._client
        return client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


# -- text --------------------------------------------------------------------------------------


def clip(text: str) -> str:
    """``text`` on one line, at most :data:`MAX_DETAIL` characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` removed (an engine that echoes the key must not leak it)."""
    if secret:
        text = text.replace(secret, "***")
    return text


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) of ``url``, default ports filled in."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, f"{netloc}:{port}"


def origin_text(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, without any user:password part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def reason(exc: BaseException) -> str:
    """The innermost cause of a transport error, in a few words (e.g. connection refused)."""
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return str(text).lower()


# -- errors ------------------------------------------------------------------------------------


def transport_error(exc: httpx.HTTPError, url: str) -> GenhookError:
    """A transport failure (no HTTP answer) as a transient GenhookError."""
    where = origin_text(url)
    if isinstance(exc, httpx.ConnectTimeout):
        return GenhookError(
            ErrorCode.BACKEND_UNAVAILABLE, f"could not connect to {where} in time ({exc!r})"
        )
    if isinstance(exc, httpx.TimeoutException):
        return GenhookError(ErrorCode.BACKEND_TIMEOUT, f"{where} did not answer in time ({exc!r})")
    if isinstance(exc, httpx.ConnectError):
        return GenhookError(ErrorCode.BACKEND_UNAVAILABLE, f"could not connect to {where} ({exc})")
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        return GenhookError(
            ErrorCode.BACKEND_UNAVAILABLE, f"connection to {where} dropped ({exc!r})"
        )
    return GenhookError(ErrorCode.BACKEND_ERROR, f"HTTP exchange with {where} failed ({exc!r})")


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    return parse_retry_after(response.headers.get("retry-after"), time.time())


def status_error(engine: str, response: httpx.Response, message: str) -> GenhookError:
    """An HTTP error answer of ``engine`` as its GenhookError: 401/403 not configured (the key
    refused), 429 rate limited (``Retry-After``), 408 timeout, 5xx error (transient), any other
    4xx rejected with the engine's ``message``."""
    status = response.status_code
    detail = f"HTTP {status}" + (f": {message}" if message else "")
    if status in (401, 403):
        return GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"{engine} key refused ({detail})")
    if status == 429:
        return GenhookError(
            ErrorCode.BACKEND_RATE_LIMITED,
            f"{engine} rate limit ({detail})",
            retry_after=retry_after(response),
        )
    if status == 408:
        return GenhookError(ErrorCode.BACKEND_TIMEOUT, f"{engine} timed out ({detail})")
    if status >= 500:
        return GenhookError(
            ErrorCode.BACKEND_ERROR,
            f"{engine} failed ({detail})",
            retry_after=retry_after(response),
        )
    if 400 <= status < 500:
        return GenhookError(ErrorCode.BACKEND_REJECTED, f"{engine} refused the request ({detail})")
    return GenhookError(ErrorCode.BACKEND_ERROR, f"{engine} answered with unexpected {detail}")


def json_object(engine: str, response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; backend_error if it is not one."""
    try:
        payload = response.json()
    except ValueError as exc:
        raise GenhookError(
            ErrorCode.BACKEND_ERROR,
            f"{engine} answered HTTP {response.status_code} with a body that is not JSON",
        ) from exc
    if not isinstance(payload, dict):
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"{engine} answered with JSON that is no object"
        )
    return payload


# -- the bound of one generation ---------------------------------------------------------------


class Run:
    """One generation's bound and cancel: the job's deadline and ``timeout`` (the backend's
    own setting), whichever ends first."""

    def __init__(self, control: Control, timeout: float, engine: str) -> None:
        self.control = control
        self.engine = engine
        own = time.monotonic() + timeout
        self.deadline = own if control.deadline is None else min(own, control.deadline)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def stopped(self) -> GenhookError | None:
        """``cancelled`` once the job was cancelled, ``backend_timeout`` past the bound."""
        if self.control.is_cancelled():
            return GenhookError(ErrorCode.CANCELLED)
        if time.monotonic() >= self.deadline:
            return GenhookError(
                ErrorCode.BACKEND_TIMEOUT, f"{self.engine} did not finish within the run timeout"
            )
        return None

    def sleep(self, seconds: float) -> GenhookError | None:
        """Wait ``seconds`` (no further than the bound), checking every :data:`TICK`; the
        reason to stop if one came up."""
        until = min(time.monotonic() + seconds, self.deadline)
        while True:
            stop = self.stopped()
            if stop is not None:
                return stop
            left = until - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(TICK, left))

    def call(self, fn: Callable[[], T], abandoned: Callable[[T], None]) -> T:
        """``fn()`` in a helper thread while cancel and the bound are checked every
        :data:`TICK`; on a stop the generation ends at once (the stop raised) and
        ``abandoned(result)`` runs once ``fn`` returns (to cancel the remote work it started)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"genhook-{self.engine}")
        future: Future[T] = pool.submit(fn)
        pool.shutdown(wait=False)
        while True:
            try:
                return future.result(timeout=TICK)
            except TimeoutError:
                pass
            stop = self.stopped()
            if stop is not None:
                future.add_done_callback(lambda done: _late(done, abandoned))
                raise stop


def _late(done: Future[T], abandoned: Callable[[T], None]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    with contextlib.suppress(Exception):  # clean-up after a stop is best effort
        abandoned(done.result())


# -- outputs -----------------------------------------------------------------------------------


def download(
    client: httpx.Client,
    url: str,
    *,
    engine: str,
    cap: int,
    headers: dict[str, str] | None = None,
    into: Path | None = None,
    run: Run | None = None,
) -> bytes:
    """GET an output ``url`` (redirects followed), at most ``cap`` bytes; a failure (no answer,
    or not 200) is tried once more. Written into ``into`` when given (then b"" is returned)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise GenhookError(ErrorCode.BACKEND_ERROR, f"{engine} answered with a non-http output url")
    last: GenhookError | None = None
    for attempt in range(2):
        if run is not None and (stop := run.stopped()) is not None:
            raise stop
        try:
            return _fetch(client, url, engine=engine, cap=cap, headers=headers or {}, into=into)
        except GenhookError as exc:
            if exc.code is ErrorCode.BACKEND_REJECTED:
                raise
            last = exc
        if attempt == 0 and run is not None and (stop := run.sleep(0.2)) is not None:
            raise stop
    assert last is not None
    raise last


def _fetch(
    client: httpx.Client,
    url: str,
    *,
    engine: str,
    cap: int,
    headers: dict[str, str],
    into: Path | None,
) -> bytes:
    where = origin_text(url)
    try:
        with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
            if response.status_code != 200:
                raise GenhookError(
                    ErrorCode.BACKEND_ERROR,
                    f"downloading {engine}'s output from {where} failed with HTTP "
                    f"{response.status_code}",
                )
            size = int(response.headers.get("content-length") or 0)
            if size > cap:
                raise _too_large(engine, cap)
            sink: io.BytesIO | Any = into.open("wb") if into is not None else io.BytesIO()
            with sink:
                total = 0
                for chunk in response.iter_bytes(CHUNK):
                    total += len(chunk)
                    if total > cap:
                        raise _too_large(engine, cap)
                    sink.write(chunk)
                return b"" if into is not None else sink.getvalue()
    except httpx.HTTPError as exc:
        raise transport_error(exc, url) from exc


def _too_large(engine: str, cap: int) -> GenhookError:
    return GenhookError(
        ErrorCode.BACKEND_REJECTED, f"{engine}'s output is larger than {cap // (1024 * 1024)} MiB"
    )


def decode(data: bytes, engine: str = "the engine") -> Pixels:
    """PNG, JPEG or WebP bytes as a C-contiguous ``(h, w, 3)`` uint8 RGB array.

    Transparency is composed over white; an EXIF orientation is applied.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            rgb = image.convert("RGB")
            pixels = np.array(rgb, dtype=np.uint8)
    except Exception as exc:  # any failure to decode untrusted bytes is the backend's fault
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"{engine} answered with an undecodable image ({exc})"
        ) from exc
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.size == 0:
        raise GenhookError(ErrorCode.BACKEND_ERROR, f"decoded image has shape {pixels.shape}")
    return np.ascontiguousarray(pixels)


def video_clip(path: Path, engine: str = "the engine") -> tuple[VideoClip, Pixels]:
    """Probe the video at ``path`` with PyAV: its size, rate, length, frame count, audio, and a
    poster frame (a third of the way in, past any fade-in) as RGB pixels."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            has_audio = bool(container.streams.audio)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            frames = int(stream.frames or 0)
            seconds = 0.0
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            wanted = frames // 3 if frames else 0
            poster = None
            count = 0
            for frame in container.decode(stream):
                if poster is None or count <= wanted:
                    poster = frame.to_ndarray(format="rgb24")
                count += 1
                if frames and count > wanted:
                    break
            if poster is None:
                raise ValueError("no frame decodes")
            if not frames:
                frames = count
            width, height = int(stream.width), int(stream.height)
    except Exception as exc:  # untrusted bytes: the engine's fault
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"{engine} answered with an undecodable video ({exc})"
        ) from exc
    if not seconds and fps:
        seconds = frames / fps
    if not fps and seconds:
        fps = frames / seconds
    clip_ = VideoClip(
        path=path,
        width=width,
        height=height,
        fps=fps,
        duration_seconds=seconds,
        frames=frames,
        has_audio=has_audio,
    )
    return clip_, np.ascontiguousarray(poster)


class HostedBackend:
    """What ``replicate`` and ``fal`` share: settings, status, probe, prices, the client."""

    name = "hosted"
    key_variable = ""
    kinds: frozenset[AssetKind] = frozenset({"image", "video"})
    cpu_bound = False  # waits on a remote engine, outside the CPU gate

    def __init__(self, config: HostedSettings, pricing: Pricing | None = None) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.key = config.key
        self.pricing = pricing or shipped_pricing()
        self._problem = f"{self.key_variable} is not set" if not self.key else None
        self._client = SharedClient(60.0)

    def auth(self) -> dict[str, str]:
        raise NotImplementedError

    def probe_url(self) -> str:
        raise NotImplementedError

    def status(self) -> BackendStatus:
        """Ready when a key is set; makes no network call."""
        if self._problem:
            return BackendStatus(False, self._problem)
        where = origin_text(self.base_url) + urlsplit(self.base_url).path
        return BackendStatus(True, f"{where}, model {self.config.model}{self._price_text()}")

    def probe(self, timeout: float) -> BackendStatus:
        """Configured and answering: one cheap authenticated GET (:meth:`probe_url`)."""
        if self._problem:
            return BackendStatus(False, self._problem)
        where = origin_text(self.base_url)
        try:
            with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False) as client:
                response = client.get(
                    self.probe_url(), headers={**self.auth(), "User-Agent": "genhook"}
                )
        except httpx.TimeoutException:
            return BackendStatus(False, f"{where} did not answer within {timeout:g}s")
        except httpx.HTTPError as exc:
            return BackendStatus(False, f"{where} is not reachable ({reason(exc)})")
        status = response.status_code
        if status in (401, 403):
            return BackendStatus(False, f"key refused by {where} (HTTP {status})")
        if status >= 500 or status == 429:
            return BackendStatus(False, f"{where} answers HTTP {status}")
        return BackendStatus(True, f"{where} answering{self._price_text()}")

    def generate(
        self, request: GenerationRequest, control: Control | None = None
    ) -> GenerationResult:
        """One image or clip for ``request``, or a GenhookError whose code says if a retry
        may help (the engine's key scrubbed from it)."""
        self._not_configured()
        try:
            return self._generate(request, control or Control())
        except GenhookError as exc:
            raise self.error(exc) from None

    def _generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        raise NotImplementedError

    def estimate_cost(self, request: GenerationRequest) -> float:
        """The pricing file's credits: one image, or the clip's seconds."""
        if request.kind == "video":
            seconds = request.duration_seconds or 5.0
            return self.pricing.price(self.name, request.model, "video_seconds", seconds)
        return self.pricing.price(self.name, request.model, "image", 1)

    def close(self) -> None:
        self._client.close()

    def _price_text(self) -> str:
        price = self.pricing.unit_price(self.name, "*", "image")
        return "" if price is None else f", {price:g} credits per image"

    def _not_configured(self) -> None:
        if self._problem:
            raise GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"{self.name}: {self._problem}")

    def error(self, exc: GenhookError) -> GenhookError:
        """``exc`` with the key scrubbed from its description."""
        if self.key and self.key in exc.description:
            return GenhookError(
                exc.code,
                scrub(exc.description, self.key),
                field=exc.field,
                retry_after=exc.retry_after,
            )
        return exc

    def result(
        self,
        request: GenerationRequest,
        urls: list[str],
        run: Run,
        started: float,
        model_id: str,
    ) -> GenerationResult:
        """The generation's result from its output URLs: the first image decoded, or the
        video downloaded into the attempt's folder and probed."""
        if not urls:
            raise GenhookError(ErrorCode.BACKEND_ERROR, f"{self.name} answered without any output")
        client = self._client.get()
        url = urls[0]
        headers = self.auth() if origin(url) == origin(self.base_url) else {}
        video = None
        if request.kind == "video":
            path = run.control.scratch() / f"{self.name}-{request.seed}-{len(urls)}.mp4"
            if url.startswith("data:"):
                path.write_bytes(data_uri_bytes(url, self.name))
            else:
                download(
                    client,
                    url,
                    engine=self.name,
                    cap=MAX_VIDEO_BYTES,
                    headers=headers,
                    into=path,
                    run=run,
                )
            video, pixels = video_clip(path, self.name)
        else:
            if url.startswith("data:"):
                data = data_uri_bytes(url, self.name)
            else:
                data = download(
                    client, url, engine=self.name, cap=MAX_IMAGE_BYTES, headers=headers, run=run
                )
            pixels = decode(data, self.name)
        result = GenerationResult(
            pixels=pixels,
            request=request,
            model_id=model_id,
            credit_cost=0.0,
            seconds=time.perf_counter() - started,
            video=video,
        )
        cost = self.estimate_cost(request)
        if video is not None:
            cost = self.pricing.price(
                self.name, request.model, "video_seconds", video.duration_seconds
            )
        return replace(result, credit_cost=cost)


def data_uri(media: InputMedia, limit: int = 1024 * 1024) -> str:
    """An input image as a ``data:`` URI when it is at most ``limit`` bytes, else its URL."""
    if len(media.data) > limit:
        return media.url
    return f"data:{media.content_type};base64,{base64.b64encode(media.data).decode('ascii')}"


def data_uri_bytes(uri: str, engine: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URI an engine answered with."""
    head, _, body = uri.partition(",")
    try:
        return base64.b64decode(body, validate=True) if head.endswith(";base64") else body.encode()
    except (binascii.Error, ValueError) as exc:
        raise GenhookError(ErrorCode.BACKEND_ERROR, f"{engine} answered a bad data URI") from exc


def nearest_ratio(width: int, height: int, choices: tuple[str, ...]) -> str:
    """The ``W:H`` of ``choices`` nearest ``width / height`` on a log scale."""
    want = math.log(width / height)

    def distance(text: str) -> float:
        w, h = (int(v) for v in text.split(":"))
        return abs(math.log(w / h) - want)

    return min(choices, key=distance)


TQDM = re.compile(r"^\s*(?P<percentage>\d+)%\s*\|.+?\|\s*(?P<current>\d+)\/(?P<total>\d+)")
"""A tqdm progress line (``NN%|███ | k/N [...]``), as replicate-python's Prediction.Progress
parses the logs."""


def log_progress(lines: list[str]) -> tuple[int, int] | None:
    """(step, total) of the last tqdm line of ``lines``, if any."""
    for line in reversed(lines):
        match = TQDM.match(line.strip())
        if match:
            return int(match["current"]), int(match["total"])
    return None
