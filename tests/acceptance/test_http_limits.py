"""Connection limits of a real `genhook serve`, driven with raw sockets on loopback.

Header size, the time a request head may take, an idle connection, the connection cap, and a
request that is not HTTP: each answered in genhook's JSON error shape (or closed), never read
or held open without bound.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.acceptance.harness import Genhook

HEADER_TIMEOUT = 1.5
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[Genhook]:
    g = Genhook(
        tmp_path_factory.mktemp(f"limits-{db_kind}"),
        database=db_kind,
        GENHOOK_MAX_HEADER_BYTES="4096",
        GENHOOK_HEADER_TIMEOUT=f"{HEADER_TIMEOUT}s",
        GENHOOK_KEEPALIVE_TIMEOUT="1s",
        GENHOOK_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    g.serve(workers=0)
    yield g
    g.close()


def connect(g: Genhook) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    return sock


def read_all(sock: socket.socket, limit: float = 10.0) -> bytes:
    """Everything the server sends until it closes (bounded by ``limit`` seconds)."""
    sock.settimeout(limit)
    chunks = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def test_oversized_headers_get_431_json_and_are_not_read(server: Genhook) -> None:
    """Headers past GENHOOK_MAX_HEADER_BYTES: 431 headers_too_large, then the server closes
    while the client is still sending (the rest is never read)."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8192)
        sent_more = 0
        try:
            for _ in range(64):  # 16 MB more if the server kept reading
                sock.sendall(b"a" * 262144)
                sent_more += 1
        except OSError:
            pass
        status, headers, body = answer(read_all(sock))
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert body["error_code"] == "headers_too_large" and "4096" in body["error_description"]
    assert sent_more < 64, "the server stopped reading"


def test_a_dribbled_request_head_times_out_with_408(server: Genhook) -> None:
    """A client sending its head a byte at a time is cut off after GENHOOK_HEADER_TIMEOUT."""
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        try:
            for _ in range(40):  # 0.2 s apart: each byte would reset a keep-alive timer
                sock.sendall(b"X")
                time.sleep(0.2)
        except OSError:
            pass
        status, _, body = answer(read_all(sock))
    elapsed = time.monotonic() - started
    assert status == 408 and body["error_code"] == "request_timeout"
    assert HEADER_TIMEOUT - 0.1 < elapsed < HEADER_TIMEOUT + 3


def test_a_silent_connection_is_closed(server: Genhook) -> None:
    """A connection that sends nothing is closed after the header timeout, quietly."""
    started = time.monotonic()
    with connect(server) as sock:
        assert read_all(sock) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT + 3


def test_connections_past_the_cap_get_503_json(server: Genhook) -> None:
    """With GENHOOK_MAX_CONNECTIONS open, one more is answered 503 server_busy and closed;
    once they close, connections are served again."""
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # the server has accepted them
        with connect(server) as extra:
            status, headers, body = answer(read_all(extra, 5))
        assert status == 503 and body["error_code"] == "server_busy"
        assert headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert server.http.get("/healthz").status_code == 200


def test_a_request_that_is_not_http_gets_400_json(server: Genhook) -> None:
    """uvicorn's plain-text 400 comes in genhook's JSON error shape."""
    with connect(server) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        status, headers, body = answer(read_all(sock))
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["error_code"] == "malformed_request"


def test_keep_alive_requests_within_the_limits_are_served(server: Genhook) -> None:
    """Two requests on one connection, each head well inside the limits: both answered."""
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, "the server closed a healthy keep-alive connection"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
