"""Benchmark: genhook on PostgreSQL with 1, 2 and 4 worker processes, beside procrastinate and
pgqueuer on the same server; the accept rate with 1 and 2 API processes; trigger-to-claim
latency through LISTEN/NOTIFY.

Everything runs against one PostgreSQL server (``--server``, default the machine's on
127.0.0.1:5432, user postgres); every measurement gets a database of its own, created fresh and
dropped after.

* **Throughput** (jobs per second, first job to last): JOBS no-op jobs are enqueued first, then
  W worker processes (W = 1, 2, 4) start, each loaded and waiting at a start barrier (SIGUSR1),
  and the clock runs from the signal until the database counts every job ended (or LIMIT
  seconds passed: the rate is then what ended). The systems are interleaved per W.

  - **genhook**: the cheapest job genhook runs, a workflow the bench writes into its own
    workflows folder with one ``metadata`` node and no generation (``outputs.assets: []``): a
    real claim (fair pick, lease, attempt, event), the workflow run, the completion payload and
    the finishing transaction (attempt closed, event, roll-up). Enqueued through the store's
    ``submit_async`` (the group committer the API uses); ``genhook worker --concurrency C``
    processes (through ``bench/scale_launch.py``, the same entry point behind the barrier),
    ``GENHOOK_WORKER_NICE=0`` like the rivals' processes.
  - **procrastinate** and **pgqueuer** (``bench/scale_rivals.py``), each in the bench's own
    environment ``bench/.venv-scale`` (made on first run with the pinned versions below): an
    ``async`` no-op task, their documented worker with their defaults for throughput
    (procrastinate: ``listen_notify`` on, ``concurrency`` C like genhook's; pgqueuer: asyncpg,
    ``batch_size`` 10, no cap on concurrent tasks). Counted from their tables
    (procrastinate_jobs status; pgqueuer's job rows, deleted when acknowledged).

  Also printed: each system's worker CPU per job (from ``/proc``) and how busy the machine's
  cores were during the run (``/proc/stat``), to say where the cores bind.
* **Accept**: ``genhook serve --workers 0`` x K (K = 1, 2) on one database, an aiohttp client in
  this process keeping CONCURRENCY POSTs in flight, spread over the K servers; a warm-up, then
  ACCEPT triggers; every answer must be 202 and the jobs table must hold every one.
* **Latency**: one ``genhook serve --workers 0`` and two idle ``genhook worker`` processes with
  ``GENHOOK_POLL_SECONDS=10`` (so that only the NOTIFY can explain a fast claim); LATENCY triggers
  one at a time, 50 ms apart; from the database, accept (``created_at``) to claim
  (``first_claimed_at``): p50, p95, p99.

Targets (exit 1 when missed): genhook's peak throughput (the best of its W) at least 3x
procrastinate's peak and at least 0.3x pgqueuer's. Growth with processes is reported, not
gated (on 2 shared cores the workers, PostgreSQL and the neighbours share the same cores).

Run: ``.venv/bin/python bench/scale.py [--jobs 1500] [--concurrency 8] [--limit 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from _common import (
    Child,
    Children,
    bench_env,
    client_session,
    create_service,
    genhook_command,
    machine_line,
    percentile,
    post_all,
    process_cpu,
    run_async,
    temp_root,
)

HERE = Path(__file__).resolve().parent
RIVALS_VENV = HERE / ".venv-scale"
PINS = ("procrastinate==3.10.0", "pgqueuer==1.6.0", "asyncpg==0.32.0", "psycopg[binary]==3.3.9")
SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEMS = ("genhook", "procrastinate", "pgqueuer")
PROCESSES = (1, 2, 4)
TARGET_PROCRASTINATE = 3.0
TARGET_PGQUEUER = 0.3
READY = "{ready}"  # where a worker's argv takes its ready file
ENDED = {
    "genhook": "SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')",
    "procrastinate": (
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed')"
    ),
    # pgqueuer deletes a job's row when it acknowledges it
    "pgqueuer": "SELECT %(total)s - count(*) FROM pgqueuer",
}
NOOP_FLOW = """\
id: noop
description: the cheapest job genhook runs (bench/scale.py)
input:
  required: [n]
  properties:
    n: {type: string}
nodes:
  meta:
    kind: metadata
    with:
      alt_text: "item {{ input.n }}"
      caption: "item {{ input.n }}"
      filename: "item-{{ input.n }}"
outputs:
  assets: []
  seo: ${meta.seo}
"""


# the server and its databases ---------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server: str, name: str) -> Iterator[str]:
    """A database made anew on ``server`` for one measurement (its libpq URL); dropped after."""
    database = f"genhook_scale_{name}_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield libpq_url(server, database)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def libpq_url(server: str, database: str) -> str:
    """``server`` (a postgresql:// URL) naming ``database`` instead."""
    base, _, query = server.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}" + (f"?{query}" if query else "")


def count(url: str, sql: str, total: int = 0) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, {"total": total}).fetchone()
    return int(row[0]) if row else 0


def server_line(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("max_connections", "shared_buffers", "synchronous_commit")
        }
    shown = ", ".join(f"{k} {v[0] if v else '?'}" for k, v in settings.items())
    return f"PostgreSQL {version[0] if version else '?'} ({shown})"


# the rivals' environment --------------------------------------------------------------------


def rivals_python() -> Path:
    """The interpreter of ``bench/.venv-scale``, made (or remade) with :data:`PINS` when its
    stamp does not name them."""
    python = RIVALS_VENV / "bin" / "python"
    stamp = RIVALS_VENV / ".pins"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS):
        return python
    print(f"making {RIVALS_VENV.name} ({', '.join(PINS)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(RIVALS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS],
        check=True,
    )
    stamp.write_text("\n".join(PINS))
    return python


# one throughput run -------------------------------------------------------------------------


def cores_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return float(sum(fields) - idle), float(sum(fields))


@dataclass
class Run:
    """One throughput measurement."""

    system: str
    processes: int
    ended: int
    seconds: float
    cpu_per_job_ms: float
    busy: float  # share of the machine's cores busy during the run (anything's)

    @property
    def rate(self) -> float:
        return self.ended / self.seconds if self.seconds > 0 else 0.0


def timed(
    children: Children,
    system: str,
    argv: Sequence[str],
    processes: int,
    env: dict[str, str],
    root: Path,
    url: str,
    total: int,
    limit: float,
) -> Run:
    """Start ``processes`` worker processes ``argv`` (each creates its ready file, given in
    place of :data:`READY`, then waits for SIGUSR1), start them all at once, and time them until
    every job ended."""
    ready = [root / f"ready-{system}-{i}" for i in range(processes)]
    started: list[Child] = []
    for i in range(processes):
        ready[i].unlink(missing_ok=True)
        command = [str(ready[i]) if a == READY else a for a in argv]
        started.append(children.start(f"{system}-{i}", command, env, root / f"{system}-{i}.log"))
    deadline = time.monotonic() + 180
    while not all(r.exists() for r in ready):
        for child in started:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system}: workers not ready in 180 s")
        time.sleep(0.02)
    cpu_before = sum(process_cpu(c.pid) for c in started)
    busy0, all0 = cores_busy()
    start = time.perf_counter()
    for child in started:
        os.kill(child.pid, signal.SIGUSR1)
    sql = ENDED[system]
    ended = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(sql, {"total": total}).fetchone()
            ended = int(row[0]) if row else 0
            elapsed = time.perf_counter() - start
            if ended >= total or elapsed > limit:
                break
            for child in started:
                if child.proc.poll() is not None:
                    raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
            time.sleep(0.01)
    busy1, all1 = cores_busy()
    cpu = sum(process_cpu(c.pid) for c in started) - cpu_before
    for child in started:
        child.stop(grace=5.0)
    return Run(
        system,
        processes,
        ended,
        elapsed,
        1000 * cpu / max(1, ended),
        (busy1 - busy0) / max(1.0, all1 - all0),
    )


def fill_genhook(url: str, jobs: int) -> None:
    """JOBS queued no-op jobs of one service, through the store's group committer."""
    from genhook.store.admit import Admission
    from genhook.store.store import Store

    store = Store(url)
    try:
        store.migrate()
        service_id = store.create_service("bench")["service_id"]
        items = [
            store.submission(
                service_id=service_id,
                workflow_id="noop",
                workflow_version=1,
                trigger={"n": str(i)},
                external_id=None,
                callback_url=None,
                admission=Admission(),
            )
            for i in range(jobs)
        ]

        async def submit_all() -> None:
            for start in range(0, jobs, 500):
                await asyncio.gather(*(store.submit_async(it) for it in items[start : start + 500]))

        asyncio.run(submit_all())
    finally:
        store.close()


def throughput(
    children: Children,
    system: str,
    processes: int,
    args: argparse.Namespace,
    root: Path,
    flows: Path,
    rivals: Path | None,
) -> Run:
    total = args.jobs if system != "pgqueuer" else args.jobs * args.pgqueuer_factor
    with fresh_database(args.server, f"{system}_{processes}") as url:
        if system == "genhook":
            fill_genhook(url, total)
            env = bench_env(
                GENHOOK_DATABASE_URL=url,
                GENHOOK_WORKFLOWS_DIR=str(flows),
                GENHOOK_DATA_DIR=str(root / "data"),
                GENHOOK_WORKER_NICE="0",
            )
            argv = [sys.executable, str(HERE / "scale_launch.py"), READY]
            argv += ["worker", "--concurrency", str(args.concurrency)]
        else:
            assert rivals is not None
            script = str(HERE / "scale_rivals.py")
            for command in (["setup", system, url], ["enqueue", system, url, str(total)]):
                done = subprocess.run(
                    [str(rivals), script, *command], capture_output=True, text=True, timeout=300
                )
                if done.returncode != 0:
                    raise RuntimeError(f"{system} {command[0]} failed:\n{done.stderr[-2000:]}")
            env = bench_env()
            argv = [str(rivals), script, "worker", READY, system, url, str(args.concurrency)]
        return timed(children, system, argv, processes, env, root, url, total, args.limit)


# accept -------------------------------------------------------------------------------------


def accept_rate(
    children: Children, servers: int, args: argparse.Namespace, root: Path, flows: Path
) -> tuple[float, float]:
    """Triggers accepted per second by ``servers`` API processes on one database; and the
    API processes' CPU ms per trigger."""
    with fresh_database(args.server, f"accept_{servers}") as url:
        env = bench_env(
            GENHOOK_DATABASE_URL=url,
            GENHOOK_WORKFLOWS_DIR=str(flows),
            GENHOOK_DATA_DIR=str(root / f"accept-{servers}"),
            GENHOOK_QUEUE_LIMIT="10000000",
        )
        key = create_service(env)["api_key"]
        apis = [
            children.serve(f"api-{servers}-{i}", env, root / f"api-{servers}-{i}.log")
            for i in range(servers)
        ]
        urls = [f"http://127.0.0.1:{port}/v1/workflows/noop/runs" for _, port in apis]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        warm, measured = args.accept // 5, args.accept

        async def load(first: int, n: int) -> tuple[float, int]:
            per = max(1, args.clients // servers)
            sessions = [client_session(per) for _ in urls]
            try:
                chunks = [
                    [
                        json.dumps({"n": str(i)}).encode()
                        for i in range(first + k, first + n, len(urls))
                    ]
                    for k in range(len(urls))
                ]
                start = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        post_all(s, u, c, headers=headers, concurrency=per)
                        for s, u, c in zip(sessions, urls, chunks, strict=True)
                    )
                )
                elapsed = time.perf_counter() - start
            finally:
                for s in sessions:
                    await s.close()
            accepted = sum(r.statuses.get(202, 0) for r in results)
            if accepted != n:
                statuses = sum((r.statuses for r in results), start=type(results[0].statuses)())
                raise RuntimeError(f"accept: not every trigger got 202: {dict(statuses)}")
            return elapsed, accepted

        run_async(lambda: load(0, warm))
        cpu0 = sum(process_cpu(child.pid) for child, _ in apis)
        elapsed, accepted = run_async(lambda: load(warm, measured))
        cpu = sum(process_cpu(child.pid) for child, _ in apis) - cpu0
        stored = count(url, "SELECT count(*) FROM jobs")
        if stored != warm + measured:
            raise RuntimeError(f"accept: {stored} jobs stored for {warm + measured} 202s")
        for child, _ in apis:
            child.stop()
        return accepted / elapsed, 1000 * cpu / accepted


# latency ------------------------------------------------------------------------------------


def claim_latency(
    children: Children, args: argparse.Namespace, root: Path, flows: Path
) -> list[float]:
    """Accept-to-claim seconds of LATENCY triggers sent one at a time to an idle install."""
    with fresh_database(args.server, "latency") as url:
        env = bench_env(
            GENHOOK_DATABASE_URL=url,
            GENHOOK_WORKFLOWS_DIR=str(flows),
            GENHOOK_DATA_DIR=str(root / "latency"),
            GENHOOK_POLL_SECONDS="10",
            GENHOOK_WORKER_NICE="0",
        )
        key = create_service(env)["api_key"]
        api, port = children.serve("latency-api", env, root / "latency-api.log")
        workers = [
            children.start(
                f"latency-worker-{i}",
                genhook_command("worker"),
                env,
                root / f"latency-worker-{i}.log",
            )
            for i in range(2)
        ]
        deadline = time.monotonic() + 120
        while not all("worker process" in w.log_tail(50) for w in workers):
            if time.monotonic() > deadline:
                raise RuntimeError("latency: workers did not start")
            time.sleep(0.1)
        time.sleep(1.5)  # LISTEN is issued by the channel's own thread just after start-up
        url_runs = f"http://127.0.0.1:{port}/v1/workflows/noop/runs"
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        async def send() -> None:
            async with client_session(1) as session:
                for i in range(args.latency):
                    async with session.post(
                        url_runs, data=json.dumps({"n": str(i)}).encode(), headers=headers
                    ) as answer:
                        await answer.read()
                        if answer.status != 202:
                            raise RuntimeError(f"latency: trigger answered {answer.status}")
                    await asyncio.sleep(0.05)

        run_async(send)
        deadline = time.monotonic() + 60
        while count(url, ENDED["genhook"]) < args.latency:
            if time.monotonic() > deadline:
                raise RuntimeError("latency: not every job ended within 60 s")
            time.sleep(0.05)
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT first_claimed_at - created_at FROM jobs").fetchall()
        for child in (*workers, api):
            child.stop()
        return [float(r[0]) for r in rows]


# main ---------------------------------------------------------------------------------------


def growth(runs: dict[int, Run], processes: Sequence[int]) -> str:
    steps = []
    for a, b in itertools.pairwise(processes):
        steps.append(f"{a}->{b}: x{runs[b].rate / runs[a].rate:.2f}")
    return ", ".join(steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", default=SERVER, help="postgresql:// URL of the server")
    parser.add_argument("--jobs", type=int, default=1500, help="jobs per throughput run")
    parser.add_argument(
        "--pgqueuer-factor", type=int, default=4, help="pgqueuer gets this many times --jobs"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="jobs in flight per process")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds per throughput run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--accept", type=int, default=3000, help="triggers per accept run")
    parser.add_argument("--clients", type=int, default=32, help="POSTs in flight")
    parser.add_argument("--latency", type=int, default=100, help="triggers for the latency")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--processes",
        default=",".join(map(str, PROCESSES)),
        help="worker process counts, comma-separated (e.g. 1 with --systems genhook to profile)",
    )
    parser.add_argument("--skip-accept", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    counts = [int(w) for w in args.processes.split(",") if w]
    rivals = rivals_python() if any(s != "genhook" for s in systems) else None
    print(machine_line())
    print(server_line(args.server))
    started = time.monotonic()
    runs: dict[str, dict[int, list[Run]]] = {s: {w: [] for w in counts} for s in systems}
    with temp_root("genhook-scale-") as folder, Children() as children:
        root = Path(folder)
        flows = root / "workflows"
        flows.mkdir()
        (flows / "noop.yaml").write_text(NOOP_FLOW, encoding="utf-8")
        print(f"\nthroughput: no-op jobs, --concurrency {args.concurrency} per process")
        for r in range(args.rounds):
            for w in counts:
                order = systems if (r + w) % 2 == 0 else list(reversed(systems))
                for system in order:
                    run = throughput(children, system, w, args, root, flows, rivals)
                    runs[system][w].append(run)
                    print(
                        f"  {system:13} {w} proc: {run.rate:8.1f} jobs/s ({run.ended} in"
                        f" {run.seconds:.1f} s), worker CPU {run.cpu_per_job_ms:.2f} ms/job,"
                        f" cores busy {100 * run.busy:.0f}%",
                        flush=True,
                    )
        best: dict[str, dict[int, Run]] = {
            s: {w: max(rs, key=lambda x: x.rate) for w, rs in by_w.items()}
            for s, by_w in runs.items()
        }
        median = {
            s: {w: statistics.median(x.rate for x in rs) for w, rs in by_w.items()}
            for s, by_w in runs.items()
        }
        accept: dict[int, tuple[float, float]] = {}
        if not args.skip_accept:
            print(f"\naccept: {args.accept} triggers, {args.clients} in flight")
            for servers in (1, 2):
                accept[servers] = accept_rate(children, servers, args, root, flows)
                rate, cpu = accept[servers]
                print(
                    f"  {servers} API process(es): {rate:8.1f} triggers/s,"
                    f" API CPU {cpu:.2f} ms/trigger",
                    flush=True,
                )
        latencies: list[float] = []
        if not args.skip_latency:
            latencies = claim_latency(children, args, root, flows)
    print("\nsummary")
    for system in systems:
        rates = ", ".join(f"{w}: {median[system][w]:.1f}" for w in counts)
        print(f"  {system:13} jobs/s by processes {rates}; {growth(best[system], counts)}")
    ok = True
    if "genhook" in systems:
        peak = {s: max(median[s].values()) for s in systems}
        for rival, target in (
            ("procrastinate", TARGET_PROCRASTINATE),
            ("pgqueuer", TARGET_PGQUEUER),
        ):
            if rival not in systems:
                continue
            ratio = peak["genhook"] / peak[rival]
            per_w = ", ".join(
                f"{w}: {median['genhook'][w] / median[rival][w]:.2f}x" for w in counts
            )
            verdict = "ok" if ratio >= target else "MISSED"
            print(
                f"  genhook / {rival}: peak {ratio:.2f}x (target >= {target}x, {verdict});"
                f" by processes {per_w}"
            )
            ok = ok and ratio >= target
    if accept:
        print(
            f"  accept: 1 API {accept[1][0]:.1f}/s, 2 APIs {accept[2][0]:.1f}/s"
            f" (x{accept[2][0] / accept[1][0]:.2f})"
        )
    if latencies:
        ms = [1000 * x for x in latencies]
        print(
            f"  trigger to claim (LISTEN/NOTIFY, idle workers, poll 10 s): p50"
            f" {percentile(ms, 50):.1f} ms, p95 {percentile(ms, 95):.1f} ms,"
            f" p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms ({len(ms)} triggers)"
        )
    print(f"  bench took {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
