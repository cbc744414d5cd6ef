"""Graceful shutdown of every role, with real processes, on SQLite and PostgreSQL.

A long job is one on the remote engine (the faithful fake OpenAI server) that sleeps: SIGTERMed
with a short bound (GENHOOK_SHUTDOWN_SECONDS), its worker hands it back and exits 0 at once, and
another worker finishes it long before its lease (60 s here) would have run out, no retry spent;
with a long bound the job finishes in the worker that runs it. A sender hands back a callback
whose receiver does not answer; `serve` stops its embedded workers within the bound; a second
signal exits at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.acceptance.harness import GENHOOK, Genhook, free_port, verify, wait_for
from tests.databases import database_url
from tests.fake_openai import FAKE_API_KEY, FakeOpenAI

ITEM = {"item_id": "S-1", "name": "linen cushion"}
LEASE = "60s"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def engine_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=FAKE_API_KEY) as fake:
        yield fake


@pytest.fixture
def install(
    tmp_path: Path, db_url: str, engine_api: FakeOpenAI
) -> Iterator[Callable[..., Genhook]]:
    made: list[Genhook] = []

    def make(**env: str) -> Genhook:
        g = Genhook(
            tmp_path / f"g{len(made)}",
            GENHOOK_DATABASE_URL=db_url,
            GENHOOK_OPENAI_BASE_URL=engine_api.base_url,
            GENHOOK_OPENAI_API_KEY=FAKE_API_KEY,
            GENHOOK_OPENAI_TIMEOUT="120",
            GENHOOK_LEASE_SECONDS=LEASE,
            **env,
        )
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def start(g: Genhook, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A `genhook` process of ``g``'s install (logs in ``name``.log, stopped by ``g.close``)."""
    log = (g.tmp / f"{name}.log").open("wb")
    g.logfiles.append(log)
    proc = subprocess.Popen(
        [GENHOOK, *args], env={**g.env, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    g.procs.append(proc)
    return proc


def running_on(
    g: Genhook, job_id: str, attempt: int, engine: FakeOpenAI | None = None, sent: int = 0
) -> Any:
    """Wait until the job's ``attempt`` runs and, with ``engine``, until the engine has had
    ``sent`` generation requests (the attempt's own is in flight: the claim comes first)."""
    job = wait_for(
        lambda: (
            (job := g.job(job_id))["status"] == "running"
            and len(job["attempts"]) == attempt
            and job
        ),
        60,
        f"{job_id} running its attempt {attempt}",
        every=0.1,
    )
    if engine is not None:
        wait_for(lambda: len(engine.generations) >= sent, 60, f"engine request {sent}", 0.05)
    return job


def stop_within(proc: subprocess.Popen[bytes], seconds: float, g: Genhook) -> float:
    """SIGTERM ``proc``; its exit code is 0 within ``seconds``; how long it took."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {seconds}s after SIGTERM\n{g.logs()}") from None
    assert code == 0, g.logs()
    return time.monotonic() - started


def spared(g: Genhook, db_url: str, job_id: str) -> int:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT spared_attempts FROM jobs WHERE id = :id"), {"id": job_id}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_short_bound_hands_the_job_back_and_another_worker_finishes_it_at_once(
    install: Callable[..., Genhook], engine_api: FakeOpenAI, db_url: str
) -> None:
    """Two workers in turn run the job on an engine that does not answer for 60 s, each
    SIGTERMed with a 1 s bound: each exits 0 within it and hands the job back; a third worker
    claims it at once (no wait for the 60 s lease) and finishes it. The retry schedule allows
    two attempts in all, so had the hand-backs counted, the third attempt would be refused."""
    engine_api.script(["sleep:60", "sleep:60", "ok"])
    g = install(GENHOOK_RETRY_SCHEDULE="0.3s", GENHOOK_SHUTDOWN_SECONDS="1s")
    g.serve(workers=0)
    job_id = g.trigger("remote-image", ITEM).json()["job_id"]
    for attempt in (1, 2):
        worker = start(g, f"worker-{attempt}", "worker")
        running_on(g, job_id, attempt, engine_api, sent=attempt)
        took = stop_within(worker, 10, g)
        assert took < 6, f"took {took:.1f}s to stop with a 1 s bound"
        job = wait_for(
            lambda: (j := g.job(job_id))["status"] == "queued" and j, 10, "the hand-back"
        )
        assert job["attempts"][-1]["outcome"] == "handed_back"
        assert job["attempts"][-1]["error"] is None
        assert "handed back 1 running job" in (g.tmp / f"worker-{attempt}.log").read_text()
    handed_at = time.monotonic()
    start(g, "worker-3", "worker")
    done = g.wait_status(job_id, {"succeeded", "failed"}, timeout=40)
    assert done["status"] == "succeeded", done
    assert time.monotonic() - handed_at < 30  # the 60 s lease was not waited out
    assert [a["outcome"] for a in done["attempts"]] == ["handed_back", "handed_back", "succeeded"]
    assert spared(g, db_url, job_id) == 2
    assert len(engine_api.generations) == 3


def test_a_long_bound_lets_the_job_finish_and_readyz_says_shutting_down(
    install: Callable[..., Genhook], engine_api: FakeOpenAI
) -> None:
    """SIGTERM while a 3 s job runs, with the default 30 s bound: /readyz on the worker's
    health port answers 503 shutting_down at once, /healthz stays 200, the job succeeds in
    this worker (one attempt), and the worker exits 0 as soon as it has."""
    engine_api.script(["sleep:3"])
    g = install()
    g.serve(workers=0)
    port = free_port()
    job_id = g.trigger("remote-image", ITEM).json()["job_id"]
    worker = start(g, "worker", "worker", "--health-port", str(port))
    running_on(g, job_id, 1, engine_api, sent=1)
    health = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{health}/readyz", timeout=10).status_code == 200
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    answer = wait_for(
        lambda: (r := httpx.get(f"{health}/readyz", timeout=5)).status_code == 503 and r,
        2,
        "readyz to say shutting_down",
        every=0.02,
    )
    assert answer.json() == {"status": "unavailable", "reason": "shutting_down", "role": "worker"}
    assert time.monotonic() - started < 1.0
    assert httpx.get(f"{health}/healthz", timeout=10).status_code == 200
    assert worker.wait(30) == 0, g.logs()
    assert time.monotonic() - started < 10
    job = g.job(job_id)
    assert job["status"] == "succeeded", job
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]


def test_a_second_signal_exits_at_once_and_the_lease_stays(
    install: Callable[..., Genhook], engine_api: FakeOpenAI
) -> None:
    """SIGTERM then SIGINT with a 30 s bound and a job that would take 60 s: the worker exits
    at once (130, the forced exit), and the job is left running under its lease, as after a
    crash (its lease then runs out and another worker takes it over)."""
    engine_api.script(["sleep:60"])
    g = install()
    g.serve(workers=0)
    job_id = g.trigger("remote-image", ITEM).json()["job_id"]
    worker = start(g, "worker", "worker")
    running_on(g, job_id, 1, engine_api, sent=1)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    worker.send_signal(signal.SIGINT)
    assert worker.wait(5) == 130, g.logs()
    assert time.monotonic() - started < 2
    job = g.job(job_id)
    assert job["status"] == "running" and job["attempts"][0]["outcome"] is None


def test_serve_stops_its_workers_within_the_bound(
    install: Callable[..., Genhook], engine_api: FakeOpenAI
) -> None:
    """`serve --workers 1` and its worker SIGTERMed together (as systemd's default KillMode
    signals a unit's every process), with a 1 s bound, while the worker runs a long job: serve
    exits 0 soon after, its worker handed the job back (serve's own SIGTERM, the worker's
    second, does not cut that short), and a worker started afterwards finishes it at once."""
    from tests.acceptance.test_failures import _children

    engine_api.script(["sleep:60", "ok"])
    g = install(GENHOOK_SHUTDOWN_SECONDS="1s")
    server = g.serve(workers=1)
    job_id = g.trigger("remote-image", ITEM).json()["job_id"]
    running_on(g, job_id, 1, engine_api, sent=1)
    (worker,) = _children(server.pid)
    os.kill(worker, signal.SIGTERM)
    took = stop_within(server, 20, g)
    assert "handed back 1 running job" in g.logs()
    assert took < 12, f"serve took {took:.1f}s to stop with a 1 s bound"
    restarted = g.serve(workers=1)
    done = g.wait_status(job_id, {"succeeded", "failed"}, timeout=40)
    assert done["status"] == "succeeded", done
    assert [a["outcome"] for a in done["attempts"]] == ["handed_back", "succeeded"]
    stop_within(restarted, 40, g)


class SlowReceiver:
    """A callback receiver whose first request gets no answer for ``hold`` seconds; later ones
    get 200 at once. Records each request's headers and body."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    first = len(receiver.calls) == 1
                if first:
                    receiver.release.wait(receiver.hold)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_sender_hands_back_a_callback_in_flight(
    install: Callable[..., Genhook], engine_api: FakeOpenAI
) -> None:
    """The receiver holds the first POST; the sender, SIGTERMed with a 1 s bound, exits 0
    within it and hands the delivery back; a second sender delivers it at once, with the same
    webhook-id and a valid signature."""
    engine_api.script(["ok"])
    slow = SlowReceiver(hold=60)
    try:
        g = install(GENHOOK_SHUTDOWN_SECONDS="1s", GENHOOK_DELIVERY_TIMEOUT="90s")
        api = g.serve(workers=0)
        job_id = g.trigger("remote-image", {**ITEM, "callback_url": slow.url}).json()["job_id"]
        api.send_signal(signal.SIGSTOP)  # its own outbox sends nothing from now on
        try:
            start(g, "worker", "worker")
            sender = start(g, "sender-1", "sender", "--health-port", "0")
            wait_for(lambda: len(slow.calls) == 1, 60, "the held POST", every=0.1)
            took = stop_within(sender, 10, g)
            assert took < 6
            assert "handed back 1 deliveries" in (g.tmp / "sender-1.log").read_text()
            handed_at = time.monotonic()
            start(g, "sender-2", "sender")
            wait_for(lambda: len(slow.calls) == 2, 20, "the second sender's POST", every=0.1)
            assert time.monotonic() - handed_at < 15  # not the 30 s delivery lease
        finally:
            api.send_signal(signal.SIGCONT)
        (first_headers, first_body), (headers, body) = slow.calls
        assert headers["webhook-id"] == first_headers["webhook-id"]
        payload = verify(g.secret, _received(headers, body))
        assert payload["job_id"] == job_id and payload["status"] == "success"
        assert json.loads(first_body)["job_id"] == job_id
    finally:
        slow.close()


def _received(headers: dict[str, str], body: bytes) -> Any:
    from tests.acceptance.harness import Received

    return Received(headers, body, time.time())


# -- the store's hand-back, on both databases (the `store` fixture) --------------------------


def _queued(store: Any, name: str = "shop") -> tuple[str, str]:
    service_id = store.create_service(name)["service_id"]
    job, _ = store.submit(
        service_id=service_id,
        workflow_id="wf",
        workflow_version=1,
        trigger={"item": "A"},
        external_id="A",
        callback_url=None,
    )
    return service_id, str(job.id)


def _waiting(store: Any, service_id: str) -> int:
    with store._read() as conn:
        return int(
            conn.execute(
                sa.text("SELECT waiting FROM services WHERE id = :id"), {"id": service_id}
            ).scalar_one()
        )


def test_hand_back_requeues_the_job_at_once_and_spares_the_attempt(store: Any) -> None:
    service_id, job_id = _queued(store)
    claimed = store.claim("w1", 60.0)
    assert claimed is not None and claimed.id == job_id
    assert _waiting(store, service_id) == 0
    assert store.hand_back("w2", [job_id]) == []  # not w2's: left as it is
    assert store.job(job_id).status == "running"
    assert store.hand_back("w1", [job_id]) == [job_id]
    job = store.job(job_id)
    assert (job.status, job.attempts) == ("queued", 1)
    assert _waiting(store, service_id) == 1
    (attempt,) = store.attempts(job_id)
    assert attempt.outcome == "handed_back" and attempt.error_code is None
    assert attempt.ended_at is not None
    assert any(e.detail == {"handed_back": True} for e in store.events(job_id))
    again = store.claim("w3", 60.0)  # at once: no lease to wait out
    assert again is not None and again.id == job_id
    assert (again.attempts, again.spared_attempts, again.counted_attempts) == (2, 1, 1)
    assert store.hand_back("w1", [job_id]) == []  # w1's lease is gone for good


def test_hand_back_keeps_a_cancel_asked_meanwhile(store: Any) -> None:
    _, job_id = _queued(store)
    assert store.claim("w1", 60.0) is not None
    assert store.cancel(job_id, lambda job: {"status": "failed"}) == "running"
    assert store.hand_back("w1", [job_id]) == [job_id]
    job = store.job(job_id)
    assert job.status == "queued" and job.cancel_requested
    assert store.claim("w2", 60.0) is not None
    assert store.cancel_requested(job_id)  # the next worker's first check ends it cancelled
