"""Acceptance: a multi-host rehearsal. The API (`genhook serve --workers 0`), two workers
(`genhook worker`) and a sender (`genhook sender`) run as separate hosts, each in a network
namespace of its own (tests/hosts.py), sharing one PostgreSQL (through a relay on the bridge)
and one S3 server (moto, on the bridge); the callback receiver listens on the bridge. Two waves
of tiny jobs (60), while one
worker is killed outright, the other frozen past its lease and resumed, and the sender killed
mid-delivery and restarted: every job completes exactly once, one answered callback per
``webhook-id``, every signature verified with ``standardwebhooks``, every asset fetched and
decoded, nothing lost, nothing left staged in the bucket. The run prints its timeline.

Where the machine makes no namespaces (not root, no ``ip``), the same hosts run as separate
processes on loopback, and the test prints so."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from tests.acceptance.harness import GENHOOK, Genhook, free_port, verify, wait_for
from tests.databases import database_url
from tests.hosts import Forwarder, Network, describe, hosts_network
from tests.s3server import S3Server, s3_server

WAVE = 30
"""Jobs per wave (two waves: 60 jobs)."""
LEASE = 4.0
"""GENHOOK_LEASE_SECONDS of the rehearsal: short, so a frozen worker is past it quickly."""
HOSTS = ("api", "worker-a", "worker-b", "sender")
PREFIX = "rehearsal"
IDLE_IN_TRANSACTION_MS = 10_000
"""The hosts' ``idle_in_transaction_session_timeout``: SIGSTOP may land between two statements
of a transaction (a lease renewal's UPDATE and its COMMIT), whose row locks then hide the frozen
worker's jobs from every claim (``SKIP LOCKED``) until the server ends that session."""


@dataclass
class Call:
    """One callback request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    peer: str
    at: float
    answered: bool = False  # a 200 was written back
    aborted: bool = False  # the client went away before an answer (a killed sender)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class GatedReceiver:
    """A callback receiver on ``host``; while the gate is closed it holds every request
    unanswered, and a request whose client goes away meanwhile is recorded as aborted, not
    answered (a Standard Webhooks sender must send it again, with the same ``webhook-id``)."""

    host: str
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def start(self) -> GatedReceiver:
        receiver = self
        self.gate.set()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                call = Call(
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.client_address[0],
                    time.time(),
                )
                with receiver.lock:
                    receiver.calls.append(call)
                while not receiver.gate.wait(0.05):
                    if _peer_gone(self.connection):
                        break
                if _peer_gone(self.connection):
                    call.aborted = True
                    self.close_connection = True
                    return
                try:
                    self.send_response(200)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    self.wfile.flush()
                except OSError:
                    call.aborted = True
                    self.close_connection = True
                    return
                call.answered = True

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}/hooks/genhook"

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def answered(self) -> list[Call]:
        return [c for c in self.snapshot() if c.answered]

    def held(self) -> list[Call]:
        return [c for c in self.snapshot() if not (c.answered or c.aborted)]

    def stop(self) -> None:
        self.gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _peer_gone(sock: socket.socket) -> bool:
    """True when the client closed its end (HTTP/1.1 clients send nothing more before the
    answer, so a readable socket here means EOF or a reset)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def network() -> Iterator[Network]:
    with hosts_network() as net:
        for name in HOSTS:
            net.host(name)
        yield net


@dataclass
class Rehearsal:
    """The install, its hosts, and the processes started on them."""

    genhook: Genhook
    net: Network
    envs: dict[str, dict[str, str]]
    s3: S3Server
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    def start(self, host: str, *args: str) -> subprocess.Popen[bytes]:
        self.starts[host] += 1
        log = (self.genhook.tmp / f"{host}-{self.starts[host]}.log").open("wb")
        self.genhook.logfiles.append(log)
        proc = self.net.host(host).popen([GENHOOK, *args], self.envs[host], log)
        self.genhook.procs.append(proc)
        self.procs[host] = proc
        return proc

    def kill(self, host: str) -> None:
        proc = self.procs[host]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def owner(self, host: str) -> str:
        """The LIKE pattern of lease owners of the process now running on ``host``."""
        return f"%:{self.procs[host].pid}:%"

    def open_attempts(self, host: str) -> list[dict[str, Any]]:
        return self.genhook.rows(
            "SELECT job_id, number, worker FROM job_attempts "
            "WHERE ended_at IS NULL AND worker LIKE :owner",
            owner=self.owner(host),
        )


def _listening(genhook: Genhook) -> set[str]:
    rows = genhook.rows(
        "SELECT application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
    )
    return {r["application_name"] for r in rows}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _on_the_bridge(net: Network, pg_url: str, stack: ExitStack) -> sa.URL:
    """The URL the hosts use for the database at ``pg_url``: the machine's PostgreSQL listens
    on loopback only, so a relay in the root namespace puts it on the bridge."""
    url = sa.make_url(pg_url)
    if not net.isolated:
        return url
    relay = Forwarder(net.gateway, (url.host or "127.0.0.1", url.port or 5432))
    stack.callback(relay.close)
    return url.set(host=net.gateway, port=relay.port)


def test_hosts_starting_at_once_on_a_new_database_all_come_up(
    tmp_path: Path, network: Network
) -> None:
    """A new deployment: four workers on four hosts start at the same moment against an empty
    PostgreSQL database. One creates the schema, the others wait for it, and every one answers
    /readyz on its health port, from the bridge. (Each used to race the migrations, and all but
    one died on the tables another had just created.)"""
    net = network
    with ExitStack() as stack:
        url = _on_the_bridge(net, stack.enter_context(database_url("postgresql", tmp_path)), stack)
        procs: list[tuple[str, subprocess.Popen[bytes]]] = []

        @stack.callback
        def stop() -> None:
            for _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)

        ports = {name: 9101 if net.isolated else free_port() for name in HOSTS}
        for name in HOSTS:
            host = net.host(name)
            data = tmp_path / name
            data.mkdir()
            env = {
                **os.environ,
                "GENHOOK_DATA_DIR": str(data),
                "GENHOOK_DATABASE_URL": url.render_as_string(hide_password=False),
            }
            log = stack.enter_context((tmp_path / f"{name}.log").open("wb"))
            argv = [GENHOOK, "worker", "--health-host", host.address]
            procs.append((name, host.popen([*argv, "--health-port", str(ports[name])], env, log)))

        def ready(name: str) -> bool:
            host = net.host(name)
            return _healthy(f"http://{host.address}:{ports[name]}/readyz")

        def all_ready() -> bool:
            exited = [(n, p.returncode) for n, p in procs if p.poll() is not None]
            logs = {
                n: (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:] for n, _ in exited
            }
            assert not exited, (exited, logs)
            return all(ready(name) for name in HOSTS)

        wait_for(all_ready, 90, "every host's worker to answer /readyz", every=0.2)


def test_four_hosts_survive_kills_freezes_and_restarts(
    tmp_path: Path, network: Network, capsys: pytest.CaptureFixture[str]
) -> None:
    net = network
    with capsys.disabled():
        print(f"\nmulti-host rehearsal: {describe(net)}")
    with ExitStack() as stack:
        pg_url = stack.enter_context(database_url("postgresql", tmp_path))
        url = _on_the_bridge(net, pg_url, stack)
        # the object store on the bridge too (behind the gateway that checks presigned URLs)
        s3 = stack.enter_context(s3_server(host=net.gateway, gateway=True))
        receiver = GatedReceiver(net.gateway).start()
        stack.callback(receiver.stop)
        api = net.host("api")
        api_port = 8080 if net.isolated else free_port()
        public = f"http://{api.address}:{api_port}"
        genhook = Genhook(
            tmp_path / "g",
            GENHOOK_DATABASE_URL=pg_url,
            **s3.env(PREFIX),
            GENHOOK_PUBLIC_URL=public,
            GENHOOK_LEASE_SECONDS=str(LEASE),
            GENHOOK_HEARTBEAT_SECONDS="0.5",
            GENHOOK_POLL_SECONDS="0.5",
            GENHOOK_DELIVERY_PER_ENDPOINT="64",
            GENHOOK_DELIVERY_PER_SERVICE="64",
        )
        stack.callback(genhook.close)
        # as docs/deploy.md advises: a session left idle inside a transaction (a process
        # frozen between two statements of one) is ended by the server, so the row locks it
        # holds do not keep its jobs from being taken over
        idle = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
        envs = {
            name: {
                **genhook.env,
                "GENHOOK_DATABASE_URL": url.update_query_dict(
                    {"application_name": f"genhook-{name}", "options": idle}
                ).render_as_string(hide_password=False),
            }
            for name in HOSTS
        }
        run = Rehearsal(genhook, net, envs, s3)

        @stack.callback
        def resume() -> None:  # a frozen process cannot stop on SIGTERM (runs before close)
            for proc in genhook.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)

        try:
            _rehearse(run, receiver, public, api_port)
        except BaseException:
            with capsys.disabled():
                print(genhook.logs()[-20000:])
            raise


def _rehearse(run: Rehearsal, receiver: GatedReceiver, public: str, api_port: int) -> None:
    genhook, net = run.genhook, run.net
    began = time.monotonic()
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - began:5.1f}s {what}")

    bind = "0.0.0.0" if net.isolated else "127.0.0.1"
    run.start("api", "serve", "--host", bind, "--port", str(api_port), "--workers", "0")
    run.start("worker-a", "worker", "--concurrency", "2")
    run.start("worker-b", "worker", "--concurrency", "2")
    run.start("sender", "sender", "--concurrency", "8")
    wait_for(lambda: _healthy(f"{public}/healthz"), 60, "the API host to answer", every=0.1)
    every = {f"genhook-{h}" for h in HOSTS}
    wait_for(lambda: _listening(genhook) >= every, 60, "every host to LISTEN", every=0.1)
    mark("4 hosts up, each listening on the database")

    client = httpx.Client(
        base_url=public, headers={"Authorization": f"Bearer {genhook.key}"}, timeout=30
    )
    submitted: list[str] = []

    def trigger(n: int) -> str:
        body = {"item_id": f"MH-{n:03d}", "callback_url": receiver.url}
        answer = client.post("/v1/workflows/tiny/runs", json=body)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["job_id"])

    def wave(first: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            submitted.extend(pool.map(trigger, range(first, first + WAVE)))
        mark(f"wave of {WAVE} triggers accepted")

    try:
        wave(0)

        # worker-a dies outright mid-job; its host starts a new worker (as systemd would)
        killed = wait_for(lambda: run.open_attempts("worker-a"), 30, "worker-a to run a job")
        run.kill("worker-a")
        killed = run.open_attempts("worker-a") or killed
        mark(f"worker-a SIGKILLed holding {len(killed)} job(s)")
        run.start("worker-a", "worker", "--concurrency", "2")

        # worker-b frozen while it runs jobs, until other workers have taken them over
        frozen: list[dict[str, Any]] = []
        while not frozen:
            wait_for(lambda: run.open_attempts("worker-b"), 30, "worker-b to run a job")
            run.procs["worker-b"].send_signal(signal.SIGSTOP)
            time.sleep(0.3)  # a statement it had sent has committed by now
            frozen = run.open_attempts("worker-b")
            if not frozen:
                run.procs["worker-b"].send_signal(signal.SIGCONT)
        mark(f"worker-b SIGSTOPped holding {len(frozen)} job(s)")

        def taken_over() -> bool:
            rows = genhook.rows(
                "SELECT a.outcome, b.worker AS next_worker FROM job_attempts a "
                "LEFT JOIN job_attempts b ON b.job_id = a.job_id AND b.number = a.number + 1 "
                "WHERE a.worker = :worker AND a.job_id = ANY(:ids)",
                worker=frozen[0]["worker"],
                ids=list(r["job_id"] for r in frozen),
            )
            return len(rows) == len(frozen) and all(
                r["outcome"] == "lost" and r["next_worker"] for r in rows
            )

        try:
            wait_for(taken_over, LEASE + 30, "the frozen worker's jobs to be taken over", every=0.1)
        except AssertionError as exc:
            state = _db_state(genhook, [r["job_id"] for r in frozen])
            raise AssertionError(f"{exc}\n{state}") from None
        mark("worker-b's jobs taken over by another worker")
        run.procs["worker-b"].send_signal(signal.SIGCONT)
        mark("worker-b SIGCONTinued (past its lease)")

        # the sender killed while requests of its own are in flight (held at the receiver)
        receiver.gate.clear()
        wave(WAVE)
        sender_addr = net.host("sender").address

        def sender_in_flight() -> bool:
            held = receiver.held()
            return any(c.peer == sender_addr for c in held) if net.isolated else bool(held)

        wait_for(sender_in_flight, 30, "the sender to have a callback in flight")

        def answers_recorded() -> bool:
            ids = sorted({c.webhook_id for c in receiver.answered()})
            if not ids:
                return True
            rows = genhook.rows(
                "SELECT count(*) AS n FROM deliveries "
                "WHERE id = ANY(:ids) AND status = 'delivered'",
                ids=ids,
            )
            return int(rows[0]["n"]) == len(ids)

        wait_for(answers_recorded, 30, "every answered callback to be recorded")
        in_flight = [c for c in receiver.held() if c.peer == sender_addr or not net.isolated]
        run.kill("sender")
        mark(f"sender SIGKILLed with {len(in_flight)} callback(s) in flight")
        run.start("sender", "sender", "--concurrency", "8")
        time.sleep(0.5)  # the killed sender's connections are closed: the receiver sees it
        receiver.gate.set()
        mark("receiver answers again")

        def everything_answered() -> bool:
            return {p["job_id"] for p in (c_json(c) for c in receiver.answered())} >= set(submitted)

        wait_for(everything_answered, 90, "a callback for every job", every=0.2)
        mark(f"all {len(submitted)} callbacks answered")
        time.sleep(1.5)  # a duplicate would come now
        _check(run, receiver, submitted, killed, frozen, sender_addr)
        mark("checked")
        (spent,) = genhook.rows(
            "SELECT max(j.finished_at) - min(j.created_at) AS span, "
            "avg(j.processing_seconds) AS work, max(d.delivered_at) - max(j.finished_at) AS tail "
            "FROM jobs j JOIN deliveries d ON d.job_id = j.id"
        )
        mark(
            f"jobs: {spent['span']:.1f}s first accepted to last finished, "
            f"{spent['work']:.2f}s of work each; last callback {spent['tail']:.1f}s after"
        )
        # a store error that genhook recovered from (a frozen worker's session ended by the
        # server, say) is not a wrong result, but worth seeing; a deadlock is a bug (admission
        # and a job's end used to lock the service row and the hour's roll-up in two orders)
        logs = genhook.logs()
        mark(f"store errors the hosts logged and recovered from: {logs.count('store unavailable')}")
        assert "DeadlockDetected" not in logs, "a deadlock between genhook's own transactions"
    finally:
        client.close()
        print("\n".join(timeline))


def _db_state(genhook: Genhook, job_ids: list[str]) -> str:
    """What the database's sessions and the jobs ``job_ids`` look like (a failure's context)."""
    sessions = genhook.rows(
        "SELECT application_name, state, now() - xact_start AS in_xact, left(query, 120) AS q "
        "FROM pg_stat_activity WHERE datname = current_database() ORDER BY application_name"
    )
    jobs = genhook.rows(
        "SELECT id, status, lease_owner, lease_expires, "
        "extract(epoch FROM now()) - lease_expires AS expired_for FROM jobs WHERE id = ANY(:ids)",
        ids=job_ids,
    )
    attempts = genhook.rows(
        "SELECT job_id, number, worker, outcome FROM job_attempts WHERE job_id = ANY(:ids)",
        ids=job_ids,
    )
    return "\n".join(str(r) for r in [*sessions, *jobs, *attempts])


def c_json(call: Call) -> Any:
    return json.loads(call.body)


def _check(
    run: Rehearsal,
    receiver: GatedReceiver,
    submitted: list[str],
    killed: list[dict[str, Any]],
    frozen: list[dict[str, Any]],
    sender_addr: str,
) -> None:
    genhook, net = run.genhook, run.net
    assert len(set(submitted)) == 2 * WAVE
    calls = receiver.snapshot()
    answered = [c for c in calls if c.answered]

    # the receiver: one answered callback per webhook-id, one per job, every one signed
    per_id = Counter(c.webhook_id for c in answered)
    assert [i for i, n in per_id.items() if n > 1] == [], "duplicate callbacks"
    payloads = [verify(genhook.secret, c) for c in answered]
    per_job = Counter(p["job_id"] for p in payloads)
    assert set(per_job) == set(submitted)
    assert all(n == 1 for n in per_job.values()), per_job
    assert {p["status"] for p in payloads} == {"success"}
    aborted = [c for c in calls if c.aborted]
    if net.isolated:
        assert any(c.peer == sender_addr for c in aborted), "the sender was killed mid-request"
        # the sender restarted on its host (same host name) ends the dead one's leases at once,
        # rather than after the 30 s delivery lease
        restarted = (genhook.tmp / "sender-2.log").read_text(errors="replace")
        assert "deliveries whose sender died" in restarted, restarted
    assert {c.webhook_id for c in aborted} <= set(per_id), "an aborted callback was not resent"
    for call in aborted:
        assert verify(genhook.secret, call)["job_id"] in per_job

    # the database: each job succeeded once, by one attempt; an attempt lost by its worker
    # was closed by the claim that took the job over, and nobody wrote it after
    jobs = genhook.rows(
        "SELECT id, status, lease_owner, finished_at FROM jobs WHERE id = ANY(:ids)",
        ids=list(submitted),
    )
    assert len(jobs) == 2 * WAVE
    assert {(j["status"], j["lease_owner"]) for j in jobs} == {("succeeded", None)}
    attempts = genhook.rows(
        "SELECT job_id, number, worker, outcome, started_at, ended_at FROM job_attempts "
        "WHERE job_id = ANY(:ids) ORDER BY job_id, number",
        ids=list(submitted),
    )
    by_job: dict[str, list[dict[str, Any]]] = {}
    for a in attempts:
        by_job.setdefault(a["job_id"], []).append(a)
    for job_id, tries in by_job.items():
        assert [a["outcome"] for a in tries] == ["lost"] * (len(tries) - 1) + ["succeeded"], tries
        for lost, after in itertools.pairwise(tries):
            assert lost["ended_at"] == after["started_at"], (job_id, tries)
    for held in [*killed, *frozen]:
        tries = by_job[held["job_id"]]
        mine = [a for a in tries if a["number"] == held["number"]]
        assert [a["outcome"] for a in mine] == ["lost"], tries
        # it succeeded under a later claim (one of another worker, or a new one of its own)
        assert tries[-1]["number"] > held["number"], tries
    ends = genhook.rows(
        "SELECT job_id, count(*) AS n FROM job_events "
        "WHERE status = 'succeeded' AND job_id = ANY(:ids) GROUP BY job_id",
        ids=list(submitted),
    )
    assert sorted(int(e["n"]) for e in ends) == [1] * (2 * WAVE)
    deliveries = genhook.rows(
        "SELECT id, job_id, status FROM deliveries WHERE job_id = ANY(:ids)", ids=list(submitted)
    )
    assert len(deliveries) == 2 * WAVE
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert {d["id"] for d in deliveries} == set(per_id)

    # the assets: uploaded by one host's worker to the object store, each presigned URL
    # fetched and decoded here; in the bucket exactly one published object per job, nothing
    # staged left behind (the killed and the frozen workers' attempts included)
    with httpx.Client(timeout=30) as http:
        for payload in payloads:
            (output,) = payload["outputs"]
            assert output["url_expires_at"], output
            got = http.get(output["asset_url"])
            assert got.status_code == 200, (output["asset_url"], got.status_code)
            assert hashlib.sha256(got.content).hexdigest() == output["sha256"]
            with Image.open(io.BytesIO(got.content)) as image:
                assert image.size == (64, 64) and image.format == "JPEG"
    bucket = f"/{run.s3.bucket}/"
    published = {urlsplit(p["outputs"][0]["asset_url"]).path.removeprefix(bucket) for p in payloads}
    assert all(key.startswith(f"{PREFIX}/job_") for key in published), sorted(published)[:3]
    wait_for(
        lambda: set(run.s3.keys(f"{PREFIX}/")) == published,
        30,
        f"the bucket to hold the published objects only: {sorted(run.s3.keys(PREFIX))[:8]}",
        every=0.5,
    )

    # the resumed worker lived on
    assert run.procs["worker-b"].poll() is None, "worker-b died after SIGCONT"
