"""A lean HTTP/1.1 client for the one request genhook's sender makes: a small POST, its answer's
status (and ``Retry-After``), the rest of the answer read up to a cap and dropped.

Why not aiohttp's ``ClientSession``: measured against the same receiver, a keep-alive aiohttp
loop spends 0.07-0.17 ms of CPU per POST, this client 0.03 ms (docs/benchmarks.md, Deliver).
The sender's whole job is many such POSTs, so that was most of a delivery's CPU. What this
client does, it does the way a well-behaved HTTP/1.1 client must:

* requests are framed in one write (head and body, ``Content-Length``), answers are parsed by
  ``httptools`` (llhttp, the C parser Node.js and uvicorn use): chunked and length-delimited
  bodies, keep-alive as the answer says (``should_keep_alive``), 1xx interim answers skipped;
* connections are pooled per (scheme, host, port) and reused only after a complete answer
  that allows it; an idle one is closed after ``keepalive`` seconds, or when the server closes
  it; a reused connection that the server closed as the request went out (no byte of answer)
  is retried once on a new connection, as browsers and aiohttp do for a stale keep-alive;
* every new connection resolves its host through the SSRF guard
  (:class:`~genhook.delivery.ssrf.GuardedResolver`, results kept ``dns_ttl`` seconds per
  client, as aiohttp's connector does) and connects only to the addresses it allows, TLS with
  certificate and host name verification for ``https``;
* limits: ``connect_timeout`` for TCP and TLS, ``timeout`` for the whole attempt, at most
  ``MAX_HEAD_BYTES`` of status line and headers, at most ``max_body`` bytes of body read (then
  the connection is closed, not drained), at most ``limit`` connections in use at once.

Failures come back as :class:`HttpFailure` with the text the delivery log records.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket
import ssl
from dataclasses import dataclass
from typing import Final, cast

import httptools
from yarl import URL

from genhook.delivery.ssrf import CallbackBlocked, GuardedResolver

#: The most bytes of status line and headers an answer may have before its body.
MAX_HEAD_BYTES: Final = 64 * 1024


class HttpFailure(Exception):
    """An attempt that got no usable answer: ``text`` is what the delivery log records;
    ``blocked`` when the SSRF guard refused every address (no request was made)."""

    def __init__(self, text: str, *, blocked: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.blocked = blocked


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go: the connection's key and the request's first two lines."""

    tls: bool
    host: str  # as connected to and resolved: IDNA-folded, an IPv6 literal without brackets
    port: int
    head: bytes  # b"POST <target> HTTP/1.1\r\nHost: <host[:port]>\r\n"


@dataclass(frozen=True, slots=True)
class Answer:
    """The part of an answer the sender acts on."""

    status: int
    retry_after: str | None  # the first Retry-After header's value, if any
    complete: bool  # the whole body was read (else it was cut off: cap, timeout, close)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, max_body: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.max_body = max_body
        self.closed = False
        self.used = 0  # requests sent on it so far
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.retry_after: str | None = None
        self.head_bytes = 0
        self.body_bytes = 0
        self.got_bytes = False
        self.headers_done = False

    # the request ------------------------------------------------------------------------

    def request(self, data: bytes, waiter: asyncio.Future[Answer]) -> None:
        self._reset()
        self._waiter = waiter
        self.used += 1
        if self.transport is None or self.transport.is_closing():
            self._fail("connection lost before the request went out")
            return
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _answer(self, complete: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if not complete:
            self.close()  # the rest of the answer is not read: the connection cannot be reused
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self.status, self.retry_after, complete))

    def _fail(self, text: str) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(HttpFailure(text))

    # asyncio's callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: an idle connection the server talks on
            self.close()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer(complete=False)  # 101 or CONNECT: the status stands, the rest is not HTTP
        except httptools.HttpParserError as exc:
            if self.headers_done:
                self._answer(complete=False)  # the status line and headers were good
            else:
                self._fail(f"invalid HTTP answer: {exc}")
        else:
            if not self.headers_done and self._waiter is not None:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self._fail(f"invalid HTTP answer: over {MAX_HEAD_BYTES} bytes of headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if self.headers_done:
            self._answer(complete=False)
        elif exc is None:
            self._fail("server disconnected without an answer")
        else:
            self._fail(f"connection lost without an answer: {exc}")

    # httptools' callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.retry_after is None and name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status >= 200 or self.status == 101:
            self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body and self._waiter is not None:
            self._answer(complete=False)

    def on_message_complete(self) -> None:
        if not self.headers_done:  # a 1xx interim answer: the real one follows
            self.retry_after = None
            return
        if self._waiter is None:
            return
        if not self.parser.should_keep_alive():
            self.close()
        self._answer(complete=True)


class Http1Client:
    """Pooled keep-alive HTTP/1.1 POSTs through one SSRF guard (see the module's docstring)."""

    def __init__(
        self,
        guard: GuardedResolver,
        *,
        timeout: float,
        connect_timeout: float,
        limit: int = 100,
        max_body: int = 64 * 1024,
        keepalive: float = 15.0,
        dns_ttl: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.guard = guard
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.max_body = max_body
        self.keepalive = keepalive
        self.dns_ttl = dns_ttl
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[bool, str, int], collections.deque[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[str, int, int]]]] = {}
        self._next_sweep = 0.0
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def post(self, target: Target, head: bytes, body: bytes) -> Answer:
        """POST ``body`` with the header lines ``head`` (each ending in CRLF; no Host, no
        Content-Length) to ``target``; raises :class:`HttpFailure` or ``TimeoutError`` (the
        whole attempt took ``timeout``)."""
        if self._closed:
            raise HttpFailure("the sender is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        data = b"%s%sContent-Length: %d\r\n\r\n%s" % (target.head, head, len(body), body)
        if self._slots.locked():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            for fresh_only in (False, True):
                conn = None if fresh_only else self._reuse(target, loop.time())
                if conn is None:
                    conn = await self._connect(target, deadline)
                self._busy.add(conn)
                try:
                    return await self._exchange(loop, conn, data, deadline)
                except HttpFailure:
                    # a kept-alive connection the server closed as the request went out: the
                    # request was not seen, so it goes once more, on a new connection
                    if conn.used > 1 and not conn.got_bytes and not fresh_only:
                        continue
                    raise
                finally:
                    self._busy.discard(conn)
                    self._release(target, conn, loop.time())
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        data: bytes,
        deadline: float,
    ) -> Answer:
        waiter: asyncio.Future[Answer] = loop.create_future()
        expiry = loop.call_at(deadline, _expire, conn, waiter)
        try:
            conn.request(data, waiter)
            return await waiter
        except asyncio.CancelledError:
            conn.close()
            raise
        finally:
            expiry.cancel()

    def _reuse(self, target: Target, now: float) -> _Connection | None:
        idle = self._idle.get((target.tls, target.host, target.port))
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    def _release(self, target: Target, conn: _Connection, now: float) -> None:
        if conn.closed or self._closed:
            conn.close()
        else:
            conn.idle_since = now
            key = (target.tls, target.host, target.port)
            self._idle.setdefault(key, collections.deque()).append(conn)
        if now >= self._next_sweep:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close the idle connections past ``keepalive`` (or closed by their server)."""
        self._next_sweep = now + self.keepalive / 2
        for key, idle in list(self._idle.items()):
            kept = collections.deque(
                c for c in idle if not c.closed and now - c.idle_since < self.keepalive
            )
            for conn in idle:
                if conn not in kept:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        for host_port, (until, _) in list(self._dns.items()):
            if until <= now:
                del self._dns[host_port]

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int, int]]:
        loop = asyncio.get_running_loop()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            results = await self.guard.resolve(host, port, family=socket.AF_UNSPEC)
        except CallbackBlocked as exc:
            raise HttpFailure(str(exc), blocked=True) from exc
        except OSError as exc:
            raise HttpFailure(f"DNS lookup of {host} failed: {exc.strerror or exc}") from exc
        addresses = [(r["host"], r["port"], r["family"]) for r in results]
        if self.dns_ttl > 0:
            self._dns[(host, port)] = (loop.time() + self.dns_ttl, addresses)
        return addresses

    async def _connect(self, target: Target, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        connect_by = min(deadline, loop.time() + self.connect_timeout)
        try:
            async with asyncio.timeout_at(connect_by):
                addresses = await self._addresses(target.host, target.port)
                last: OSError | None = None
                for addr, port, family in addresses:
                    try:
                        _, conn = await loop.create_connection(
                            lambda: _Connection(self.max_body),
                            addr,
                            port,
                            family=family,
                            flags=socket.AI_NUMERICHOST,
                            ssl=self._ssl_context() if target.tls else None,
                            server_hostname=target.host if target.tls else None,
                        )
                    except ssl.SSLCertVerificationError as exc:
                        raise HttpFailure(f"TLS certificate error: {exc}") from exc
                    except ssl.SSLError as exc:
                        raise HttpFailure(f"TLS error: {exc}") from exc
                    except OSError as exc:
                        last = exc
                        continue
                    return conn
        except TimeoutError:
            if connect_by < deadline:
                raise HttpFailure(f"connect timeout after {self.connect_timeout:g}s") from None
            raise
        if isinstance(last, ConnectionRefusedError):
            raise HttpFailure("connection refused")
        text = last.strerror or str(last) if last is not None else "no address"
        raise HttpFailure(f"connection failed: {text}")

    async def close(self) -> None:
        """Close every connection; requests still in flight fail at once."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()
        await asyncio.sleep(0)  # let the transports' connection_lost run


def _expire(conn: _Connection, waiter: asyncio.Future[Answer]) -> None:
    if waiter.done():
        return
    if conn.headers_done:  # the status line came in time; only the (dropped) body is late
        conn._answer(complete=False)
    else:
        conn.close()
        waiter.set_exception(TimeoutError())


def host_header(host: str, port: int, tls: bool) -> str:
    """The Host header's value: the port only when it is not the scheme's default."""
    shown = f"[{host}]" if ":" in host else host
    default = 443 if tls else 80
    return shown if port == default else f"{shown}:{port}"


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """Where ``url``'s POSTs go (host IDNA-folded as yarl folds it); ``ValueError`` for a URL
    this client cannot send to. Remembered per URL: a service's deliveries go to the same few."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"scheme {parsed.scheme!r} is not http or https")
    host = parsed.raw_host
    port = parsed.port
    if not host or port is None:
        raise ValueError("no host")
    path = parsed.raw_path_qs or "/"
    tls = parsed.scheme == "https"
    if any(not 32 < ord(c) < 127 for c in path + host):
        raise ValueError("the URL has characters a request line cannot carry")
    head = f"POST {path} HTTP/1.1\r\nHost: {host_header(host, port, tls)}\r\n"
    return Target(tls, host, port, head.encode("ascii"))
