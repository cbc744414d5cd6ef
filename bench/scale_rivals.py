"""The rivals of ``bench/scale.py``: procrastinate and pgqueuer doing no-op jobs on PostgreSQL.

Runs in the bench's own environment (``bench/.venv-scale``, made by ``bench/scale.py`` with
pinned versions from PyPI), never in genhook's. Each library is used as its documentation
shows, with its defaults for throughput:

* **procrastinate**: ``App(connector=PsycopgConnector(conninfo=...))``, an ``async`` no-op
  task, jobs deferred with ``batch_defer_async``, the worker run by
  ``app.run_worker_async(queues=[...], concurrency=C)`` with ``listen_notify`` on (its
  default) and its default polling interval.
* **pgqueuer**: ``PgQueuer.from_asyncpg_connection`` (asyncpg, the driver its docs and its own
  benchmark use), an ``async`` no-op entrypoint, jobs enqueued by ``Queries.enqueue`` with
  lists (one statement for a batch), the worker run by ``PgQueuer.run()`` with its default
  ``batch_size`` (10) and no limit on concurrent tasks; the schema by ``Queries.install()``
  (what ``pgq install`` runs).

Commands (``DSN`` is a libpq URL)::

    scale_rivals.py setup LIB DSN
    scale_rivals.py enqueue LIB DSN COUNT
    scale_rivals.py worker READY_FILE LIB DSN CONCURRENCY

``worker`` imports and builds everything, creates READY_FILE, then waits for SIGUSR1 before
it connects and starts working (so that every system's clock starts with its processes
loaded, not importing); SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

QUEUE = "bench"


# procrastinate ------------------------------------------------------------------------------


def _procrastinate_app(dsn: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(queue=QUEUE, name="noop")
    async def noop(n: int) -> None:
        return None

    return app, noop


async def _procrastinate_setup(dsn: str) -> None:
    app, _ = _procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _procrastinate_enqueue(dsn: str, count: int) -> None:
    app, noop = _procrastinate_app(dsn)
    async with app.open_async():
        for start in range(0, count, 1000):
            await noop.batch_defer_async(
                *({"n": i} for i in range(start, min(count, start + 1000)))
            )


async def _procrastinate_worker(app: Any, concurrency: int) -> None:
    async with app.open_async():
        await app.run_worker_async(queues=[QUEUE], concurrency=concurrency, wait=True)


# pgqueuer -----------------------------------------------------------------------------------


async def _pgqueuer_setup(dsn: str) -> None:
    import asyncpg
    from pgqueuer import Queries

    conn = await asyncpg.connect(dsn)
    try:
        await Queries.from_asyncpg_connection(conn).install()
    finally:
        await conn.close()


async def _pgqueuer_enqueue(dsn: str, count: int) -> None:
    import asyncpg
    from pgqueuer import Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        for start in range(0, count, 1000):
            size = min(count, start + 1000) - start
            await queries.enqueue(
                ["noop"] * size,
                [str(start + i).encode() for i in range(size)],
                [0] * size,
            )
    finally:
        await conn.close()


async def _pgqueuer_worker(dsn: str, concurrency: int) -> None:
    import asyncpg
    from pgqueuer import PgQueuer

    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("noop")
    async def noop(job: Any) -> None:
        return None

    loop = asyncio.get_running_loop()
    runner = asyncio.ensure_future(pgq.run())
    loop.add_signal_handler(signal.SIGTERM, runner.cancel)
    try:
        await runner
    except asyncio.CancelledError:
        pass
    finally:
        await conn.close()


# commands -----------------------------------------------------------------------------------


def _wait_for_go(ready_file: str) -> None:
    """Create ``ready_file`` and block until SIGUSR1 arrives."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    Path(ready_file).touch()
    signal.sigwait({signal.SIGUSR1})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})


def main(argv: list[str]) -> int:
    command, *rest = argv
    ready_file = rest.pop(0) if command == "worker" else ""
    lib, dsn, *rest = rest
    if lib not in ("procrastinate", "pgqueuer"):
        raise SystemExit(f"unknown library {lib!r}")
    if command == "setup":
        asyncio.run(_procrastinate_setup(dsn) if lib == "procrastinate" else _pgqueuer_setup(dsn))
    elif command == "enqueue":
        count = int(rest[0])
        run = _procrastinate_enqueue if lib == "procrastinate" else _pgqueuer_enqueue
        asyncio.run(run(dsn, count))
    elif command == "worker":
        concurrency = int(rest[0])
        if lib == "procrastinate":
            app, _ = _procrastinate_app(dsn)
            _wait_for_go(ready_file)
            asyncio.run(_procrastinate_worker(app, concurrency))
        else:
            import asyncpg  # noqa: F401  (loaded before the clock starts)
            import pgqueuer  # noqa: F401

            _wait_for_go(ready_file)
            asyncio.run(_pgqueuer_worker(dsn, concurrency))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
