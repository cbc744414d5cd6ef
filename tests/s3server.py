"""A real S3-compatible server for tests: moto's server mode, in a process of its own.

Usage::

    from tests.s3server import s3_server

    with s3_server() as s3:             # moto on a free loopback port, one empty bucket
        env = s3.env(prefix="assets")   # GENHOOK_STORAGE_URL, GENHOOK_S3_ENDPOINT_URL, AWS_*
        subprocess.run([...], env={**os.environ, **env})
        assert s3.keys("assets/") == [...]   # what the bucket holds, read over S3 itself

``s3_server(host=..., port=...)`` binds another address (a veth address of a network namespace,
for a multi-host rehearsal; the server listens on ``host`` only). ``S3Server.new_bucket()``
gives a test a bucket of its own on a shared server; ``stop()`` / ``start()`` take the server
down and up again on the same address (moto keeps its objects in memory: a restarted server is
empty, and the buckets are made again). The credentials are moto's test ones: moto accepts any
key pair, but it checks SigV4 signatures (and presigned URLs' expiry) like S3.

moto checks header signatures only: it serves a presigned URL whatever its signature or age.
:class:`S3Gateway` (``s3_server(gateway=True)``; then ``endpoint_url`` is the gateway's) is a
loopback HTTP front that does what S3 does with a query-signed request before passing it on:
recomputes the SigV4 signature from the request as received (AWS's documented canonical
request, payload ``UNSIGNED-PAYLOAD``) and answers ``403`` with S3's XML error
(``SignatureDoesNotMatch``, or ``AccessDenied`` "Request has expired") when it does not match
or is past ``X-Amz-Date`` + ``X-Amz-Expires``. It also injects faults for retry tests:
``gateway.fail_next(n, "503")`` answers the next n requests ``503 SlowDown`` (S3's throttling
answer), ``"drop"`` closes their connections without an answer; ``gateway.refuse("sku-9",
after=1)`` answers every ``PUT`` whose path holds ``sku-9`` with ``503`` past the first one
(an upload that fails for good midway through a job's files).

Nothing here mocks a client: genhook's own S3 client talks HTTP to this server.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

ACCESS_KEY = "genhook-test-key"
SECRET_KEY = "genhook-test-secret"
REGION = "us-east-1"
STARTUP_SECONDS = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """One moto server process and the buckets made on it."""

    host: str
    port: int
    bucket: str
    buckets: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    gateway: S3Gateway | None = None

    @property
    def moto_url(self) -> str:
        """moto's own address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """Where clients go: the gateway when there is one, else moto itself."""
        return self.gateway.url if self.gateway is not None else self.moto_url

    def credentials(self) -> dict[str, str]:
        """The AWS variables a client of this server needs."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def env(self, prefix: str = "assets", bucket: str | None = None) -> dict[str, str]:
        """genhook's environment for assets under ``s3://BUCKET/prefix`` on this server."""
        target = f"{bucket or self.bucket}/{prefix}".rstrip("/")
        return {
            "GENHOOK_STORAGE_URL": f"s3://{target}",
            "GENHOOK_S3_ENDPOINT_URL": self.endpoint_url,
            **self.credentials(),
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (to look at what genhook stored)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def new_bucket(self, name: str | None = None) -> str:
        """Make an empty bucket (a fresh random name unless given); return its name."""
        name = name or f"genhook-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Every key under ``prefix`` in ``bucket`` (default: the server's first bucket)."""
        client = self.client()
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket or self.bucket, Prefix=prefix
        ):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def start(self) -> None:
        """Start (or restart) the server on its address and make its buckets."""
        env = {**os.environ, **self.credentials()}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}")
            try:
                httpx.get(f"{self.moto_url}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not answer in time") from None
                time.sleep(0.05)
        client = self.client()
        for name in self.buckets:
            client.create_bucket(Bucket=name)

    def stop(self) -> None:
        """Stop the server process (its objects go with it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class S3Gateway:
    """A front of a moto server that checks presigned URLs like S3 and injects faults (see
    the module docstring). Requests without a query signature pass unchanged."""

    def __init__(self, upstream_host: str, upstream_port: int, host: str, secret: str) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.secret = secret
        self.faults: list[str] = []
        self.refusals: dict[str, int] = {}  # path part -> PUTs still let through
        self.requests = 0
        self.refused: list[str] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                gateway._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, count: int, how: str = "503") -> None:
        """Answer the next ``count`` requests with ``how``: ``503`` (SlowDown) or ``drop``."""
        with self._lock:
            self.faults.extend([how] * count)

    def refuse(self, part: str, after: int = 0) -> None:
        """Answer ``503`` to every ``PUT`` whose path holds ``part``, past the first ``after``."""
        with self._lock:
            self.refusals[part] = after

    def _refused(self, method: str, path: str) -> bool:
        with self._lock:
            for part, left in self.refusals.items():
                if method == "PUT" and part in path:
                    self.refusals[part] = left - 1
                    return left <= 0
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        with self._lock:
            self.requests += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "503" or self._refused(handler.command, handler.path):
            _xml_error(handler, 503, "SlowDown", "Please reduce your request rate.")
            return
        query = urlsplit(handler.path).query
        if "X-Amz-Signature=" in query:
            problem = check_presigned(
                handler.command, handler.path, dict(handler.headers.items()), self.secret
            )
            if problem is not None:
                self.refused.append(problem[0])
                _xml_error(handler, 403, *problem)
                return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            handler.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP and name.lower() != "content-length":
                    handler.send_header(name, value)
            length = answer.getheader("content-length")
            is_head = handler.command == "HEAD"
            handler.send_header("Content-Length", length if is_head and length else str(len(data)))
            handler.end_headers()
            if not is_head:
                handler.wfile.write(data)
        finally:
            upstream.close()


_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


def _xml_error(handler: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _enc(text: str) -> str:
    return quote(text, safe="-_.~")


def check_presigned(
    method: str, target: str, headers: dict[str, str], secret: str, now: datetime | None = None
) -> tuple[str, str] | None:
    """None when ``target`` (path and query, as received) carries a valid SigV4 query
    signature for ``secret`` that has not expired; else S3's error code and message."""
    parts = urlsplit(target)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(params)
    try:
        algorithm = given["X-Amz-Algorithm"]
        scope = given["X-Amz-Credential"].split("/", 1)[1]
        signed_at = datetime.strptime(given["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(given["X-Amz-Expires"])
        signed_headers = given["X-Amz-SignedHeaders"]
        signature = given["X-Amz-Signature"]
    except (KeyError, IndexError, ValueError):
        return "AuthorizationQueryParametersError", "Query-string authentication is malformed."
    if algorithm != "AWS4-HMAC-SHA256" or not 1 <= expires <= 604800:
        return "AuthorizationQueryParametersError", "X-Amz-Expires must be 1 to 604800."
    if (now or datetime.now(UTC)) > signed_at + timedelta(seconds=expires):
        return "AccessDenied", "Request has expired"
    lower = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    canonical_headers = "".join(f"{h}:{lower.get(h, '')}\n" for h in signed_headers.split(";"))
    query = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params) if k != "X-Amz-Signature")
    canonical = "\n".join(
        [method, parts.path, query, canonical_headers, signed_headers, "UNSIGNED-PAYLOAD"]
    )
    to_sign = "\n".join(
        [algorithm, given["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for piece in scope.split("/"):
        key = hmac.new(key, piece.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "SignatureDoesNotMatch", "The request signature we calculated does not match."
    return None


@contextmanager
def s3_server(
    host: str = "127.0.0.1",
    port: int | None = None,
    bucket: str = "genhook-assets",
    *,
    gateway: bool = False,
) -> Iterator[S3Server]:
    """A moto S3 server on ``host`` (loopback by default; a free port unless given) holding one
    empty bucket ``bucket``; stopped afterwards. ``gateway``: clients go through an
    :class:`S3Gateway` on ``host`` (presigned URLs checked, faults injectable)."""
    server = S3Server(host, port or free_port(host), bucket, buckets=[bucket])
    server.start()
    if gateway:
        server.gateway = S3Gateway(host, server.port, host, SECRET_KEY)
    try:
        yield server
    finally:
        if server.gateway is not None:
            server.gateway.close()
        server.stop()
