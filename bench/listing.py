"""Benchmark: a page of ``GET /v1/jobs``'s store read at depth, on 100,000 jobs, against a
plain indexed SQL query of the same page, in the same run.

* **genhook**: :meth:`genhook.store.store.Store.list_jobs` of 50 jobs from a keyset cursor:
  the page (``limit + 1`` rows, every column) on its index, the page's attempts and retries
  (two more statements), each row made a ``StoredJob``: what the route reads.
* **SQL** (baseline): the same page as one hand-written statement on the same index, through
  the driver (``exec_driver_sql``), rows left as tuples: the least a keyset page costs.
* **OFFSET** (for contrast): the same page by ``LIMIT 50 OFFSET depth``: what a listing
  without a cursor pays, growing with the depth.

The store: JOBS jobs of one service and a tenth as many of another, on SQLite (WAL) or on
PostgreSQL (``--database-url``: an empty database), bulk-inserted (COPY on PostgreSQL) and
ANALYZEd. Pages at depths 0, 1,000, 10,000, 50,000 and 90,000 jobs; each timed ``--rounds``
times, variants interleaved; p50 and p95 in milliseconds. Exits 1 when genhook's p50 at the
deepest page is more than twice its p50 at the first (a page must cost the same at any depth).

Run: ``.venv/bin/python bench/listing.py [--rounds 200] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.listing_rows import add_jobs, job_rows

from genhook.store.listing import Cursor, JobFilter
from genhook.store.store import Store

JOBS = 90_000
PAGE = 50
DEPTHS = (0, 1_000, 10_000, 50_000, 90_000 - PAGE)
START, SPACING = 1_700_000_000.0, 0.01  # tests.listing_rows' defaults: row n's created_at

_KEYSET = (
    "SELECT * FROM jobs WHERE service_id = {p} AND created_at <= {p} "
    "AND (created_at < {p} OR id < {p}) ORDER BY created_at DESC, id DESC LIMIT {limit}"
)
_OFFSET = (
    "SELECT * FROM jobs WHERE service_id = {p} ORDER BY created_at DESC, id DESC "
    "LIMIT {limit} OFFSET {offset}"
)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'listing.db'}"
        store = Store(url)
        try:
            return run(store, args.rounds)
        finally:
            store.close()


def run(store: Store, rounds: int) -> int:
    store.migrate()
    with store.engine.connect() as conn:
        if conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar():
            print("the bench needs an empty database (it adds 100,000 jobs)", file=sys.stderr)
            return 2
    shop = store.create_service(f"bench-{time.time_ns()}")["service_id"]
    other = store.create_service(f"bench-other-{time.time_ns()}")["service_id"]
    started = time.perf_counter()
    add_jobs(store.engine, job_rows(shop, JOBS) + job_rows(other, JOBS // 9, first=JOBS))
    print(
        f"{store.engine.dialect.name}: {JOBS + JOBS // 9:,} jobs inserted in "
        f"{time.perf_counter() - started:.1f} s"
    )
    marker = "?" if store.engine.dialect.name == "sqlite" else "%s"
    keyset = _KEYSET.format(p=marker, limit=PAGE)
    filters = JobFilter()
    results: dict[tuple[str, int], list[float]] = {}
    with store.engine.connect() as conn:
        for depth in DEPTHS:
            n = JOBS - depth  # the page starts after row n (the newest is JOBS - 1)
            after = None if depth == 0 else Cursor(START + n * SPACING, f"job_b{n:012d}")
            params = (shop, START + JOBS * SPACING, START + JOBS * SPACING, "~")
            if after is not None:
                params = (shop, after.created_at, after.created_at, after.job_id)
            offset = _OFFSET.format(p=marker, limit=PAGE, offset=depth)

            def genhook(after: Cursor | None = after) -> int:
                return len(store.list_jobs(shop, filters, limit=PAGE, after=after).jobs)

            def plain(params: tuple[object, ...] = params) -> int:
                return len(conn.exec_driver_sql(keyset, params).all())

            def by_offset(offset: str = offset) -> int:
                return len(conn.exec_driver_sql(offset, (shop,)).all())

            variants: dict[str, Callable[[], int]] = {
                "genhook": genhook,
                "SQL": plain,
                "OFFSET": by_offset,
            }
            for name, call in variants.items():
                assert call() == PAGE, (name, depth)
                results[(name, depth)] = []
            for _ in range(rounds):
                for name, call in variants.items():
                    t0 = time.perf_counter()
                    call()
                    results[(name, depth)].append(time.perf_counter() - t0)
            conn.rollback()
    print(f"page of {PAGE}, {rounds} rounds; p50 / p95 ms")
    print(f"{'depth':>8} {'genhook':>17} {'SQL':>17} {'OFFSET':>17} {'genhook/SQL p50':>16}")
    for depth in DEPTHS:
        cells = [percentiles(results[(name, depth)]) for name in ("genhook", "SQL", "OFFSET")]
        text = " ".join(f"{p50:8.2f} /{p95:7.2f}" for p50, p95 in cells)
        print(f"{depth:>8,} {text} {cells[0][0] / cells[1][0]:>16.1f}")
    first = percentiles(results[("genhook", DEPTHS[0])])[0]
    deepest = percentiles(results[("genhook", DEPTHS[-1])])[0]
    verdict = deepest <= 2 * first
    print(
        f"genhook p50 deepest / first page: {deepest / first:.2f} (target <= 2): "
        f"{'ok' if verdict else 'MISSED'}"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
