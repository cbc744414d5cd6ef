"""The sender's HTTP/1.1 client against real servers on 127.0.0.1 that answer byte for byte as
each test scripts them: keep-alive reuse, a stale kept-alive connection, chunked and 1xx
answers, the header and body caps, close while in flight, TLS with a test CA (trustme)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trustme
import uvloop

from genhook.delivery.http1 import Answer, Http1Client, HttpFailure, target_of
from genhook.delivery.ssrf import GuardedResolver

HEAD = b"webhook-id: msg_1\r\ncontent-type: application/json\r\n"
BODY = b'{"ok": true}'

Script = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Result = Answer | HttpFailure | TimeoutError


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request off the wire: its head and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


class Server:
    """A loopback server running ``script`` on every connection; records what came in."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(self, reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/hook?x=1"

    async def record(self, reader: asyncio.StreamReader) -> None:
        self.requests.append(await read_request(reader))


def client(**options: object) -> Http1Client:
    kwargs: dict[str, object] = {"timeout": 5.0, "connect_timeout": 2.0, **options}
    return Http1Client(GuardedResolver(allow_private=True), **kwargs)  # type: ignore[arg-type]


def run(main: Callable[[], Awaitable[Any]]) -> list[Any]:
    """On asyncio's own loop, then on uvloop's (the one ``genhook serve`` runs on)."""
    return [asyncio.run(main()), uvloop.run(main())]  # type: ignore[arg-type]


def posts(
    script: Script, count: int = 1, pause: float = 0.0, **options: object
) -> list[tuple[list[Result], Server]]:
    """``count`` POSTs one after the other (``pause`` seconds apart) to a server running
    ``script``, on each loop: what each came to, and the server."""

    async def main() -> tuple[list[Result], Server]:
        results: list[Result] = []
        async with Server(script) as server:
            http = client(**options)
            for i in range(count):
                if i and pause:
                    await asyncio.sleep(pause)
                try:
                    results.append(await http.post(target_of(server.url()), HEAD, BODY))
                except (HttpFailure, TimeoutError) as exc:
                    results.append(exc)
            await http.close()
        return results, server

    return run(main)


def failed(result: Result, pattern: str) -> bool:
    return isinstance(result, HttpFailure) and pattern in result.text


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


async def answer_each(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Keep the connection, answer 204 to every request."""
    while True:
        await server.record(reader)
        writer.write(NO_CONTENT)


def test_keep_alive_reuses_one_connection_and_frames_the_request() -> None:
    for results, server in posts(answer_each, 3):
        assert results == [Answer(204, None, True)] * 3
        assert server.connections == 1
        head, body = server.requests[0]
        assert head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
        assert b"Content-Length: 12\r\n" in head and b"webhook-id: msg_1\r\n" in head
        assert body == BODY


CLOSING = [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
]


def test_connection_close_and_http_1_0_are_not_reused() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(CLOSING[len(server.requests) - 1])
        await writer.drain()
        await reader.read()  # the client closes (or keeps) it

    for results, server in posts(script, 3):
        assert [getattr(r, "status", r) for r in results] == [200, 200, 200]
        assert server.connections == 3


def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one() -> None:
    """The server closes a kept-alive connection as the next request goes out: that request
    is sent again on a new connection, and answered there."""

    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(NO_CONTENT)
        if server.connections == 1:
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the second request: dropped unanswered
            return
        await reader.read()

    for results, server in posts(script, 2):
        assert results == [Answer(204, None, True)] * 2
        assert server.connections == 2
        assert len(server.requests) == 2  # the first, and the second's resend


def test_a_new_connection_that_closes_unanswered_is_not_retried() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)

    for [result], server in posts(script):
        assert failed(result, "server disconnected without an answer"), result
        assert server.connections == 1


def test_chunked_answer_interim_1xx_and_retry_after() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.record(reader)
            writer.write(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after:  7 \r\n"
                b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )

    for results, server in posts(script, 2):
        assert results == [Answer(429, "7", True)] * 2
        assert server.connections == 1  # the chunked answer was read to its end: reusable


def test_headers_over_the_cap_fail_and_close() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(20_000):
            writer.write(b"x-filler-%d: %s\r\n" % (i, b"y" * 40))
            await writer.drain()

    for [result], _ in posts(script):
        assert failed(result, "bytes of headers"), result


def test_a_body_over_the_cap_keeps_the_status_and_the_connection_is_dropped() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
        while True:
            writer.write(b"\0" * 65536)
            await writer.drain()

    for results, server in posts(script, 2, max_body=100_000):
        assert results == [Answer(200, None, False)] * 2
        assert server.connections == 2


def test_garbage_is_an_invalid_answer() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await reader.read()

    for [result], _ in posts(script):
        assert failed(result, "invalid HTTP answer"), result


def test_the_status_in_time_stands_when_the_body_is_late() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 10\r\n\r\nab")
        await asyncio.sleep(5)

    for results, _ in posts(script, timeout=0.3):
        assert results == [Answer(503, None, False)]


def test_no_status_in_time_is_a_timeout() -> None:
    async def script(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.record(reader)
        writer.write(b"HTTP/1.1 2")
        await asyncio.sleep(5)

    for [result], _ in posts(script, timeout=0.3):
        assert isinstance(result, TimeoutError), result


def test_idle_connections_past_keepalive_are_not_reused() -> None:
    for results, server in posts(answer_each, 2, pause=0.3, keepalive=0.2):
        assert results == [Answer(204, None, True)] * 2
        assert server.connections == 2


def test_close_fails_the_requests_in_flight_at_once() -> None:
    async def main() -> None:
        async def script(
            server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await server.record(reader)
            await asyncio.sleep(10)

        async with Server(script) as server:
            http = client(timeout=30.0)
            pending = asyncio.ensure_future(http.post(target_of(server.url()), HEAD, BODY))
            while not server.requests:
                await asyncio.sleep(0.01)
            await http.close()
            with pytest.raises(HttpFailure):
                await asyncio.wait_for(pending, 2)
            with pytest.raises(HttpFailure, match="closed"):
                await http.post(target_of(server.url()), HEAD, BODY)

    run(main)


def test_the_limit_bounds_connections_in_use() -> None:
    async def main() -> None:
        in_flight = 0
        most = 0

        async def script(
            server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            nonlocal in_flight, most
            while True:
                await server.record(reader)
                in_flight += 1
                most = max(most, in_flight)
                await asyncio.sleep(0.02)
                in_flight -= 1
                writer.write(NO_CONTENT)

        async with Server(script) as server:
            http = client(limit=3)
            target = target_of(server.url())
            answers = await asyncio.gather(*(http.post(target, HEAD, BODY) for _ in range(12)))
            await http.close()
        assert {a.status for a in answers} == {204}
        assert most == 3 and server.connections == 3

    run(main)


def test_tls_verifies_the_certificate_and_the_host_name() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def main() -> None:
        async with Server(answer_each, tls=server_ctx) as server:
            good = client(ssl_context=trusting)
            answer = await good.post(target_of(server.url("https", "localhost")), HEAD, BODY)
            await good.close()
            assert answer.status == 204
            untrusted = client()  # the system's CAs: the test CA is not one of them
            with pytest.raises(HttpFailure, match="TLS certificate error"):
                await untrusted.post(target_of(server.url("https", "localhost")), HEAD, BODY)
            await untrusted.close()
            wrong_name = client(ssl_context=trusting)  # the certificate names localhost
            with pytest.raises(HttpFailure, match="TLS certificate error"):
                await wrong_name.post(target_of(server.url("https", "127.0.0.1")), HEAD, BODY)
            await wrong_name.close()
        head, _ = server.requests[0]
        assert f"Host: localhost:{server.port}\r\n".encode() in head

    run(main)


@pytest.mark.parametrize(
    ("url", "host", "port", "first_lines"),
    [
        ("http://example.com/a?b=1#frag", "example.com", 80, "POST /a?b=1 HTTP/1.1|example.com"),
        ("https://example.com", "example.com", 443, "POST / HTTP/1.1|example.com"),
        ("https://[::1]:8443/x", "::1", 8443, "POST /x HTTP/1.1|[::1]:8443"),
        (
            "http://bücher.example/p",
            "xn--bcher-kva.example",
            80,
            "POST /p HTTP/1.1|xn--bcher-kva.example",
        ),
    ],
)
def test_targets(url: str, host: str, port: int, first_lines: str) -> None:
    target = target_of(url)
    line, shown = first_lines.split("|")
    assert (target.host, target.port) == (host, port)
    assert target.head == f"{line}\r\nHost: {shown}\r\n".encode()


def test_a_url_it_cannot_send_to_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        target_of("ftp://example.com/")
