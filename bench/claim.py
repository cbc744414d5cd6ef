"""Benchmark: what fairness costs a claim, against a plain FIFO claim on the same store.

Both claim through the same :class:`genhook.store.store.Store` transaction (lease the job,
open its attempt, log the event, commit), so the difference is only how the job is chosen:

* **fair** (genhook): the service served longest ago that has a due job, then its job by
  priority and eligible_at; rate window, backend limits and budget checked (none limit here).
* **FIFO** (baseline): the oldest due job of any service, one read of the claimable partial
  index (its IN list inline, so SQLite uses it), ``ORDER BY run_after LIMIT 1`` (``FOR UPDATE
  SKIP LOCKED`` on PostgreSQL): what a plain job queue does.

The queue: SERVICES services, JOBS jobs each (one service holds half of them: a backlog), on
SQLite (WAL, ``synchronous=FULL``) or PostgreSQL (``--database-url``). ROUNDS rounds of CLAIMS
claims per variant, interleaved, each variant on its own identically filled database (two SQLite
files, or two databases made on the PostgreSQL server); medians.
Prints claims per second and the ratio fair / FIFO; exits 1 when fair costs more than 10% more
(ratio of per-claim time above 1.10).

Run: ``.venv/bin/python bench/claim.py [--rounds 5] [--claims 400] [--database-url URL]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from genhook.store.admit import Admission
from genhook.store.schema import claimable, jobs
from genhook.store.store import Store

TARGET = 1.10


# built once, as genhook's own claim statements are (building a statement per call costs more
# than running it: a baseline that pays it is easy to beat)
_FIFO = (
    sa.select(jobs.c.id)
    .where(claimable(), jobs.c.run_after <= sa.bindparam("now", type_=jobs.c.run_after.type))
    .order_by(jobs.c.run_after)
    .limit(1)
    .with_for_update(skip_locked=True)
)


class FifoStore(Store):
    """The same store with a plain FIFO choice of the next job."""

    def _fair_pick(self, conn: sa.Connection, now: float) -> tuple[str | None, Any, bool]:
        job_id = conn.execute(_FIFO, {"now": now}).scalar()
        return job_id, None, False


def fill(store: Store, services: int, per_service: int) -> None:
    """SERVICES services; the first holds half of all jobs, the rest share the other half."""
    total = services * per_service
    for s in range(services):
        service_id = store.create_service(f"svc{s}")["service_id"]
        count = total // 2 if s == 0 else max(1, total // 2 // (services - 1))
        for i in range(count):
            store.submit(
                service_id=service_id,
                workflow_id="product-image",
                workflow_version=1,
                trigger={"product_name": f"item {i}"},
                external_id=None,
                callback_url=None,
                admission=Admission(backend="procedural"),
            )


def claims_per_second(store: Store, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        if store.claim("bench", 600) is None:
            raise SystemExit("the queue ran dry: use fewer --claims or more --jobs")
    return count / (time.perf_counter() - start)


def variant_url(base: str | None, folder: Path, name: str) -> str:
    """A fresh database for one variant: a SQLite file, or ``<database>_<name>`` made anew on
    the PostgreSQL server of ``base``."""
    if base is None:
        return f"sqlite:///{folder / name}.db"
    url = sa.make_url(base.replace("postgresql://", "postgresql+psycopg://", 1))
    database = f"{url.database}_{name}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    admin.dispose()
    return url.set(database=database).render_as_string(hide_password=False)


def open_store(cls: type[Store], url: str) -> Store:
    store = cls(url)
    store.migrate()
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=500, help="jobs per service on average")
    parser.add_argument("--database-url", default=None, help="postgresql://... (else SQLite)")
    args = parser.parse_args()
    needed = args.rounds * args.claims + 21
    if args.services * args.jobs < needed:
        args.jobs = needed // args.services + 1
    results: dict[str, list[float]] = {"fair": [], "fifo": []}
    variants: dict[str, type[Store]] = {"fair": Store, "fifo": FifoStore}
    with tempfile.TemporaryDirectory() as folder:
        # two identical databases (SQLite files, or PostgreSQL databases made for the bench on
        # the server of --database-url), filled alike, then rounds interleaved
        urls = {name: variant_url(args.database_url, Path(folder), name) for name in variants}
        stores = {n: open_store(c, urls[n]) for n, c in variants.items()}
        for store in stores.values():
            fill(store, args.services, args.jobs)
            claims_per_second(store, 20)  # warm-up
        for r in range(args.rounds):
            for name in ("fair", "fifo") if r % 2 == 0 else ("fifo", "fair"):
                results[name].append(claims_per_second(stores[name], args.claims))
        for store in stores.values():
            store.close()
    fair = statistics.median(results["fair"])
    fifo = statistics.median(results["fifo"])
    cost = fifo / fair  # per-claim time, fair over FIFO
    where = "PostgreSQL" if args.database_url else "SQLite"
    total = args.services * args.jobs
    print(f"claim on {where}, {args.services} services, ~{total} jobs waiting")
    print(f"  fair (genhook): {fair:8.1f} claims/s")
    print(f"  FIFO (baseline): {fifo:8.1f} claims/s")
    print(f"  time per claim, fair / FIFO: {cost:.3f} (target <= {TARGET:.2f})")
    return 0 if cost <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
