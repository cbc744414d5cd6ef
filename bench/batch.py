"""Benchmark: the accept time per item of a batch against the same items as single triggers.

One real ``genhook serve --workers 0`` (no generation competes; the service's queue limit is
raised past what the run accepts) on a fresh data dir (SQLite,
WAL, ``synchronous=FULL``) or, with ``--database-url``, on PostgreSQL; one service. Each round
sends COUNT distinct, valid product-image triggers four ways, in an order that alternates from
round to round, all in the same run against the same server:

* **single**: ``POST /v1/workflows/product-image/runs``, CONCURRENCY requests in flight (the
  trigger lane and its group commit: the fastest way single triggers go in);
* **batch-100**: ``POST /v1/workflows/product-image/batches`` of 100 items, 4 in flight;
* **batch-1000**: batches of 1,000 items, one at a time and 2 in flight.

Per item: the wall time of the whole mode divided by its items (what a caller waits per item),
and the server's CPU time per item (from /proc). Every answer must be 202, every batch entry a
job id, and the jobs table must hold one row per item at the end. Medians over ROUNDS. Exits 1
when a batch mode's wall time per item is above the single triggers'.

Run: ``.venv/bin/python bench/batch.py [--rounds N] [--count N] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _common import (
    HOST,
    Children,
    bench_env,
    client_session,
    cpu_seconds,
    create_service,
    machine_line,
    post_all,
    run_async,
    temp_root,
    trigger_body,
)

WORKFLOW = "product-image"
CONCURRENCY = 32
COUNT = 3000
ROUNDS = 3
MODES = {  # name: (items per request, requests in flight)
    "single": (1, CONCURRENCY),
    "batch-100": (100, 4),
    "batch-1000": (1000, 1),
    "batch-1000x2": (1000, 2),
}


def _bodies(mode: str, first: int, count: int) -> list[bytes]:
    size, _ = MODES[mode]
    if size == 1:
        return [trigger_body(first + i) for i in range(count)]
    bodies = []
    for start in range(0, count, size):
        items = [
            json.loads(trigger_body(first + start + i)) for i in range(min(size, count - start))
        ]
        bodies.append(json.dumps({"items": items}).encode())
    return bodies


def _check(mode: str, result: Any) -> int:
    """The items accepted (every answer a 202, every entry a job)."""
    if set(result.statuses) != {202}:
        bad = [a for a in result.answers if a.status != 202][:3]
        raise SystemExit(f"{mode}: not all 202: {dict(result.statuses)} {bad}")
    if MODES[mode][0] == 1:
        return len(result.answers)
    entries = [e for a in result.answers for e in a.body["items"]]
    if any("job_id" not in e for e in entries):
        raise SystemExit(
            f"{mode}: an item was refused: {[e for e in entries if 'job_id' not in e][:3]}"
        )
    return len(entries)


def _jobs(database_url: str | None, data_dir: Path) -> int:
    if database_url is None:
        with sqlite3.connect(data_dir / "genhook.db") as db:
            return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--count", type=int, default=COUNT, help="items per mode and round")
    parser.add_argument("--database-url", help="a PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    with temp_root("genhook-bench-batch-") as root, Children() as children:
        data = Path(root) / "var"
        env = bench_env(GENHOOK_DATA_DIR=str(data))
        if args.database_url:
            env["GENHOOK_DATABASE_URL"] = args.database_url
        # no worker runs: every accepted job stays waiting, past the default queue limit
        key = create_service(env, flags=["--queue-limit", "10000000"])["api_key"]
        server, port = children.serve("genhook", env, Path(root) / "serve.log")
        base = f"http://{HOST}:{port}/v1/workflows/{WORKFLOW}"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        per_item: dict[str, list[float]] = {m: [] for m in MODES}
        cpu_item: dict[str, list[float]] = {m: [] for m in MODES}
        sent = 0

        async def one(mode: str, first: int) -> int:
            size, concurrency = MODES[mode]
            bodies = _bodies(mode, first, args.count)
            url = f"{base}/runs" if size == 1 else f"{base}/batches"
            async with client_session(concurrency) as session:
                cpu0 = cpu_seconds(server.pid)
                result = await post_all(
                    session, url, bodies, headers=headers, concurrency=concurrency
                )
                cpu = cpu_seconds(server.pid) - cpu0
            items = _check(mode, result)
            per_item[mode].append(result.elapsed / items * 1e6)
            cpu_item[mode].append(cpu / items * 1e6)
            return items

        # a warm-up of each mode, not counted
        for mode in MODES:
            sent += run_async(lambda mode=mode, first=10_000_000 + sent: one(mode, first))
        for mode in MODES:
            per_item[mode].clear()
            cpu_item[mode].clear()
        for n in range(args.rounds):
            order = list(MODES) if n % 2 == 0 else list(reversed(MODES))
            for mode in order:
                sent += run_async(lambda mode=mode, first=sent: one(mode, first))
        stored = _jobs(args.database_url, data)
        if stored != sent:
            raise SystemExit(f"the jobs table holds {stored} jobs, {sent} were accepted")
    print(machine_line())
    print(
        f"database: {'postgresql' if args.database_url else 'sqlite'}; {args.count} items per "
        f"mode and round, {args.rounds} rounds, medians"
    )
    print(
        f"{'mode':<14}{'items/request':>14}{'in flight':>10}{'wall us/item':>14}"
        f"{'server CPU us/item':>20}{'vs single':>11}"
    )
    single = statistics.median(per_item["single"])
    failed = False
    for mode, (size, concurrency) in MODES.items():
        wall = statistics.median(per_item[mode])
        cpu = statistics.median(cpu_item[mode])
        print(
            f"{mode:<14}{size:>14}{concurrency:>10}{wall:>14.1f}{cpu:>20.1f}{single / wall:>10.1f}x"
        )
        failed = failed or (mode != "single" and wall > single)
    if failed:
        print("FAIL: a batch mode accepts an item slower than single triggers do")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
