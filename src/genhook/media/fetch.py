"""Inputs by URL: image inputs of a trigger fetched safely, checked, cached, handed to backends.

A template may declare an image input (``format: uri`` with ``x-media: image``); its value is a
URL that a requesting system gave, so fetching it must not let that system reach the operator's
own network. :class:`MediaFetcher` fetches under the callback policy
(:mod:`genhook.delivery.addresses`, ``GENHOOK_ALLOW_PRIVATE_CALLBACKS``):

* every URL, the first and each redirect's, passes the callback URL syntax check and the
  IP-literal check of the sender (:func:`genhook.delivery.sender.blocked_literal`), and host
  names are resolved at connect time through the same
  :class:`~genhook.delivery.ssrf.GuardedResolver` as callbacks (DNS rebinding cannot reach
  inside). At most :data:`MAX_REDIRECTS` redirects are followed, each checked so;
* the body is streamed and the download aborted as soon as it passes ``max_bytes``
  (``GENHOOK_INPUT_MAX_BYTES``; a ``Content-Length`` over it is refused before reading);
* the ``Content-Type`` must be ``image/png``, ``image/jpeg`` or ``image/webp``, and the bytes
  must decode (Pillow, only those three decoders) to at most ``max_pixels`` pixels;
* the whole fetch, redirects included, has ``timeout`` seconds (``GENHOOK_INPUT_TIMEOUT``).

Failures: a refused connection or reset, a 5xx, 408 or 429, a timeout, a DNS failure or a body
cut short are ``input_fetch_failed`` (transient: the job is tried again on its retry schedule);
a refused address, another 4xx, too many redirects, too large, the wrong content type or bytes
that do not decode are ``invalid_input_media`` (permanent), both with ``field`` the trigger field.

Cache: by content (sha256). Bytes are kept once in memory (bounded) and once on disk under
``cache_dir`` (``GENHOOK_DATA_DIR/inputs``), and a URL fetched within ``url_ttl`` seconds is
answered from them without a request, in this process and in any other sharing the folder.

The fetcher is process-wide: :func:`install_fetcher` sets the one built from the settings
(:meth:`MediaFetcher.from_settings`), and :func:`fetch_inputs` is what the generate node calls.
Its network side runs on an event loop thread of its own, so it can be called from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import io
import json
import os
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from PIL import Image, UnidentifiedImageError
from yarl import URL

from genhook.backends.base import InputMedia
from genhook.contract.envelope import check_callback_url
from genhook.delivery.addresses import literal_address, metadata_name
from genhook.delivery.sender import blocked_literal
from genhook.delivery.ssrf import CallbackBlocked, GuardedResolver, Resolver, check_callback_target
from genhook.errors import ErrorCode, GenhookError, InvalidInput

if TYPE_CHECKING:
    from genhook.config import Settings
    from genhook.workflow.node import RunContext

__all__ = [
    "ALLOWED_TYPES",
    "MAX_REDIRECTS",
    "MediaFetcher",
    "check_media_url",
    "fetch_inputs",
    "install_fetcher",
    "process_fetcher",
]

ALLOWED_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
"""The content types an image input may have, and the Pillow decoder each must decode with."""
_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_FORMAT_TYPES = {fmt: ctype for ctype, fmt in ALLOWED_TYPES.items()}
MAX_REDIRECTS = 3
"""Redirects followed per fetch, each one's target checked like the first URL."""
MAX_PIXELS = 40_000_000
"""The most pixels an input may decode to (a decompression bomb is refused before decoding)."""
URL_TTL = 300.0
"""Seconds a fetched URL is answered from the cache without asking its server again."""
MEMORY_BYTES = 64 * 1024 * 1024
"""The most input bytes kept in memory (least recently used go first; the disk keeps them)."""
CONNECT_TIMEOUT = 10.0
CANCEL_POLL = 0.25
"""Seconds between looks at whether the job was cancelled while a fetch is under way."""
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_STATUS = (408, 425, 429)

T = TypeVar("T")


def _host(url: str) -> str:
    """The host of ``url`` for messages (never the path or query: they may carry tokens)."""
    with contextlib.suppress(ValueError):
        return urlsplit(url).hostname or "?"
    return "?"


def _reworded(exc: InvalidInput, field: str, code: ErrorCode) -> GenhookError:
    """A callback-URL refusal said of input ``field`` instead (same reason, its own code)."""
    text = exc.description.replace("callback_url", f"'{field}'")
    text = text.replace("callbacks may", "inputs by URL may")
    if code is ErrorCode.INVALID_VALUE:
        return InvalidInput(code, text, field=field)
    return GenhookError(code, text, field=field)


class _NoLookup:
    """A resolver for checks that must not resolve (only IP literals reach it: none do)."""

    def resolve(self, host: str, port: int) -> list[str]:
        raise OSError("not resolved here")


def check_media_url(
    url: object,
    field: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
    code: ErrorCode = ErrorCode.INVALID_VALUE,
) -> str:
    """``url`` if input ``field`` may be fetched from it, else an error with ``code`` naming it.

    Always: an absolute http(s) URL with a host, no credentials (the callback URL rules); an
    IP-literal host, in any spelling, must be one the policy allows; a metadata service's name is
    refused. With a ``resolver``, a name must resolve, to allowed addresses only (what
    ``callback_url`` gets at trigger time); without one, names are left to the connect-time guard.
    """
    try:
        checked = check_callback_url(url)
        host = urlsplit(checked).hostname or ""
        if resolver is not None or literal_address(host) is not None:
            check_callback_target(
                checked, allow_private=allow_private, resolver=resolver or _NoLookup()
            )
        elif metadata_name(host):
            raise InvalidInput(
                ErrorCode.INVALID_CALLBACK_URL,
                f"callback_url host {host} is a cloud metadata service; refused",
            )
    except InvalidInput as exc:
        raise _reworded(exc, field, code) from None
    return checked


def _error(code: ErrorCode, field: str, url: str, why: str) -> GenhookError:
    return GenhookError(code, f"'{field}' ({_host(url)}): {why}", field=field)


def _failed(field: str, url: str, why: str) -> GenhookError:
    return _error(ErrorCode.INPUT_FETCH_FAILED, field, url, why)


def _invalid(field: str, url: str, why: str) -> GenhookError:
    return _error(ErrorCode.INVALID_INPUT_MEDIA, field, url, why)


def _content_type(header: str | None) -> str | None:
    """The media type of a ``Content-Type`` header, lower case, without parameters."""
    if not header:
        return None
    media = header.split(";", 1)[0].strip().lower()
    return _TYPE_ALIASES.get(media, media)


class MediaFetcher:
    """Fetches image inputs by URL under the callback policy, checked and cached (module doc).

    ``resolver`` (an aiohttp resolver or a blocking
    :class:`~genhook.delivery.ssrf.Resolver`; default the system's) is always wrapped in a
    :class:`~genhook.delivery.ssrf.GuardedResolver`. ``cache_dir`` None keeps the cache in memory
    only. ``clock`` is the Unix time the URL cache is judged by (shared through the disk).
    """

    def __init__(
        self,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        timeout: float = 30.0,
        allow_private: bool = False,
        cache_dir: Path | None = None,
        resolver: AbstractResolver | Resolver | None = None,
        url_ttl: float = URL_TTL,
        max_pixels: int = MAX_PIXELS,
        memory_bytes: int = MEMORY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.timeout = float(timeout)
        self.allow_private = allow_private
        self.cache_dir = cache_dir
        self.url_ttl = float(url_ttl)
        self.max_pixels = int(max_pixels)
        self.memory_bytes = int(memory_bytes)
        self._resolver = resolver
        self._clock = clock
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(64)]
        self._media: OrderedDict[str, InputMedia] = OrderedDict()
        self._media_bytes = 0
        self._urls: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._guard: GuardedResolver | None = None
        self.requests = 0
        """HTTP requests made so far (redirect hops included)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaFetcher:
        """The fetcher of a process: ``GENHOOK_INPUT_MAX_BYTES``, ``GENHOOK_INPUT_TIMEOUT``,
        ``GENHOOK_ALLOW_PRIVATE_CALLBACKS``, its disk cache under ``GENHOOK_DATA_DIR/inputs``."""
        return cls(
            max_bytes=settings.input_max_bytes,
            timeout=settings.input_timeout,
            allow_private=settings.allow_private_callbacks,
            cache_dir=settings.data_dir / "inputs",
        )

    # -- the one public operation ----------------------------------------------------------

    def fetch(
        self,
        url: str,
        field: str,
        *,
        timeout: float | None = None,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> InputMedia:
        """Input ``field``'s media at ``url``: from the cache, else fetched and checked.

        ``timeout`` (default the fetcher's) bounds the whole fetch; a job whose
        ``is_cancelled`` turns true stops waiting for it (``cancelled``) within a poll. Raises
        :class:`~genhook.errors.GenhookError` with ``input_fetch_failed`` or
        ``invalid_input_media`` and ``field``."""
        check_media_url(
            url, field, allow_private=self.allow_private, code=ErrorCode.INVALID_INPUT_MEDIA
        )
        with self._stripes[hash(url) % len(self._stripes)]:  # one fetch of a URL at a time
            cached = self._cached_url(url)
            if cached is not None:
                return cached
            limit = self.timeout if timeout is None else max(0.0, min(timeout, self.timeout))
            try:
                download = self._download(url, field, limit)
                ctype, data = self._run(download, limit + 5.0, is_cancelled)
            except TimeoutError:  # the fetch's own loop did not answer in time
                raise _failed(field, url, f"no complete answer within {limit:g}s") from None
            width, height, decoded = self._decode(data, field, url, ctype)
            digest = hashlib.sha256(data).hexdigest()
            media = InputMedia(url, decoded, data, digest, width, height)
            self._remember(media)
            return media

    def close(self) -> None:
        """Close the HTTP client and stop the fetcher's event loop thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close_session(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    # -- the network side, on the fetcher's own loop ----------------------------------------

    def _run(
        self, coro: Coroutine[Any, Any, T], wait: float, is_cancelled: Callable[[], bool]
    ) -> T:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="genhook-input-fetch", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        until = time.monotonic() + wait
        try:
            while True:
                try:
                    return future.result(min(CANCEL_POLL, max(0.0, until - time.monotonic())))
                except concurrent.futures.TimeoutError:
                    if is_cancelled():
                        raise GenhookError(ErrorCode.CANCELLED) from None
                    if time.monotonic() >= until:
                        raise
        except BaseException:
            future.cancel()
            raise

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._guard = GuardedResolver(self._resolver, allow_private=self.allow_private)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=self._guard, limit=32),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                trust_env=False,
            )
        return self._session

    async def _close_session(self) -> None:
        session, guard = self._session, self._guard
        self._session = self._guard = None
        if session is not None:
            await session.close()
        if guard is not None:
            await guard.close()

    async def _download(self, url: str, field: str, limit: float) -> tuple[str, bytes]:
        current = url
        try:
            async with asyncio.timeout(limit):
                for _hop in range(MAX_REDIRECTS + 1):
                    check_media_url(
                        current,
                        field,
                        allow_private=self.allow_private,
                        code=ErrorCode.INVALID_INPUT_MEDIA,
                    )
                    if blocked_literal(current, allow_private=self.allow_private):
                        raise _invalid(field, current, "the address is refused")
                    answer = await self._get(current, field)
                    if isinstance(answer, str):  # a redirect's target
                        current = answer
                        continue
                    return answer
                raise _invalid(field, url, f"more than {MAX_REDIRECTS} redirects")
        except GenhookError:
            raise
        except TimeoutError:
            raise _failed(field, current, f"no complete answer within {limit:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, CallbackBlocked):
                raise _invalid(field, current, f"the address is refused ({exc.os_error})") from None
            if isinstance(exc, aiohttp.ClientConnectorDNSError):
                raise _failed(field, current, "the host name does not resolve now") from None
            raise _failed(field, current, f"cannot connect ({exc.os_error})") from None
        except aiohttp.InvalidURL:
            raise _invalid(field, current, "not a URL that can be fetched") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _failed(field, current, f"the connection failed ({type(exc).__name__})") from None

    async def _get(self, url: str, field: str) -> tuple[str, bytes] | str:
        """One request: the redirect's target (a URL), or the checked content type and body."""
        self.requests += 1
        accept = ", ".join(ALLOWED_TYPES)
        connect = min(CONNECT_TIMEOUT, self.timeout)
        async with self._client().get(
            URL(url, encoded=False),
            allow_redirects=False,
            headers={"Accept": accept},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect),
        ) as response:
            status = response.status
            if status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise _invalid(field, url, f"HTTP {status} without a Location")
                return str(response.url.join(URL(location)))
            if status >= 500 or status in _TRANSIENT_STATUS:
                raise _failed(field, url, f"the server answered HTTP {status}")
            if status != 200:
                raise _invalid(field, url, f"the server answered HTTP {status}")
            ctype = _content_type(response.headers.get("Content-Type"))
            if ctype not in ALLOWED_TYPES:
                raise _invalid(
                    field,
                    url,
                    f"content type {str(ctype)[:60]!r} is not one of {', '.join(ALLOWED_TYPES)}",
                )
            length = response.content_length
            if length is not None and length > self.max_bytes:
                raise _invalid(field, url, self._too_large(f"{length} bytes"))
            chunks: list[bytes] = []
            total = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                total += len(chunk)
                if total > self.max_bytes:
                    response.close()  # abort: nothing more is read
                    raise _invalid(field, url, self._too_large(f"more than {self.max_bytes} bytes"))
                chunks.append(chunk)
            return ctype, b"".join(chunks)

    def _too_large(self, size: str) -> str:
        return f"{size}, over the limit of {self.max_bytes} bytes (GENHOOK_INPUT_MAX_BYTES)"

    # -- checks and cache ---------------------------------------------------------------------

    def _decode(self, data: bytes, field: str, url: str, ctype: str) -> tuple[int, int, str]:
        """Width, height and the real content type of ``data``, which must decode fully as one
        of the allowed formats to at most ``max_pixels`` pixels."""
        formats = list(ALLOWED_TYPES.values())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=formats) as image:
                    width, height = image.size
                    if width * height > self.max_pixels:
                        raise _invalid(
                            field,
                            url,
                            f"{width}x{height} pixels, over the limit of {self.max_pixels}",
                        )
                    image.load()
                    fmt = str(image.format)
        except GenhookError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _invalid(field, url, "too many pixels (a decompression bomb)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise _invalid(
                field, url, f"the bytes do not decode as the {ctype} image they claim to be"
            ) from None
        return width, height, _FORMAT_TYPES.get(fmt, ctype)

    def _cached_url(self, url: str) -> InputMedia | None:
        now = self._clock()
        with self._lock:
            seen = self._urls.get(url)
        digest = None
        if seen is not None and now - seen[1] <= self.url_ttl:
            digest = seen[0]
        elif self.cache_dir is not None:
            index = _read_json(self._url_path(url))
            at = index.get("fetched_at")
            if isinstance(at, int | float) and now - at <= self.url_ttl:
                digest = str(index.get("sha256"))
                with self._lock:
                    self._urls[url] = (digest, float(at))
        if digest is None:
            return None
        media = self._by_digest(digest)
        return None if media is None else replace(media, url=url)

    def _by_digest(self, digest: str) -> InputMedia | None:
        with self._lock:
            media = self._media.get(digest)
            if media is not None:
                self._media.move_to_end(digest)
                return media
        if self.cache_dir is None:
            return None
        meta = _read_json(self._blob_path(digest).with_suffix(".json"))
        try:
            data = self._blob_path(digest).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != digest or not meta:
            return None
        try:
            media = InputMedia(
                str(meta["url"]),
                str(meta["content_type"]),
                data,
                digest,
                int(meta["width"]),
                int(meta["height"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        self._keep(media)
        return media

    def _remember(self, media: InputMedia) -> None:
        now = self._clock()
        self._keep(media)
        with self._lock:
            self._urls[media.url] = (media.sha256, now)
            self._urls.move_to_end(media.url)
            while len(self._urls) > 4096:
                self._urls.popitem(last=False)
        if self.cache_dir is None:
            return
        blob = self._blob_path(media.sha256)
        if not blob.exists():  # the same bytes are stored once, whatever URL they came from
            meta = {
                "url": media.url,
                "content_type": media.content_type,
                "width": media.width,
                "height": media.height,
            }
            _write(blob.with_suffix(".json"), json.dumps(meta).encode())
            _write(blob, media.data)
        index = {"sha256": media.sha256, "fetched_at": now}
        _write(self._url_path(media.url), json.dumps(index).encode())

    def _keep(self, media: InputMedia) -> None:
        with self._lock:
            if media.sha256 in self._media:
                self._media.move_to_end(media.sha256)
                return
            self._media[media.sha256] = media
            self._media_bytes += len(media.data)
            while self._media_bytes > self.memory_bytes and len(self._media) > 1:
                _, old = self._media.popitem(last=False)
                self._media_bytes -= len(old.data)

    def _blob_path(self, digest: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / "blobs" / digest[:2] / f"{digest}.bin"

    def _url_path(self, url: str) -> Path:
        assert self.cache_dir is not None
        key = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_dir / "urls" / key[:2] / f"{key}.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees all of it or nothing); a cache that
    cannot be written is only a cache: the failure is ignored."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


_installed: MediaFetcher | None = None
_installed_lock = threading.Lock()


def install_fetcher(fetcher: MediaFetcher | None) -> MediaFetcher | None:
    """Make ``fetcher`` this process's (None: back to the default); the previous one back,
    closed (it opens again if used: a caller may install it back)."""
    global _installed
    with _installed_lock:
        previous, _installed = _installed, fetcher
    if previous is not None and previous is not fetcher:
        previous.close()
    return previous


def process_fetcher() -> MediaFetcher:
    """This process's fetcher: the installed one, else a default one (public addresses only,
    the default limits, the cache in memory), made on first use."""
    global _installed
    with _installed_lock:
        if _installed is None:
            _installed = MediaFetcher()
        return _installed


def _field_of(trigger: Mapping[str, Any], url: str, name: str) -> str:
    """The trigger field a wired URL came from (the input's own name if none holds it)."""
    return next((k for k, v in trigger.items() if v == url), name)


def fetch_inputs(
    ctx: RunContext | None,
    urls: Mapping[str, str | None],
    *,
    fetcher: MediaFetcher | None = None,
) -> dict[str, InputMedia]:
    """The media of a generate node's ``inputs`` (input name -> URL wired from the trigger, None
    for an optional input not given, which is left out), fetched by ``fetcher`` (default
    :func:`process_fetcher`). With a run context: errors name the trigger field the URL came
    from, the fetch keeps within the run's deadline, and a cancelled job stops between inputs.
    """
    fetcher = fetcher or process_fetcher()
    out: dict[str, InputMedia] = {}
    for name, url in urls.items():
        if url is None:
            continue
        field = name if ctx is None else _field_of(ctx.trigger, url, name)
        timeout = None
        if ctx is not None:
            if ctx.is_cancelled():
                raise GenhookError(ErrorCode.CANCELLED)
            if ctx.deadline is not None:
                timeout = max(0.0, ctx.deadline - time.monotonic())
        cancelled = (lambda: False) if ctx is None else ctx.is_cancelled
        out[name] = fetcher.fetch(url, field, timeout=timeout, is_cancelled=cancelled)
    return out
