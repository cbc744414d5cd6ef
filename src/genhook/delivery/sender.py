"""One signed POST of a completion payload to a ``callback_url``, and the retry arithmetic.

The outbox loop asks :class:`DeliverySender` to make one attempt of one due delivery and gets an
:class:`AttemptResult` back; it never raises for network or HTTP problems. What counts:

* ``delivered``: a 2xx status within ``timeout`` seconds (15 s by default);
* ``gone``: HTTP 410, no further attempts;
* ``retry``: anything else, redirects (3xx, never followed), timeouts, refused or blocked
  connections included. On 429 and 503 the ``Retry-After`` header is parsed into seconds;
  :func:`next_delay` turns the attempt number, the schedule and that into the next wait.
"""

from __future__ import annotations

import contextlib
import errno
import math
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from genhook.contract.envelope import check_callback_url
from genhook.delivery import signing
from genhook.delivery.ssrf import (
    CallbackBlocked,
    GuardedResolver,
    Resolver,
    is_public_address,
    literal_address,
)
from genhook.errors import InvalidInput

#: At most this much of a receiver's answer is read (and thrown away).
MAX_RESPONSE_BYTES = 64 * 1024
#: The longest wait that a ``Retry-After`` can ask for.
MAX_RETRY_AFTER = 24 * 60 * 60.0

_DELTA_SECONDS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class DueDelivery:
    """One attempt to make: the message, where it goes and how it is signed."""

    delivery_id: str  # the webhook-id ("msg_..."), stable across retries of the same message
    url: str
    body: bytes  # the exact payload bytes; identical on every attempt
    secret: str  # the service's whsec_ secret
    attempt: int  # 1-based number of this attempt


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to."""

    outcome: Literal["delivered", "retry", "gone"]  # 2xx; anything else; HTTP 410 (stop for good)
    status_code: int | None
    error: str | None  # None when delivered
    duration_ms: float
    retry_after: float | None  # seconds from Retry-After, on 429/503 only


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None when absent or malformed.

    Accepts delta-seconds (``"120"``) and an HTTP-date (IMF-fixdate, RFC 850 or asctime form;
    a date without a zone is taken as UTC), counted from ``now`` (Unix seconds). A date in the
    past gives 0. The result is capped at 24 h.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER)  # float(): huge values become inf, then capped
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        wait = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


def next_delay(attempt: int, schedule: Sequence[float], retry_after: float | None) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, given that attempt ``attempt`` failed.

    ``attempt`` is 1-based. With ``n = len(schedule)``::

        next_delay = None                                   if attempt > n   (give up)
                   = min(max(retry_after, 0), 86400)        if retry_after is not None
                   = schedule[attempt - 1]                  otherwise

    so a ``Retry-After`` replaces the scheduled wait (capped at 24 h) but never adds attempts.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if attempt > len(schedule):
        return None
    if retry_after is not None and not math.isnan(retry_after):
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
    return float(schedule[attempt - 1])


def blocked_literal(url: str) -> str | None:
    """Why ``url``'s host is a non-public IP literal (in any spelling), or None when it is not.

    aiohttp connects to IP-literal hosts without asking its resolver, so the
    :class:`~genhook.delivery.ssrf.GuardedResolver` never sees them; this check covers them.
    Both the host as written and the host as aiohttp will use it (after IDNA folding) count.
    """
    hosts: list[str] = []
    with contextlib.suppress(ValueError):
        hosts.append(urlsplit(url).hostname or "")
    with contextlib.suppress(ValueError, TypeError, UnicodeError):
        hosts.append(URL(url).raw_host or "")
    for host in hosts:
        ip = literal_address(host)
        if ip is not None and not is_public_address(ip):
            return f"blocked: non-public address {ip}"
    return None


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    if isinstance(os_error, CallbackBlocked):
        return str(os_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {exc.host} failed: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate error: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS error: {os_error}"
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        return "connection refused"
    if "refused" in str(os_error).lower():
        return "connection refused"
    return f"connection failed: {os_error.strerror or os_error}"


class DeliverySender:
    """Makes signed delivery attempts over one pooled HTTP client.

    ``resolver`` (an aiohttp resolver or a blocking :class:`~genhook.delivery.ssrf.Resolver`;
    default: the system's) is always wrapped in a :class:`GuardedResolver`, so unless
    ``allow_private`` every connection goes to a public address only. ``clock`` gives the Unix
    time used for ``webhook-timestamp`` and for ``Retry-After`` dates.
    """

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        allow_private: bool = False,
        resolver: AbstractResolver | Resolver | None = None,
        limit: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = float(timeout)
        self._allow_private = allow_private
        self._resolver = resolver
        self._limit = limit
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._guard: GuardedResolver | None = None

    async def start(self) -> None:
        """Open the HTTP client (idempotent)."""
        if self._session is not None:
            return
        self._guard = GuardedResolver(self._resolver, allow_private=self._allow_private)
        connector = aiohttp.TCPConnector(resolver=self._guard, limit=self._limit)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )

    async def close(self) -> None:
        """Close the HTTP client and its resolver (idempotent)."""
        session, guard = self._session, self._guard
        self._session = self._guard = None
        if session is not None:
            await session.close()
        if guard is not None:
            await guard.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, due: DueDelivery) -> AttemptResult:
        """Make one attempt of ``due``; network and HTTP problems come back as ``retry``."""
        session = self._session
        if session is None:
            raise RuntimeError("DeliverySender.start() was not called")
        started = time.perf_counter()

        def result(
            outcome: Literal["delivered", "retry", "gone"],
            status: int | None,
            error: str | None,
            retry_after: float | None = None,
        ) -> AttemptResult:
            elapsed = (time.perf_counter() - started) * 1000.0
            return AttemptResult(outcome, status, error, elapsed, retry_after)

        try:
            check_callback_url(due.url)
        except InvalidInput as exc:
            return result("retry", None, f"invalid callback URL: {exc.description}")
        if not self._allow_private:
            blocked = blocked_literal(due.url)
            if blocked is not None:
                return result("retry", None, blocked)

        timestamp = int(self._clock())
        headers = signing.headers(due.secret, due.delivery_id, timestamp, due.body)
        status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            async with session.post(
                due.url, data=due.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                if status in (429, 503):
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), self._clock()
                    )
                await _drain(response)
        except TimeoutError:
            error = f"timeout after {self._timeout}s"
        except aiohttp.ClientConnectorError as exc:
            error = _connect_error(exc)
        except aiohttp.ServerDisconnectedError:
            error = "server disconnected without an answer"
        except aiohttp.ClientResponseError as exc:
            error = f"invalid HTTP answer: {exc.message}"
        except aiohttp.ClientPayloadError as exc:
            error = f"invalid HTTP answer body: {exc}"
        except aiohttp.InvalidURL as exc:
            error = f"invalid callback URL: {exc}"
        except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"

        if status is None:
            return result("retry", None, error or "no answer")
        # The status line arrived in time; a problem while reading the (discarded) body after it
        # does not change the answer.
        if 200 <= status < 300:
            return result("delivered", status, None)
        if status == 410:
            return result("gone", status, "HTTP 410 (gone: no further attempts)")
        if 300 <= status < 400:
            return result("retry", status, f"redirect not followed (HTTP {status})")
        return result("retry", status, f"HTTP {status}", retry_after)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read at most ``MAX_RESPONSE_BYTES`` of the answer and drop it; close if more is left."""
    remaining = MAX_RESPONSE_BYTES
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            break
        remaining -= len(chunk)
    if not response.content.at_eof():
        response.close()
