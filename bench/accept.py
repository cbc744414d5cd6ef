"""Benchmark: triggers accepted per second by a real ``genhook serve`` process.

What one accepted trigger costs genhook: ``POST /v1/workflows/product-image/runs`` with a valid
product-image trigger (no callback_url), i.e. Bearer authentication, strict JSON parsing,
validation against the workflow's input schema and envelope, the flow-control admission, a
durable insert (SQLite in WAL mode, ``synchronous=FULL``; the 202 goes out only once the job's
transaction has committed) and the 202 answer.

* **genhook**: ``genhook serve --workers 0`` (no generation competes; with no callback_url the
  outbox stays idle) in a fresh ``GENHOOK_DATA_DIR``, after ``genhook services create bench``.
* **starlette** (the baseline the target is set against): the plainest fast app a competent
  engineer would write for the same work (:func:`serve_starlette`): bare Starlette, no
  middleware, on the same server stack (uvicorn, one process, uvloop and httptools, log level
  warning, no access log); it checks the bearer key, parses the JSON, and inserts one row into
  SQLite with the same durability (WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` and one commit
  per request) inline on the event loop, then answers 202 with a small JSON.
* **fastapi** (a second line, ``--no-fastapi`` leaves it out): the same work in FastAPI with the
  insert in the thread pool behind a lock, the shape of the old baseline.

Every server runs as a subprocess at the same time (the idle ones use no CPU). The load
generator is an aiohttp client in this process: CONCURRENCY POSTs in flight over keep-alive
connections. One warm-up batch per server, then ROUNDS rounds of COUNT requests each,
interleaved (the order alternates each round); medians. Every answer must be 202, and each
jobs table must hold one row per 202 at the end. Also reported: latency p50/p99 and each
server's CPU time per request (from /proc, over each round). Exits 1 when genhook / starlette
< TARGET.

``--limited``: another server, **genhook-limited**, whose service has a rate limit, a daily
budget and a queue limit (none of which the load reaches) and whose product-image template
declares a dedup key (every trigger distinct): every flow-control step of the accept path runs.
It is held to the same target against the starlette baseline.

Run: ``make bench`` or ``.venv/bin/python bench/accept.py [--rounds N] [--count N] [--limited]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from _common import (
    HOST,
    Children,
    LoadResult,
    bench_env,
    client_session,
    cpu_seconds,
    create_service,
    free_port,
    machine_line,
    percentile,
    post_all,
    run_async,
    temp_root,
    trigger_body,
)
from genhook.paths import shipped_dir

WORKFLOW = "product-image"
CONCURRENCY = 32
WARMUP = 500
COUNT = 3000
ROUNDS = 4
ROUND_SECONDS = 60.0  # a round stops sending after this long, whatever its count
TARGET = 0.8
LIMITED_FLAGS = ("--rate-limit", "100000/h", "--daily-budget", "1000000", "--queue-limit", "100000")


# the baseline server -----------------------------------------------------------------------


BASELINE_KEY = "bench-baseline-key"


def _baseline_db(db_path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL,"
        " status TEXT NOT NULL, input JSON NOT NULL, created_at REAL NOT NULL)"
    )
    return conn


def _baseline_insert(conn: sqlite3.Connection, workflow_id: str, body: Any) -> tuple[str, float]:
    """One durable row: BEGIN IMMEDIATE, INSERT, COMMIT (an fsync of the WAL)."""
    job_id = "job_" + uuid.uuid4().hex
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO jobs (id, workflow_id, status, input, created_at)"
            " VALUES (?, ?, 'queued', ?, ?)",
            (job_id, workflow_id, json.dumps(body), now),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return job_id, now


def serve_starlette(port: int, db_path: str) -> None:
    """The baseline: the plainest fast app a competent engineer would write for the same work.

    A bare Starlette app (no FastAPI, no middleware) on the same server stack as genhook: it
    checks the bearer key, parses the JSON body, inserts it as one row into SQLite with the same
    durability (WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` and one commit per request)
    inline on the event loop (no thread hop, no lock) and answers 202 with a small JSON."""
    conn = _baseline_db(db_path)
    expected = f"Bearer {BASELINE_KEY}"

    async def trigger(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error_code": "unauthorized"}, status_code=401)
        workflow_id = request.path_params["workflow_id"]
        body = json.loads(await request.body())
        job_id, now = _baseline_insert(conn, workflow_id, body)
        return JSONResponse(
            {"job_id": job_id, "status": "queued", "workflow_id": workflow_id, "created_at": now},
            status_code=202,
        )

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v1/workflows/{workflow_id}/runs", trigger, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )
    # the same settings as `genhook serve` (genhook/cli)
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def serve_fastapi(port: int, db_path: str) -> None:
    """A second line: the same work as a FastAPI app whose insert runs in the thread pool behind
    a lock (what the old baseline was: it pays a thread hop and FastAPI's routing)."""
    conn = _baseline_db(db_path)
    lock = threading.Lock()

    def insert(workflow_id: str, body: Any) -> tuple[str, float]:
        with lock:
            return _baseline_insert(conn, workflow_id, body)

    app = FastAPI()

    @app.post("/v1/workflows/{workflow_id}/runs", status_code=202)
    async def trigger(workflow_id: str, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        job_id, now = await run_in_threadpool(insert, workflow_id, body)
        return JSONResponse(
            {"job_id": job_id, "status": "queued", "workflow_id": workflow_id, "created_at": now},
            status_code=202,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


# the bench ---------------------------------------------------------------------------------


class Target:
    """One server under load: its trigger URL, headers and the bodies it has been sent."""

    def __init__(self, name: str, pid: int, port: int, api_key: str | None) -> None:
        self.name = name
        self.pid = pid
        self.url = f"http://{HOST}:{port}/v1/workflows/{WORKFLOW}/runs"
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.sent = 0
        self.accepted = 0
        self.bad: dict[int, Any] = {}
        self.rates: list[float] = []
        self.p50_ms: list[float] = []
        self.p99_ms: list[float] = []
        self.cpu_ms: list[float] = []  # server CPU time per request

    def bodies(self, count: int) -> list[bytes]:
        start = self.sent
        self.sent += count
        return [trigger_body(i) for i in range(start, start + count)]

    def record(self, result: LoadResult, timed: bool, cpu: float = 0.0) -> None:
        for answer in result.answers:
            if answer.status == 202:
                self.accepted += 1
            else:
                self.bad.setdefault(answer.status, answer.body)
        if timed:
            seconds = [a.seconds * 1000 for a in result.answers]
            self.rates.append(result.rate)
            self.p50_ms.append(percentile(seconds, 50))
            self.p99_ms.append(percentile(seconds, 99))
            self.cpu_ms.append(cpu * 1000 / max(1, len(result.answers)))


def count_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--count", type=int, default=COUNT, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument(
        "--limited", action="store_true", help="also a server whose service has flow control"
    )
    parser.add_argument(
        "--no-fastapi", action="store_true", help="leave out the FastAPI second baseline"
    )
    parser.add_argument(
        "--serve-baseline", nargs=3, metavar=("KIND", "PORT", "DB"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_baseline:
        kind, port, db = args.serve_baseline
        (serve_starlette if kind == "starlette" else serve_fastapi)(int(port), db)
        return 0

    with temp_root("genhook-bench-accept-") as tmp, Children() as children:
        root = Path(tmp)
        data_dir = root / "genhook"
        # every round's jobs stay queued (--workers 0): past the default queue limit (10,000)
        # the unlimited service would answer 429 queue_full
        env = bench_env(GENHOOK_DATA_DIR=str(data_dir), GENHOOK_QUEUE_LIMIT="1000000")
        service = create_service(env)
        genhook, g_port = children.serve("genhook serve", env, root / "genhook.log")
        targets = [Target("genhook", genhook.pid, g_port, service["api_key"])]
        for kind in ("starlette",) if args.no_fastapi else ("starlette", "fastapi"):
            port = free_port()
            child = children.start(
                f"baseline server ({kind})",
                [sys.executable, __file__, "--serve-baseline", kind, str(port), str(root / kind)],
                bench_env(),
                root / f"{kind}.log",
            )
            child.wait_http(f"http://{HOST}:{port}/healthz")
            targets.append(Target(kind, child.pid, port, BASELINE_KEY))
        if args.limited:
            flows = root / "flows"
            shutil.copytree(shipped_dir("workflows"), flows)
            template = flows / f"{WORKFLOW}.yaml"
            text = template.read_text(encoding="utf-8")
            template.write_text(
                text.replace("\ninput:", "\ndedup: {key: [product_id], window: 1h}\ninput:", 1),
                encoding="utf-8",
            )
            l_env = bench_env(
                GENHOOK_DATA_DIR=str(root / "limited"), GENHOOK_WORKFLOWS_DIR=str(flows)
            )
            l_service = create_service(l_env, flags=LIMITED_FLAGS)
            limited, l_port = children.serve("genhook serve (limited)", l_env, root / "limited.log")
            targets.append(Target("genhook-limited", limited.pid, l_port, l_service["api_key"]))

        async def drive() -> None:
            async with client_session(args.concurrency) as session:
                for target in targets:  # warm-up: connections, thread pools, caches
                    result = await post_all(
                        session,
                        target.url,
                        target.bodies(WARMUP),
                        headers=target.headers,
                        concurrency=args.concurrency,
                    )
                    target.record(result, timed=False)
                for round_no in range(args.rounds):
                    order = targets if round_no % 2 == 0 else targets[::-1]
                    for target in order:
                        bodies = target.bodies(args.count)
                        cpu = cpu_seconds(target.pid)
                        result = await post_all(
                            session,
                            target.url,
                            bodies,
                            headers=target.headers,
                            concurrency=args.concurrency,
                            deadline=time.perf_counter() + ROUND_SECONDS,
                        )
                        target.sent -= len(bodies) - len(result.answers)
                        cpu = cpu_seconds(target.pid) - cpu
                        target.record(result, timed=True, cpu=cpu)

        run_async(drive)
        rows = {"genhook": count_rows(data_dir / "genhook.db")}
        for t in targets:
            if t.name in ("starlette", "fastapi"):
                rows[t.name] = count_rows(root / t.name)
        if args.limited:
            rows["genhook-limited"] = count_rows(root / "limited" / "genhook.db")

    by_name = {t.name: t for t in targets}
    g, b = by_name["genhook"], by_name["starlette"]
    print(
        f"accept: POST /v1/workflows/{WORKFLOW}/runs (valid trigger, no callback_url),"
        f" {args.concurrency} in flight over keep-alive, {WARMUP} warm-up then"
        f" {args.rounds} interleaved rounds of {args.count}; medians"
    )
    print(machine_line() + "; load generator in the same process, sharing the cores")
    print(
        f"{'server':<16}{'req/s':>9}{'min':>9}{'max':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/req':>12}"
    )
    for t in targets:
        print(
            f"{t.name:<16}{statistics.median(t.rates):>9.0f}{min(t.rates):>9.0f}"
            f"{max(t.rates):>9.0f}{statistics.median(t.p50_ms):>9.1f}"
            f"{statistics.median(t.p99_ms):>9.1f}{statistics.median(t.cpu_ms):>12.2f}"
        )
    print(
        "rounds req/s: "
        + "; ".join(f"{t.name} " + ", ".join(f"{r:.0f}" for r in t.rates) for t in targets)
    )
    ok = True
    for t in targets:
        count = rows[t.name]
        print(f"{t.name}: {t.accepted}/{t.sent} answered 202, {count} rows in its jobs table")
        if t.bad:
            print(f"FAIL: {t.name} answered {t.bad}")
            ok = False
        if t.accepted != t.sent or count != t.accepted:
            print(f"FAIL: {t.name}: {t.sent} sent, {t.accepted} accepted, {count} rows")
            ok = False
    ratio = statistics.median(g.rates) / statistics.median(b.rates)
    verdict = "ok" if ratio >= TARGET and ok else "FAIL"
    print(f"{verdict}: genhook / starlette baseline = {ratio:.2f}x (target >= {TARGET:.2f}x)")
    if "fastapi" in by_name:
        f = by_name["fastapi"]
        print(
            f"info: genhook / fastapi baseline = "
            f"{statistics.median(g.rates) / statistics.median(f.rates):.2f}x"
        )
    if args.limited:
        lim = by_name["genhook-limited"]
        limited_ratio = statistics.median(lim.rates) / statistics.median(b.rates)
        fine = limited_ratio >= TARGET
        print(
            f"{'ok' if fine else 'FAIL'}: genhook-limited / starlette baseline ="
            f" {limited_ratio:.2f}x (target >= {TARGET:.2f}x); genhook-limited / genhook ="
            f" {statistics.median(lim.rates) / statistics.median(g.rates):.2f}x"
        )
        verdict = verdict if fine else "FAIL"
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
