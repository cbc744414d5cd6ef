"""Benchmark: ``GET /v1/ops/summary`` and every dashboard page on a database of 100,000 jobs.

The database is filled directly (rows inserted in batches, as the store writes them), to look
like a week of real traffic: 5 services, 4 workflows, 100,000 jobs spread over 8 days (92%
succeeded, 4% failed, 1% cancelled, 3% still queued with a mix of holds, a few running), one
attempt per started job and a second for 6% of them, 2 to 3 job events each, a completion
payload of about 1.5 KB on every ended job, a delivery with that body for 80% of them (0.5%
failed), the credit ledger, two backend breakers, and the hourly roll-ups of exactly those jobs
(each job ends within the hour it was accepted in, so a scan and the roll-ups count the same).

* **genhook**: a real ``genhook serve --workers 0`` on that database, with ``GENHOOK_ADMIN_KEY``;
  each route is asked ROUNDS times over one keep-alive connection (``Authorization: Bearer``),
  after one warm-up; median, p95 and max. Also the store's own ``ops_summary`` in this process.
* **baseline**: the same per-service, per-workflow figures computed the plain way, by one
  ``GROUP BY`` over the jobs table for the window (status counts, processing seconds, credits,
  QC from each result's ``quality_warning``), in this process on the same database; the bench
  checks that its triggers, completed and failed equal the summary's.

Prints each route's times and the baseline / roll-up ratio; exits 1 when any route's median
is over TARGET_MS or the two ways disagree.

Run: ``.venv/bin/python bench/ops_summary.py [--jobs N] [--rounds N] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _common import (
    HOST,
    Children,
    bench_env,
    machine_line,
    percentile,
    temp_root,
)
from genhook.clock import ManualClock
from genhook.store.ops import Figures
from genhook.store.schema import (
    attempts,
    backend_state,
    credit_ledger,
    deliveries,
    events,
    job_rollups,
    jobs,
)
from genhook.store.store import Store

JOBS = 100_000
ROUNDS = 30
TARGET_MS = 300.0
ADMIN_KEY = "bench-operator-key"
SERVICES = ["shop", "cms", "crm", "marketplace", "newsletter"]
WORKFLOWS = ["product-image", "banner", "social-pack", "product-video"]
DAYS = 8
BATCH = 5_000
HOUR = 3600.0
WINDOWS = {"1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR}
FIGURES = [f.name for f in dataclasses.fields(Figures)]
ROUTES = [
    *(f"/v1/ops/summary?window={w}" for w in WINDOWS),
    *(f"/dashboard?window={w}" for w in WINDOWS),
    "/dashboard/held",
    "/dashboard/deliveries",
]


def payload(job_id: str, rng: random.Random, warning: bool) -> dict[str, Any]:
    """A completion payload of about 1.5 KB."""
    return {
        "schema_version": "1",
        "event": "job.completed",
        "job_id": job_id,
        "status": "success",
        "outputs": [
            {
                "asset_url": f"https://gen.example.com/assets/{job_id}/out-{i}.jpg",
                "asset_type": "image",
                "format": "jpeg",
                "width": 1080,
                "height": 1080,
                "bytes": rng.randint(90_000, 400_000),
                "sha256": f"{rng.getrandbits(256):064x}",
                "alt_text": "A washed linen shirt on a wooden hanger in soft morning light",
            }
            for i in range(3)
        ],
        "metadata": {"credit_cost": 1.0, "processing_time_seconds": 3.2, "attempts": 1},
        "quality_warning": {"blur": {"score": 41.0, "min": 60.0}} if warning else None,
        "error": None,
    }


def fill(store: Store, count: int, now: float, seed: int = 7) -> dict[str, Any]:
    """Insert ``count`` jobs and everything that goes with them; their roll-ups too."""
    rng = random.Random(seed)
    service_ids = [
        store.create_service(name, rate_limit="5000/h")["service_id"] for name in SERVICES
    ]
    start = now - DAYS * 24 * HOUR
    rollups: dict[tuple[str, str, float], dict[str, float]] = {}
    spent_today: dict[str, float] = {}
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    job_rows: list[dict[str, Any]] = []
    attempt_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    delivery_rows: list[dict[str, Any]] = []

    def flush(final: bool = False) -> None:
        if len(job_rows) < BATCH and not final:
            return
        with store.engine.begin() as conn:
            for table, rows in (
                (jobs, job_rows),
                (attempts, attempt_rows),
                (events, event_rows),
                (deliveries, delivery_rows),
            ):
                if rows:
                    conn.execute(table.insert(), rows)
                    rows.clear()

    for n in range(count):
        # more traffic lately, and by day rather than by night
        created = start + (DAYS * 24 * HOUR) * math.sqrt(rng.random())
        created = min(created, now - 1.0)
        hour = math.floor(created / HOUR) * HOUR
        sid = service_ids[min(len(service_ids) - 1, int(rng.expovariate(1.0)))]
        workflow = WORKFLOWS[rng.randrange(len(WORKFLOWS))]
        job_id = f"job_bench{n:010d}"
        draw = rng.random()
        recent = created > now - 2 * HOUR
        status = (
            "queued"
            if draw < 0.03 or (recent and draw < 0.2)
            else "running"
            if draw < 0.032
            else "cancelled"
            if draw < 0.042
            else "failed"
            if draw < 0.082
            else "succeeded"
        )
        ended = status in ("succeeded", "failed", "cancelled")
        tries = 2 if ended and rng.random() < 0.06 else 1
        seconds = rng.uniform(1.5, 9.0) * tries if ended else 0.0
        cost = round(rng.choice([0.0, 1.0, 4.0]) * tries, 2) if ended else 0.0
        finished = None
        if ended:  # within the hour it was accepted in, and not after now
            finished = min(
                hour + HOUR - 0.001, now - 0.001, created + seconds + rng.uniform(0.1, 30)
            )
            finished = max(created, finished)
        warning = status == "succeeded" and rng.random() < 0.07
        result = payload(job_id, rng, warning) if ended else None
        hold = None
        if status == "queued":
            hold = rng.choice([None, "rate_limit", "rate_limit", "budget", "backend_unavailable"])
        job_rows.append(
            {
                "id": job_id,
                "service_id": sid,
                "workflow_id": workflow,
                "workflow_version": 1,
                "status": status,
                "input": {
                    "product_id": f"SKU-{n:07d}",
                    "product_name": f"Washed Linen Shirt {n}",
                    "target_style": "lifestyle",
                    "target_platform": "instagram_feed",
                },
                "external_id": f"SKU-{n:07d}",
                "callback_url": "https://hooks.example.com/genhook",
                "created_at": created,
                "updated_at": finished or created,
                "run_after": created + (600.0 if hold else 0.0),
                "attempts": tries if status != "queued" else 0,
                "first_claimed_at": created + 0.05 if status != "queued" else None,
                "finished_at": finished,
                "lease_owner": "bench:1" if status == "running" else None,
                "lease_expires": now + 30 if status == "running" else None,
                "processing_seconds": seconds,
                "credit_cost": cost,
                "error_code": "backend_error" if status == "failed" else None,
                "result": result,
                "hold_reason": hold,
                "priority": 1,
            }
        )
        for number in range(1, (tries if status != "queued" else 0) + 1):
            attempt_rows.append(
                {
                    "job_id": job_id,
                    "number": number,
                    "worker": "bench:1",
                    "started_at": created + number,
                    "ended_at": finished,
                    "outcome": status
                    if number == tries and ended
                    else ("retrying" if ended else None),
                    "backend": "procedural",
                    "credit_cost": cost / tries,
                }
            )
        event_rows.append({"job_id": job_id, "at": created, "status": "queued", "detail": None})
        if status != "queued":
            event_rows.append(
                {"job_id": job_id, "at": created + 0.05, "status": "running", "detail": None}
            )
        if ended:
            event_rows.append({"job_id": job_id, "at": finished, "status": status, "detail": None})
        if ended and rng.random() < 0.8:
            gave_up = rng.random() < 0.005
            delivery_rows.append(
                {
                    "id": f"dlv_bench{n:010d}",
                    "job_id": job_id,
                    "service_id": sid,
                    "kind": "callback",
                    "endpoint": "https://hooks.example.com:443",
                    "url": "https://hooks.example.com/genhook",
                    "body": json.dumps(result).encode(),
                    "status": "failed" if gave_up else "delivered",
                    "attempts": 8 if gave_up else 1,
                    "created_at": finished,
                    "delivered_at": None if gave_up else (finished or created) + 0.2,
                    "last_status_code": 503 if gave_up else 200,
                    "last_error": "HTTP 503" if gave_up else None,
                }
            )
        figures = rollups.setdefault((sid, workflow, hour), {})
        figures["triggers"] = figures.get("triggers", 0) + 1
        if ended:
            name = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}[status]
            figures[name] = figures.get(name, 0) + 1
            figures["retries"] = figures.get("retries", 0) + tries - 1
            figures["generation_seconds"] = figures.get("generation_seconds", 0.0) + seconds
            figures["credits"] = figures.get("credits", 0.0) + cost
            if status == "succeeded":
                figures["qc_checked"] = figures.get("qc_checked", 0) + 1
                figures["qc_passed"] = figures.get("qc_passed", 0) + (not warning)
            if time.strftime("%Y-%m-%d", time.gmtime(finished)) == today:
                spent_today[sid] = spent_today.get(sid, 0.0) + cost
        flush()
    flush(final=True)
    with store.engine.begin() as conn:
        conn.execute(
            job_rollups.insert(),
            [
                {"service_id": s, "workflow_id": w, "bucket": b, **dict.fromkeys(FIGURES, 0), **f}
                for (s, w, b), f in rollups.items()
            ],
        )
        conn.execute(
            credit_ledger.insert(),
            [
                {"service_id": s, "day": today, "spent": v, "reserved": 0.0}
                for s, v in spent_today.items()
            ],
        )
        conn.execute(
            backend_state.insert(),
            [
                {
                    "backend": "procedural",
                    "state": "closed",
                    "failures": 0,
                    "opened_at": None,
                    "probe_at": None,
                    "last_error": None,
                    "updated_at": now,
                },
                {
                    "backend": "replicate",
                    "state": "open",
                    "failures": 5,
                    "opened_at": now - 120,
                    "probe_at": now + 30,
                    "last_error": "HTTP 503 from the engine",
                    "updated_at": now,
                },
            ],
        )
    return {"service_ids": service_ids}


def baseline(
    engine: sa.Engine, window: float, now: float
) -> tuple[float, dict[tuple[str, str], tuple[int, int, int]]]:
    """The figures by one GROUP BY over the jobs (the plain way); (seconds, counts by key)."""
    since = math.floor((now - window) / HOUR) * HOUR
    ended = "status IN ('succeeded', 'failed', 'cancelled')"
    if engine.dialect.name == "postgresql":
        qc = "(result->>'quality_warning') IS NULL"
    else:
        qc = "json_extract(result, '$.quality_warning') IS NULL"
    sql = sa.text(
        "SELECT service_id, workflow_id, count(*) AS triggers,"
        " sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS completed,"
        " sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,"
        " sum(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,"
        f" sum(CASE WHEN {ended} THEN processing_seconds ELSE 0 END) AS generation_seconds,"
        f" sum(CASE WHEN {ended} THEN credit_cost ELSE 0 END) AS credits,"
        f" sum(CASE WHEN status = 'succeeded' AND {qc} THEN 1 ELSE 0 END) AS qc_passed"
        " FROM jobs WHERE created_at >= :since GROUP BY service_id, workflow_id"
    )
    queue = sa.text(
        "SELECT service_id, status, count(*) FROM jobs WHERE status IN ('queued', 'retrying',"
        " 'running') GROUP BY service_id, status"
    )
    began = time.perf_counter()
    with engine.connect() as conn:
        rows = conn.execute(sql, {"since": since}).all()
        conn.execute(queue).all()
    took = time.perf_counter() - began
    return took, {(r.service_id, r.workflow_id): (r.triggers, r.completed, r.failed) for r in rows}


def timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, int]:
    began = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    answer = conn.getresponse()
    body = answer.read()
    return time.perf_counter() - began, answer.status, len(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    ok = True
    with temp_root("genhook-bench-ops-") as tmp, Children() as children:
        root = Path(tmp)
        url = args.database_url or f"sqlite:///{root / 'genhook.db'}"
        now = time.time()
        store = Store(url, ManualClock(now))  # the summary and the GROUP BY see the same hour
        store.migrate()
        began = time.perf_counter()
        fill(store, args.jobs, now)
        filled = time.perf_counter() - began
        size = ""
        if url.startswith("sqlite"):
            size = f", {(root / 'genhook.db').stat().st_size / 2**20:.0f} MiB"
        with store.engine.connect() as conn:
            counted = conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
            buckets = conn.execute(sa.select(sa.func.count()).select_from(job_rollups)).scalar_one()
        print(f"ops: {counted:,} jobs, {buckets:,} roll-up rows{size}; filled in {filled:.0f} s")
        print(machine_line())

        print(f"\n{'in process':<34}{'roll-ups ms':>12}{'GROUP BY ms':>13}{'ratio':>8}")
        for name, window in WINDOWS.items():
            store.ops_summary(name)
            baseline(store.engine, window, now)
            ours = [
                timeit(lambda n=name: store.ops_summary(n)) for _ in range(max(5, args.rounds // 3))
            ]
            theirs = []
            for _ in range(max(3, args.rounds // 10)):
                seconds, counts = baseline(store.engine, window, now)
                theirs.append(seconds)
            summary = store.ops_summary(name)
            mine = {
                (s.id, w.workflow_id): (w.figures.triggers, w.figures.completed, w.figures.failed)
                for s in summary.services
                for w in s.workflows
            }
            same = mine == counts
            ok = ok and same
            a, b = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
            print(
                f"{'ops_summary ' + name:<34}{a:>12.1f}{b:>13.1f}{b / a:>7.0f}x"
                f"{'' if same else '  FAIL: figures differ'}"
            )
        store.close()

        env = bench_env(
            GENHOOK_DATA_DIR=str(root),
            GENHOOK_DATABASE_URL=url,
            GENHOOK_ADMIN_KEY=ADMIN_KEY,
        )
        _server, port = children.serve("genhook", env, root / "serve.log")
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        print(f"\n{'GET (genhook serve)':<34}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'KiB':>7}")
        for path in ROUTES:
            timed_get(conn, path)
            samples = []
            for _ in range(args.rounds):
                seconds, status, size_bytes = timed_get(conn, path)
                if status != 200:
                    print(f"FAIL: {path} answered {status}")
                    ok = False
                samples.append(seconds * 1000)
            p50 = statistics.median(samples)
            verdict = "" if p50 <= TARGET_MS else f"  FAIL: over {TARGET_MS:.0f} ms"
            ok = ok and p50 <= TARGET_MS
            print(
                f"{path:<34}{p50:>9.1f}{percentile(samples, 95):>9.1f}{max(samples):>9.1f}"
                f"{size_bytes / 1024:>7.0f}{verdict}"
            )
        conn.close()
    print(
        f"{'ok' if ok else 'FAIL'}: every route's median under {TARGET_MS:.0f} ms"
        f" on {counted:,} jobs"
    )
    return 0 if ok else 1


def timeit(call: Any) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
