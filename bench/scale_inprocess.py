"""Worker CPU per no-op job, in one process: ``bench/scale.py``'s cheapest job through the real
:class:`genhook.worker.Worker` (claims, the workflow run, the payload, the finishing
transaction), without starting worker processes.

JOBS no-op jobs (``scale.NOOP_FLOW``) are queued on a database made fresh on the server (and
dropped after) through the store's group committer, as ``bench/scale.py`` does; then a runtime
is built as ``genhook worker`` builds it (settings, workflows, store, backends) and
``Worker.run`` runs in a thread until the database counts every job ended. Printed: the jobs,
the wall time, this process's CPU time over the run (``time.process_time``: every thread, the
counting query's included) and the CPU per job. No LISTEN/NOTIFY channel is opened (the worker
polls; every job is queued before it starts, so it never waits on one).

For comparing a change on a loaded machine: one process on one core, CPU time rather than
rates; alternate runs of the two versions (e.g. one with ``PYTHONPATH`` at a copy of the old
``src``) and compare pair by pair.

Run: ``.venv/bin/python bench/scale_inprocess.py [--jobs 3000] [--concurrency 8]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import psycopg

import scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server", default=scale.SERVER)
    parser.add_argument("--limit", type=float, default=300.0, help="seconds at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genhook-scale-inprocess-") as folder:
        root = Path(folder)
        flows = root / "flows"
        flows.mkdir()
        (flows / "noop.yaml").write_text(scale.NOOP_FLOW)
        with scale.fresh_database(args.server, f"inproc_{int(time.time())}") as url:
            scale.fill_genhook(url, args.jobs)
            os.environ.update(
                GENHOOK_DATABASE_URL=url,
                GENHOOK_WORKFLOWS_DIR=str(flows),
                GENHOOK_DATA_DIR=str(root / "data"),
                GENHOOK_WORKER_NICE="0",
            )
            measure(url, args.jobs, args.concurrency, args.limit)


def measure(url: str, jobs: int, concurrency: int, limit: float) -> None:
    from genhook.cli.base import build_runtime, load_settings
    from genhook.store.db import configure_role
    from genhook.worker import Worker, apply_backend_limits

    settings = load_settings()
    configure_role(settings, "worker", concurrency)
    runtime = build_runtime(settings)
    assert runtime.engine is not None  # the backends, built on first use
    apply_backend_limits(runtime.store, runtime.engine)
    worker = Worker(
        runtime.store,
        runtime.engine,
        runtime.storage,
        runtime.settings,
        jobs_signal=runtime.jobs_signal,
        deliveries_signal=runtime.deliveries_signal,
        events_signal=runtime.events_signal,
        concurrency=concurrency,
    )
    stop = threading.Event()
    with psycopg.connect(url, autocommit=True) as conn:

        def ended() -> int:
            row = conn.execute(scale.ENDED["genhook"]).fetchone()
            return int(row[0]) if row else 0

        cpu, start = time.process_time(), time.monotonic()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        while (done := ended()) < jobs and time.monotonic() - start < limit:
            time.sleep(0.1)
        cpu, wall = time.process_time() - cpu, time.monotonic() - start
        stop.set()
        thread.join(30)
        row = conn.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()
    runtime.store.close()
    print(
        f"jobs {done} (succeeded {row[0] if row else 0}) wall {wall:.2f} s cpu {cpu:.2f} s "
        f"cpu/job {1000 * cpu / max(done, 1):.3f} ms rate {done / wall:.0f}/s"
    )


if __name__ == "__main__":
    main()
