"""One signed POST of a completion payload to a ``callback_url``.

The outbox loop asks :class:`DeliverySender` to make one attempt of one due delivery and gets an
:class:`AttemptResult` back; it never raises for network or HTTP problems. What counts:

* ``delivered``: a 2xx status within ``timeout`` seconds (15 s by default) of the attempt's
  start; connecting (TCP and TLS) has a shorter limit of its own, ``connect_timeout`` (5 s), so
  an address that never answers a SYN is given up on early;
* ``gone``: HTTP 410, no further attempts;
* ``blocked``: the SSRF guard refused the address (an IP literal, or every address the name
  resolves to at connect time): no request was made, and none ever will be, so no further
  attempts either;
* ``retry``: anything else, redirects (3xx, never followed), timeouts and refused connections
  included. On 429 and 503 the ``Retry-After`` header is parsed into seconds
  (:func:`genhook.retry.parse_retry_after`); the outbox's :class:`~genhook.retry.RetryPolicy`
  turns that into the next wait.

Which addresses an attempt may reach is the delivery's own decision, taken when its trigger was
accepted (``DueDelivery.allow_private``), and the sending process's setting
(``DeliverySender(allow_private=...)``) must allow it too: a process with private callbacks off
never calls a private address, and one with them on still refuses a delivery whose trigger was
accepted without.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from yarl import URL

from genhook.contract.envelope import check_callback_url
from genhook.delivery import signing
from genhook.delivery.addresses import literal_address, refusal
from genhook.delivery.http1 import Http1Client, HttpFailure, target_of
from genhook.delivery.ssrf import GuardedResolver, Resolver
from genhook.errors import InvalidInput
from genhook.retry import parse_retry_after
from genhook.status import DeliveryOutcome

#: At most this much of a receiver's answer is read (and thrown away).
MAX_RESPONSE_BYTES = 64 * 1024

Outcome = DeliveryOutcome


@dataclass(frozen=True)
class DueDelivery:
    """One attempt to make: the message, where it goes and how it is signed."""

    delivery_id: str  # the webhook-id ("msg_..."), stable across retries of the same message
    url: str
    body: bytes  # the exact payload bytes; identical on every attempt
    secret: str  # the service's whsec_ secret (GENHOOK_ALERT_SECRET for an operator event)
    attempt: int  # 1-based number of this attempt
    allow_private: bool = False  # the trigger was accepted with private callbacks allowed
    also_secrets: tuple[str, ...] = ()  # a rotated secret during its overlap: signs too


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to."""

    outcome: Outcome  # 2xx; anything else; HTTP 410; refused by the SSRF guard (both final)
    status_code: int | None
    error: str | None  # None when delivered
    duration_ms: float
    retry_after: float | None  # seconds from Retry-After, on 429/503 only


def blocked_literal(url: str, *, allow_private: bool = False) -> str | None:
    """Why ``url``'s host is an IP literal (in any spelling) the policy refuses, or None.

    Checked before any connection, for every spelling: the host as written and the host as
    the client will use it (yarl's IDNA folding, which turns full-width digits into ASCII).
    The :class:`~genhook.delivery.ssrf.GuardedResolver` checks the folded literal again at
    connect time.
    """
    hosts: list[str] = []
    with contextlib.suppress(ValueError):
        hosts.append(urlsplit(url).hostname or "")
    with contextlib.suppress(ValueError, TypeError, UnicodeError):
        hosts.append(URL(url).raw_host or "")
    for host in hosts:
        ip = literal_address(host)
        why = None if ip is None else refusal(ip, allow_private=allow_private)
        if why is not None:
            return f"blocked: {why}"
    return None


@functools.lru_cache(maxsize=4096)
def url_refusal(url: str, allow_private: bool) -> tuple[Outcome, None, str] | None:
    """Why no request may go to ``url`` under this policy, as an attempt's result (``retry``
    for a URL that is not a valid callback URL, ``blocked`` for an IP literal the policy
    refuses); None when it may. A pure function of its arguments, so remembered per URL: a
    service's deliveries go to the same few URLs. Names are still checked at connect time."""
    try:
        check_callback_url(url)
    except InvalidInput as exc:
        return DeliveryOutcome.RETRY, None, f"invalid callback URL: {exc.description}"
    blocked = blocked_literal(url, allow_private=allow_private)
    if blocked is not None:
        return DeliveryOutcome.BLOCKED, None, blocked
    try:
        target_of(url)
    except ValueError as exc:
        return DeliveryOutcome.RETRY, None, f"invalid callback URL: {exc}"
    return None


class DeliverySender:
    """Makes signed delivery attempts over pooled HTTP clients, one per callback policy.

    ``resolver`` (an aiohttp resolver or a blocking :class:`~genhook.delivery.ssrf.Resolver`;
    default: the system's) is always wrapped in a :class:`GuardedResolver`. Deliveries accepted
    under the default policy go through a client whose guard allows public addresses only; with
    ``allow_private`` a second client (own connection pool and DNS cache, so nothing leaks between
    the two) serves deliveries accepted with private callbacks allowed. ``clock`` gives the Unix
    time used for ``webhook-timestamp`` and for ``Retry-After`` dates. ``timeout`` bounds the
    whole attempt, ``connect_timeout`` the connection (TCP and TLS) within it.
    """

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        connect_timeout: float = 5.0,
        allow_private: bool = False,
        resolver: AbstractResolver | Resolver | None = None,
        limit: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = float(timeout)
        self._connect_timeout = min(float(connect_timeout), self._timeout)
        self._allow_private = allow_private
        self._resolver = resolver
        self._limit = limit
        self._clock = clock
        self._clients: dict[bool, Http1Client] = {}

    def _client(self, allow_private: bool) -> Http1Client:
        guard = GuardedResolver(self._resolver, allow_private=allow_private)
        return Http1Client(
            guard,
            timeout=self._timeout,
            connect_timeout=self._connect_timeout,
            limit=self._limit,
            max_body=MAX_RESPONSE_BYTES,
        )

    async def start(self) -> None:
        """Open the HTTP clients (idempotent)."""
        if self._clients:
            return
        for policy in {False, self._allow_private}:
            self._clients[policy] = self._client(policy)

    async def close(self) -> None:
        """Close the HTTP clients and their resolvers (idempotent)."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
            await client.guard.close()

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
        if not self._clients:
            raise RuntimeError("DeliverySender.start() was not called")
        allow_private = due.allow_private and self._allow_private
        client = self._clients[allow_private]
        started = time.perf_counter()

        def result(
            outcome: Outcome,
            status: int | None,
            error: str | None,
            retry_after: float | None = None,
        ) -> AttemptResult:
            elapsed = (time.perf_counter() - started) * 1000.0
            return AttemptResult(outcome, status, error, elapsed, retry_after)

        refused = url_refusal(due.url, allow_private)
        if refused is not None:
            return result(*refused)

        timestamp = int(self._clock())
        headers = signing.headers(
            due.secret, due.delivery_id, timestamp, due.body, also=due.also_secrets
        )
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        try:
            answer = await client.post(target_of(due.url), head.encode("latin-1"), due.body)
        except HttpFailure as exc:
            if exc.blocked:
                return result(DeliveryOutcome.BLOCKED, None, exc.text)
            return result(DeliveryOutcome.RETRY, None, exc.text)
        except TimeoutError:
            return result(DeliveryOutcome.RETRY, None, f"timeout after {self._timeout:g}s")
        # The status line arrived in time; a problem while reading the (discarded) body after it
        # does not change the answer.
        status = answer.status
        if 200 <= status < 300:
            return result(DeliveryOutcome.DELIVERED, status, None)
        if status == 410:
            return result(DeliveryOutcome.GONE, status, "HTTP 410 (gone: no further attempts)")
        if 300 <= status < 400:
            return result(DeliveryOutcome.RETRY, status, f"redirect not followed (HTTP {status})")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(answer.retry_after, self._clock())
        return result(DeliveryOutcome.RETRY, status, f"HTTP {status}", retry_after)
