"""Real processes for acceptance tests: `genhook serve` / `genhook worker`, a callback receiver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from tests.databases import database_url

ROOT = Path(__file__).resolve().parents[2]
GENHOOK = str(Path(sys.executable).with_name("genhook"))

REMOTE_FLOW = """\
id: remote-image
version: 1
description: One image from an OpenAI-compatible engine, exported as an avatar.
external_id: item_id
input:
  required: [item_id, name]
  properties:
    item_id: {type: string, minLength: 1}
    name: {type: string, minLength: 1}
nodes:
  image:
    kind: generate
    with:
      backend: openai
      model: gpt-image-test
      prompt: "studio photo of ${input.name}"
      width: 512
      height: 512
  export:
    kind: export
    with:
      image: ${image.image}
      platforms: avatar
outputs:
  assets:
    - ${export.assets}
"""

TINY_FLOW = """\
id: tiny
version: 1
description: The smallest trip through every node kind (bursts).
external_id: item_id
input:
  required: [item_id]
  properties:
    item_id: {type: string, minLength: 1}
nodes:
  style:
    kind: style_preset
    with:
      style: minimal
  prompt:
    kind: prompt_builder
    with:
      template: "item {{ input.item_id }}, {{ style.prompt }}"
      vars:
        style: ${style.preset}
  image:
    kind: generate
    with:
      prompt: ${prompt.prompt}
      subject: ${input.item_id}
      style: ${style.preset}
      width: 128
      height: 128
  qc:
    kind: quality_check
    with:
      result: ${image.result}
      min_width: 128
      min_height: 128
      max_retries: 0
  seo:
    kind: metadata
    with:
      alt_text: "item {{ input.item_id }}"
      caption: "item {{ input.item_id }}"
      filename: "{{ input.item_id }}"
  export:
    kind: export
    with:
      image: ${qc.image}
      platforms: thumb
      seo: ${seo.seo}
outputs:
  assets:
    - ${export.assets}
  seo: ${seo.seo}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real callback receiver on loopback. ``statuses`` answers the n-th call (last repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    port: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    n = len(receiver.received)
                status = receiver.statuses[min(n, len(receiver.statuses)) - 1]
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/genhook"

    def calls(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def for_job(self, job_id: str) -> list[Received]:
        return [r for r in self.calls() if r.json.get("job_id") == job_id]

    def wait_job(self, job_id: str, timeout: float = 60, count: int = 1) -> list[Received]:
        return list(
            wait_for(
                lambda: (found := self.for_job(job_id)) and len(found) >= count and found,
                timeout,
                f"{count} callback(s) for {job_id}",
            )
        )


def ts(text: str | None) -> float:
    """A contract timestamp (``...Z``) as epoch seconds."""
    assert text is not None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def verify(secret: str, call: Received) -> Any:
    """Check the signature with the independent standardwebhooks library; return the payload."""
    return Webhook(secret).verify(call.body, call.headers)


DATABASES = ("sqlite", "postgresql")
"""The stores every acceptance test runs on (the ``db_kind`` fixture's parameters)."""


def database_kind(url: str) -> str:
    """``sqlite`` or ``postgresql``: the kind of database ``url`` names."""
    return "sqlite" if url.startswith("sqlite") else "postgresql"


class Genhook:
    """A data dir, its workflows and service, and `genhook serve` / `genhook worker` processes.

    ``database``: ``sqlite`` (the default: genhook's own file under the data dir) or
    ``postgresql`` (a fresh database on the test server, dropped by :meth:`close`). A
    ``GENHOOK_DATABASE_URL`` given in ``env`` wins over both. :attr:`database_url` is the
    database in use, whichever it is; :meth:`rows` queries it."""

    def __init__(self, tmp: Path, database: str = "sqlite", **env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self._resources = ExitStack()
        url = env.get("GENHOOK_DATABASE_URL")
        if url is None and database == "postgresql":
            url = self._resources.enter_context(database_url("postgresql", tmp))
            env = {**env, "GENHOOK_DATABASE_URL": url}
        elif url is None and database != "sqlite":
            raise ValueError(f"unknown database kind {database!r}")
        self.database_url = url or f"sqlite:///{tmp / 'var' / 'genhook.db'}"
        self.database = database_kind(self.database_url)
        flows = tmp / "flows"
        flows.mkdir(parents=True, exist_ok=True)
        for path in (ROOT / "workflows").glob("*.yaml"):
            shutil.copy(path, flows / path.name)
        (flows / "remote-image.yaml").write_text(REMOTE_FLOW, encoding="utf-8")
        (flows / "tiny.yaml").write_text(TINY_FLOW, encoding="utf-8")
        presets = tmp / "presets"
        shutil.copytree(ROOT / "presets", presets, dirs_exist_ok=True)
        text = (presets / "platforms.yaml").read_text(encoding="utf-8")
        text = text.replace(
            "platforms:\n",
            "platforms:\n  thumb: {label: Test thumb, width: 64, height: 64, fit: crop, "
            "format: jpeg, quality: 70}\n",
            1,
        )
        (presets / "platforms.yaml").write_text(text, encoding="utf-8")
        self.env = {
            **os.environ,
            "GENHOOK_DATA_DIR": str(tmp / "var"),
            "GENHOOK_WORKFLOWS_DIR": str(flows),
            "GENHOOK_PRESETS_DIR": str(presets),
            "GENHOOK_ALLOW_PRIVATE_CALLBACKS": "true",
            "GENHOOK_RETRY_SCHEDULE": "0.3s,0.3s,0.3s",
            "GENHOOK_DELIVERY_SCHEDULE": "0.3s,0.3s,0.3s,0.3s",
            "GENHOOK_POLL_SECONDS": "0.2",
            **env,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.clients: list[httpx.Client] = []
        self.logfiles: list[Any] = []
        try:
            created = self.cli("services", "create", "shop")
        except BaseException:
            self._resources.close()
            raise
        self.service = json.loads(created.stdout)
        self.key = self.service["api_key"]
        self.secret = self.service["webhook_secret"]
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``genhook ARGS`` on this install, as an operator runs it (must exit 0)."""
        return subprocess.run(
            [GENHOOK, *args], env=self.env, capture_output=True, text=True, timeout=120, check=True
        )

    def new_service(self, name: str, *flags: str) -> httpx.Client:
        """Another service of this install, made with `genhook services create`; its client
        (closed by :meth:`close`)."""
        key = json.loads(self.cli("services", "create", name, *flags).stdout)["api_key"]
        client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self.clients.append(client)
        return client

    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine on this install's database (the caller disposes of it)."""
        url = self.database_url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        if url.startswith("sqlite"):
            return sa.create_engine(url, connect_args={"timeout": 30})
        return sa.create_engine(url, poolclass=sa.pool.NullPool)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """What a query (``:name`` parameters) over this install's database returns, on SQLite
        or PostgreSQL; a statement that returns no rows is committed and gives ``[]``."""
        engine = self.engine()
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(sql), params)
                return [dict(r) for r in result.mappings()] if result.returns_rows else []
        finally:
            engine.dispose()

    def serve(self, workers: int = 2) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"serve-{len(self.procs)}.log").open("wb")
        self.logfiles.append(log)
        proc = subprocess.Popen(
            [GENHOOK, "serve", "--port", str(self.port), "--workers", str(workers)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        wait_for(self._healthy, 60, "genhook serve to answer /healthz", every=0.1)
        return proc

    def worker(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        self.logfiles.append(log)
        proc = subprocess.Popen(
            [GENHOOK, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def trigger(self, workflow: str, body: Any, **headers: str) -> httpx.Response:
        return self.http.post(f"/v1/workflows/{workflow}/runs", json=body, headers=headers)

    def job(self, job_id: str) -> Any:
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 60) -> Any:
        return wait_for(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout,
            f"{job_id} to reach {statuses}",
        )

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        self.http.close()
        for client in self.clients:  # an open keep-alive connection would delay the exit
            client.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logfiles:
            log.close()
        self._resources.close()  # a PostgreSQL database of its own is dropped
