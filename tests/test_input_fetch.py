"""Inputs by URL, fetched for real: against HTTP servers on loopback (with private addresses
allowed, as for local development), and, for the SSRF guard, inside a loopback-only network
namespace (tests/netns.py) where the metadata and private addresses really answer.

Run as ``python -m tests.test_input_fetch`` this module is the namespace's probe.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from genhook.errors import ErrorCode, GenhookError
from genhook.media.fetch import MediaFetcher
from tests.netns import only_loopback, run_isolated
from tests.ssrf_probe import TableResolver  # the namespace's DNS, injected

Handler = Callable[[BaseHTTPRequestHandler], None]


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, fmt)
    return buffer.getvalue()


PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG", (40, 30))


def head(req: BaseHTTPRequestHandler, **headers: str) -> None:
    """A 200 image/png status line and headers, the body left to the caller."""
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    for key, value in headers.items():
        req.send_header(key.replace("_", "-"), value)
    req.end_headers()


def send(
    req: BaseHTTPRequestHandler,
    body: bytes,
    ctype: str | None = "image/png",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    req.send_response(status)
    if ctype is not None:
        req.send_header("Content-Type", ctype)
    req.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        req.send_header(key, value)
    req.end_headers()
    req.wfile.write(body)


class Server:
    """An HTTP/1.1 server on loopback (stdlib ``http.server``, a thread per connection): each
    path answered by its handler; every request counted by path."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, family: int = socket.AF_INET):
        routes: dict[str, Handler] = {}
        seen: Counter[str] = Counter()
        self.routes, self.seen = routes, seen

        class Handle(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen[self.path] += 1
                route = routes.get(self.path)
                if route is None:
                    send(self, b"not found", "text/plain", 404)
                else:
                    route(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Threading(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

            def server_bind(self) -> None:
                if family == socket.AF_INET6:  # one socket for IPv4 and IPv6 alike
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                super().server_bind()

        self.httpd = Threading((host, port), Handle)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fetcher(tmp_path: Path) -> Iterator[MediaFetcher]:
    f = MediaFetcher(allow_private=True, cache_dir=tmp_path / "inputs", timeout=10.0)
    try:
        yield f
    finally:
        f.close()


def failure(fetcher: MediaFetcher, url: str, field: str = "reference_image_url") -> GenhookError:
    with pytest.raises(GenhookError) as info:
        fetcher.fetch(url, field)
    assert info.value.field == field
    return info.value


def refused(url: str, **options: Any) -> GenhookError:
    """The error of fetching ``url`` with a fetcher of these options (private allowed)."""
    f = MediaFetcher(**{"allow_private": True, **options})
    try:
        return failure(f, url)
    finally:
        f.close()


# -- fetched, decoded, cached ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ctype", "size"),
    [(PNG, "image/png", (64, 48)), (JPEG, "image/jpeg; charset=binary", (40, 30))],
)
def test_png_and_jpeg_fetched_and_decoded(
    server: Server, fetcher: MediaFetcher, body: bytes, ctype: str, size: tuple[int, int]
) -> None:
    """The bytes, their sha256, the real content type and the decoded size."""
    server.routes["/img"] = lambda r: send(r, body, ctype)
    media = fetcher.fetch(server.url("/img"), "logo_url")
    assert media.data == body
    assert media.sha256 == hashlib.sha256(body).hexdigest()
    assert media.content_type == ctype.split(";")[0]
    assert (media.width, media.height) == size
    assert media.url == server.url("/img")


def test_webp_accepted(server: Server, fetcher: MediaFetcher) -> None:
    webp = image_bytes("WEBP", (20, 10))
    server.routes["/w"] = lambda r: send(r, webp, "image/webp")
    assert (fetcher.fetch(server.url("/w"), "f").width, 20) == (20, 20)


def test_same_url_is_fetched_once(server: Server, fetcher: MediaFetcher, tmp_path: Path) -> None:
    """Within the URL cache's time, the same URL is answered from the cache: the server saw
    one request; a second process sharing the folder asks it nothing either."""
    server.routes["/img"] = lambda r: send(r, PNG)
    first = fetcher.fetch(server.url("/img"), "a")
    again = fetcher.fetch(server.url("/img"), "a")
    assert again.data == first.data and again.sha256 == first.sha256
    assert server.seen["/img"] == 1
    other = MediaFetcher(allow_private=True, cache_dir=tmp_path / "inputs")
    try:
        from_disk = other.fetch(server.url("/img"), "a")
    finally:
        other.close()
    assert (from_disk.data, from_disk.width, from_disk.height) == (PNG, 64, 48)
    assert server.seen["/img"] == 1 and other.requests == 0


def test_concurrent_fetches_of_one_url_make_one_request(
    server: Server, fetcher: MediaFetcher
) -> None:
    """Worker threads asking for the same URL at once: one request, the same bytes for all."""
    release = threading.Event()

    def held(r: BaseHTTPRequestHandler) -> None:
        release.wait(10)
        send(r, PNG)

    server.routes["/img"] = held
    got: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: got.append(fetcher.fetch(server.url("/img"), "a").data))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(30)
    assert got == [PNG] * 4
    assert server.seen["/img"] == 1


def test_a_closed_fetcher_opens_again_when_used(server: Server, fetcher: MediaFetcher) -> None:
    """install_fetcher closes the fetcher it replaces; one installed back still works."""
    server.routes["/a"] = lambda r: send(r, PNG)
    server.routes["/b"] = lambda r: send(r, JPEG, "image/jpeg")
    fetcher.fetch(server.url("/a"), "x")
    fetcher.close()
    assert fetcher.fetch(server.url("/b"), "x").content_type == "image/jpeg"


def test_expired_url_is_fetched_again_and_same_bytes_stored_once(
    server: Server, tmp_path: Path
) -> None:
    """Past the URL cache's time the URL is asked again; bytes already stored (from it or from
    another URL) are not stored a second time."""
    now = [1000.0]
    f = MediaFetcher(allow_private=True, cache_dir=tmp_path / "c", url_ttl=60, clock=lambda: now[0])
    server.routes["/a"] = lambda r: send(r, PNG)
    server.routes["/b"] = lambda r: send(r, PNG)
    try:
        f.fetch(server.url("/a"), "x")
        f.fetch(server.url("/b"), "x")
        now[0] += 61
        f.fetch(server.url("/a"), "x")
    finally:
        f.close()
    assert (server.seen["/a"], server.seen["/b"]) == (2, 1)
    blobs = list((tmp_path / "c" / "blobs").rglob("*.bin"))
    assert [b.read_bytes() for b in blobs] == [PNG]


def test_failures_are_not_cached(server: Server, fetcher: MediaFetcher) -> None:
    """A 500 is transient (input_fetch_failed, retried on the schedule); the next attempt
    asks again and gets the image."""
    answers = iter([500, 200])

    def flaky(r: BaseHTTPRequestHandler) -> None:
        status = next(answers)
        send(r, PNG if status == 200 else b"oops", "image/png", status)

    server.routes["/flaky"] = flaky
    error = failure(fetcher, server.url("/flaky"))
    assert error.code is ErrorCode.INPUT_FETCH_FAILED and error.retryable
    assert "HTTP 500" in error.description
    assert fetcher.fetch(server.url("/flaky"), "reference_image_url").data == PNG
    assert server.seen["/flaky"] == 2


# -- refused: permanent ---------------------------------------------------------------------


def test_too_large_stream_is_aborted_early(server: Server, tmp_path: Path) -> None:
    """A body without a length that goes on past the cap: the download stops at the cap, and
    the server cannot send the rest (its writes fail once the client is gone)."""
    total = 256 * 1024 * 1024
    sent = [0]
    done = threading.Event()

    def endless(r: BaseHTTPRequestHandler) -> None:
        head(r, Connection="close")
        chunk = PNG + b"\0" * (64 * 1024 - len(PNG))
        try:
            while sent[0] < total:
                r.wfile.write(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass
        finally:
            done.set()

    server.routes["/big"] = endless
    error = refused(server.url("/big"), max_bytes=100_000)
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA and not error.retryable
    assert "over the limit of 100000 bytes" in error.description
    assert done.wait(30)
    assert sent[0] < total


def test_declared_length_over_the_cap_is_refused_before_reading(server: Server) -> None:
    server.routes["/big"] = lambda r: send(r, b"\0" * 200_000)
    error = refused(server.url("/big"), max_bytes=100_000)
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "200000 bytes, over the limit" in error.description


@pytest.mark.parametrize("ctype", ["text/html", "image/gif", "image/svg+xml", None])
def test_wrong_content_type_refused(server: Server, fetcher: MediaFetcher, ctype: str) -> None:
    server.routes["/x"] = lambda r: send(r, PNG, ctype)
    error = failure(fetcher, server.url("/x"))
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "content type" in error.description


@pytest.mark.parametrize(
    "body",
    [b"definitely not an image", PNG[: len(PNG) // 2], image_bytes("GIF"), image_bytes("BMP")],
)
def test_undecodable_bytes_refused(server: Server, fetcher: MediaFetcher, body: bytes) -> None:
    """Garbage, a truncated PNG, and formats other than the three (sent as image/png)."""
    server.routes["/x"] = lambda r: send(r, body, "image/png")
    error = failure(fetcher, server.url("/x"))
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "do not decode" in error.description


def test_decompression_bomb_refused(server: Server, tmp_path: Path) -> None:
    """A small file of too many pixels is refused from its header, before it is decoded."""
    bomb = image_bytes("PNG", (5000, 5000))
    server.routes["/bomb"] = lambda r: send(r, bomb)
    error = refused(server.url("/bomb"), max_pixels=1_000_000)
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "5000x5000 pixels, over the limit of 1000000" in error.description


@pytest.mark.parametrize(("status", "code"), [(404, "invalid"), (403, "invalid"), (503, "failed")])
def test_http_errors(server: Server, fetcher: MediaFetcher, status: int, code: str) -> None:
    server.routes["/x"] = lambda r: send(r, b"no", "text/plain", status)
    error = failure(fetcher, server.url("/x"))
    expected = ErrorCode.INVALID_INPUT_MEDIA if code == "invalid" else ErrorCode.INPUT_FETCH_FAILED
    assert error.code is expected
    assert f"HTTP {status}" in error.description


def test_missing_path_is_404_permanent(server: Server, fetcher: MediaFetcher) -> None:
    error = failure(fetcher, server.url("/nothing-here.png?sig=secret"))
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "secret" not in error.description  # the query (a signed URL's token) is not echoed


# -- transient -------------------------------------------------------------------------------


def test_connection_refused_is_transient(fetcher: MediaFetcher) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    error = failure(fetcher, f"http://127.0.0.1:{port}/img.png")
    assert error.code is ErrorCode.INPUT_FETCH_FAILED and error.retryable


def test_reset_mid_body_is_transient(server: Server, fetcher: MediaFetcher) -> None:
    def cut(r: BaseHTTPRequestHandler) -> None:
        head(r, Content_Length=str(len(PNG) * 4))
        r.wfile.write(PNG)
        r.wfile.flush()
        r.close_connection = True
        r.connection.shutdown(socket.SHUT_RDWR)

    server.routes["/cut"] = cut
    error = failure(fetcher, server.url("/cut"))
    assert error.code is ErrorCode.INPUT_FETCH_FAILED


def test_slow_server_times_out(server: Server) -> None:
    """A server that trickles its answer past the time limit: input_fetch_failed."""
    stop = threading.Event()

    def slow(r: BaseHTTPRequestHandler) -> None:
        head(r, Content_Length="1000")
        try:
            while not stop.wait(0.05):
                r.wfile.write(b"\0")
                r.wfile.flush()
        except OSError:
            pass

    server.routes["/slow"] = slow
    f = MediaFetcher(allow_private=True, timeout=0.5)
    try:
        error = failure(f, server.url("/slow"))
    finally:
        stop.set()
        f.close()
    assert error.code is ErrorCode.INPUT_FETCH_FAILED and error.retryable
    assert "within 0.5s" in error.description


def test_a_cancelled_job_stops_waiting(server: Server) -> None:
    """A job cancelled while its input trickles in: cancelled, without waiting out the limit."""
    stop = threading.Event()
    started = threading.Event()

    def slow(r: BaseHTTPRequestHandler) -> None:
        head(r, Content_Length="1000")
        started.set()
        stop.wait(60)

    server.routes["/slow"] = slow
    f = MediaFetcher(allow_private=True, timeout=60)
    try:
        with pytest.raises(GenhookError) as info:
            f.fetch(server.url("/slow"), "logo_url", is_cancelled=started.is_set)
    finally:
        stop.set()
        f.close()
    assert info.value.code is ErrorCode.CANCELLED


# -- redirects -------------------------------------------------------------------------------


def test_redirects_followed_up_to_the_limit(server: Server, fetcher: MediaFetcher) -> None:
    for i in range(4):
        server.routes[f"/r{i}"] = lambda r, i=i: send(r, b"", None, 302, {"Location": f"/r{i + 1}"})
    server.routes["/r4"] = lambda r: send(r, PNG)
    assert fetcher.fetch(server.url("/r1"), "f").data == PNG  # 3 redirects: followed
    error = failure(fetcher, server.url("/r0"))  # 4: refused
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "more than 3 redirects" in error.description


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest",
        "http://0xa9fea9fe/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "ftp://example.com/img.png",
    ],
)
def test_redirect_to_a_refused_address_is_not_followed(
    server: Server, fetcher: MediaFetcher, target: str
) -> None:
    """Each redirect's target is checked before any connection (IP literals never reach the
    resolver, so the guard cannot be what stops them)."""
    server.routes["/go"] = lambda r: send(r, b"", None, 301, {"Location": target})
    error = failure(fetcher, server.url("/go"))
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert fetcher.requests == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/img.png",
        "http://10.0.0.1/img.png",
        "http://[::1]/img.png",
        "http://2130706433/img.png",
    ],
)
def test_private_literals_refused_without_private_allowed(url: str) -> None:
    """The default policy refuses loopback and private IP literals before connecting."""
    f = MediaFetcher()
    try:
        error = failure(f, url)
    finally:
        f.close()
    assert error.code is ErrorCode.INVALID_INPUT_MEDIA
    assert "non-public address" in error.description
    assert f.requests == 0


# -- the SSRF guard for real, in a loopback-only network namespace ----------------------------

NETNS_ADDRESSES = ["169.254.169.254/32", "100.100.100.200/32", "10.9.8.7/32", "fd12::7/128"]
NETNS_ADDRESSES += ["fd00:ec2::254/128"]
PROBE_PORT = 8091
PRIVATE_TARGETS = [
    "http://10.9.8.7:{port}/img",
    "http://[fd12::7]:{port}/img",
    "http://lan.test:{port}/img",
    "http://127.0.0.1:{port}/img",
]
REFUSED_TARGETS = [
    "http://169.254.169.254:{port}/img",
    "http://2852039166:{port}/img",
    "http://[::ffff:169.254.169.254]:{port}/img",
    "http://[fd00:ec2::254]:{port}/img",
    "http://100.100.100.200:{port}/img",
    "http://metadata.google.internal:{port}/img",
    "http://rebind.test:{port}/img",
    "http://imds6.test:{port}/img",
    "http://127.0.0.1:{port}/to-metadata",  # redirects to 169.254.169.254
    "http://127.0.0.1:{port}/to-rebind",  # redirects to a name resolving there
]


def probe() -> dict[str, dict[str, Any]]:
    """In the namespace: an image server on every address of ``lo``; each target fetched with
    private inputs allowed and with the default policy; what the server saw decides."""
    if not only_loopback():
        sys.exit("refusing to run: this network namespace has more than loopback")
    server = Server("::", PROBE_PORT, socket.AF_INET6)
    report: dict[str, dict[str, Any]] = {}
    try:
        server.routes["/img"] = lambda r: send(r, PNG)
        server.routes["/to-metadata"] = lambda r: send(
            r, b"", None, 302, {"Location": f"http://169.254.169.254:{PROBE_PORT}/img"}
        )
        server.routes["/to-rebind"] = lambda r: send(
            r, b"", None, 302, {"Location": f"http://rebind.test:{PROBE_PORT}/img"}
        )
        for allow_private in (True, False):
            f = MediaFetcher(allow_private=allow_private, resolver=TableResolver(), timeout=5)
            try:
                for template in PRIVATE_TARGETS + REFUSED_TARGETS:
                    url = template.format(port=PROBE_PORT)
                    before = server.seen["/img"]
                    try:
                        f.fetch(url, "logo_url")
                        outcome, description = "ok", ""
                    except GenhookError as exc:
                        outcome, description = exc.code.value, exc.description
                    reached = server.seen["/img"] > before
                    report[f"{allow_private} {url}"] = {
                        "outcome": outcome,
                        "description": description,
                        "reached": reached,
                    }
            finally:
                f.close()
    finally:
        server.close()
    return report


def test_inputs_never_reach_metadata_or_private_addresses_for_real() -> None:
    """Where 169.254.169.254 and the other addresses really answer, a fetch with private
    inputs allowed reaches loopback and the private addresses only; metadata addresses, names
    resolving to them and redirects to them are refused (invalid_input_media) and never
    reached; under the default policy nothing inside is reached at all."""
    report = run_isolated("tests.test_input_fetch", NETNS_ADDRESSES, timeout=120)
    for key, result in report.items():
        allow, url = key.split(" ", 1)
        private = any(url == t.format(port=PROBE_PORT) for t in PRIVATE_TARGETS)
        if allow == "True" and private:
            assert result == {"outcome": "ok", "description": "", "reached": True}, key
        else:
            assert result["outcome"] == "invalid_input_media", (key, result)
            assert not result["reached"], key
    assert len(report) == 2 * (len(PRIVATE_TARGETS) + len(REFUSED_TARGETS))


if __name__ == "__main__":
    print(json.dumps(probe()))
