"""Benchmark: the API's share of the cores while every worker renders.

``genhook serve --workers W`` (W: the number of cores) in a fresh ``GENHOOK_DATA_DIR``, two
services made with ``genhook services create``:

* **bench**: the accept load's service. Its triggers (valid product-image triggers, no
  callback_url, as in ``bench/accept.py``) must not become rendering of their own in the idle
  rounds, so the service has a rate limit of one start a day (``--rate-limit 1/d``): its jobs
  are accepted and durably queued, then wait. Every round, idle and loaded, pays the same
  accept path (flow control's rate window included).
* **render**: the work. product-image jobs for ``social_pack`` (per aspect class one image of
  about 2048x2048 pixels, quality-checked, exported to the six social presets), queued deep
  enough that every worker renders through every loaded round.

Rounds: a warm-up, then IDLE rounds of COUNT triggers while the workers have nothing to do
(each worker process checked to use under 5 % of a core), then RENDER_JOBS render jobs are
queued and, once every worker process is seen busy (each at least 20 % of a core over half a
second, the database shows W render jobs running), LOADED rounds of COUNT triggers. The load
is an aiohttp client in this process (CONCURRENCY POSTs in flight over keep-alive
connections), sharing the cores like a neighbour would. Reported per round kind (medians):
accepted req/s, p50 and p99 accept latency, the API process's CPU time per request (from
/proc, that process alone), each worker process's CPU share (of one core) over the rounds,
the render jobs finished meanwhile, and the machine's load. The loaded rounds are valid only
if every worker stayed busy (running a render job at the start and the end of each round,
each using CPU) and render jobs were still waiting at the end.

Exits 1 when loaded / idle req/s < TARGET_RATIO or the loaded p99 >= TARGET_P99_MS, or a
loaded round was not valid. ``--compare-nice0`` runs a second install in the same run with
``GENHOOK_WORKER_NICE=0`` (workers at the API's priority, as before issue 8), its figures
reported beside with no target. The two installs' rounds are interleaved (the order alternates
each round); during one install's loaded round the other's worker processes are held with
SIGSTOP (no CPU, their jobs kept), so both are measured under the same neighbours.

The load generator's garbage collector is off during a round (collected before): its pauses
would stall every request in flight and count against the server.

Run: ``make bench`` or ``.venv/bin/python bench/load_share.py [--compare-nice0]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from _common import (
    HOST,
    Child,
    Children,
    bench_env,
    client_session,
    create_service,
    machine_line,
    percentile,
    post_all,
    process_cpu,
    run_async,
    temp_root,
    tree_pids,
    trigger_body,
)

WORKFLOW = "product-image"
CONCURRENCY = 16
WARMUP = 500
COUNT = 3000
IDLE_ROUNDS = 2
LOADED_ROUNDS = 2
RENDER_JOBS = 150
RENDER_PLATFORM = "social_pack"
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0
BUSY_SHARE = 0.2  # a worker process using at least this share of a core is busy
IDLE_SHARE = 0.05  # ... and one using less is idle
ROUND_SECONDS = 60.0


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: process_cpu(pid) for pid in pids}


def shares(before: dict[int, float], after: dict[int, float], seconds: float) -> list[float]:
    """Each process's CPU over ``seconds``, as a share of one core."""
    return [(after[p] - before[p]) / seconds for p in before]


@dataclass
class Round:
    rate: float
    p50_ms: float
    p99_ms: float
    api_cpu_ms: float
    worker_shares: list[float]
    renders_done: int
    valid: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class Install:
    """One ``genhook serve`` with its two services."""

    name: str
    label: str
    server: Child
    db: Path
    port: int
    load_key: str
    render_key: str
    workers: list[int] = field(default_factory=list)
    sent: int = 0
    rendered: int = 0
    idle: list[Round] = field(default_factory=list)
    loaded: list[Round] = field(default_factory=list)
    bad: dict[int, Any] = field(default_factory=dict)

    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/workflows/{WORKFLOW}/runs"

    def headers(self, key: str) -> dict[str, str]:
        return {"content-type": "application/json", "authorization": f"Bearer {key}"}

    def bodies(self, count: int) -> list[bytes]:
        start = self.sent
        self.sent += count
        return [trigger_body(i) for i in range(start, start + count)]

    def render_counts(self) -> dict[str, int]:
        """The render service's jobs by status, read from the database (read-only)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute(
                "SELECT j.status, count(*) FROM jobs j JOIN services s ON s.id = j.service_id"
                " WHERE s.name = 'render' GROUP BY j.status"
            ).fetchall()
        return {str(status): int(n) for status, n in rows}


def start_install(
    children: Children, root: Path, name: str, nice: str | None, workers: int, extra: dict[str, str]
) -> Install:
    data = root / name
    env = bench_env(GENHOOK_DATA_DIR=str(data), GENHOOK_QUEUE_LIMIT="1000000", **extra)
    if nice is not None:
        env["GENHOOK_WORKER_NICE"] = nice
    load = create_service(env, "bench", ("--rate-limit", "1/d"))
    render = create_service(env, "render")
    server, port = children.serve(
        f"genhook serve ({name})", env, root / f"{name}.log", workers=workers
    )
    install = Install(
        name,
        f"nice {nice or '10 (default)'}",
        server,
        data / "genhook.db",
        port,
        load["api_key"],
        render["api_key"],
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # every worker process has logged that it runs
        pids = [p for p in tree_pids(server.pid) if p != server.pid]
        log = server.log.read_text(encoding="utf-8", errors="replace")
        if len(pids) == workers and all(f"worker process {p}: " in log for p in pids):
            install.workers = pids
            return install
        time.sleep(0.2)
    raise RuntimeError(f"{name}: {workers} worker processes did not start:\n{server.log_tail()}")


def idle(install: Install) -> bool:
    """Every worker process of ``install`` used less than IDLE_SHARE of a core for 0.5 s."""
    return max(measured_shares(install, 0.5)) < IDLE_SHARE


def busy(install: Install) -> bool:
    """Every worker process used BUSY_SHARE of a core or more for 0.5 s, each with a job."""
    return min(measured_shares(install, 0.5)) >= BUSY_SHARE and install.render_counts().get(
        "running", 0
    ) >= len(install.workers)


def hold(install: Install, stopped: bool) -> None:
    """SIGSTOP (or SIGCONT) the install's worker processes: stopped, they use no CPU while
    another install's loaded round runs, and keep their jobs (a round is far shorter than the
    lease)."""
    for pid in install.workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP if stopped else signal.SIGCONT)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
    raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")


def measured_shares(install: Install, seconds: float) -> list[float]:
    before = cpu_of(install.workers)
    time.sleep(seconds)
    return shares(before, cpu_of(install.workers), seconds)


async def accept_round(
    session: aiohttp.ClientSession, install: Install, count: int, concurrency: int, loaded: bool
) -> Round:
    bodies = install.bodies(count)
    api = process_cpu(install.server.pid)
    workers = cpu_of(install.workers)
    counts = install.render_counts() if loaded else {}
    gc.collect()
    gc.disable()  # the load generator's own collections would stall every request in flight
    started = time.perf_counter()
    try:
        result = await post_all(
            session,
            install.url(),
            bodies,
            headers=install.headers(install.load_key),
            concurrency=concurrency,
            deadline=time.perf_counter() + ROUND_SECONDS,
        )
    finally:
        elapsed = time.perf_counter() - started
        gc.enable()
    api = process_cpu(install.server.pid) - api
    worker_shares = shares(workers, cpu_of(install.workers), elapsed)
    after = install.render_counts() if loaded else {}
    seconds = [a.seconds * 1000 for a in result.answers]
    for answer in result.answers:
        if answer.status != 202:
            install.bad.setdefault(answer.status, answer.body)
    done = after.get("succeeded", 0) - counts.get("succeeded", 0)
    made = Round(
        result.rate,
        percentile(seconds, 50),
        percentile(seconds, 99),
        api * 1000 / max(1, len(result.answers)),
        worker_shares,
        done,
    )
    if loaded:
        workers_n = len(install.workers)
        for when, seen in (("start", counts), ("end", after)):
            if seen.get("running", 0) < workers_n:
                made.valid = False
                made.notes.append(f"{seen.get('running', 0)} render jobs running at the {when}")
        if after.get("queued", 0) == 0:
            made.valid = False
            made.notes.append("the render queue ran dry (raise --render-jobs)")
        if min(worker_shares) <= 0.0:
            made.valid = False
            made.notes.append("a worker process used no CPU")
    return made


def queue_renders(install: Install, count: int) -> list[str]:
    """Queue ``count`` render jobs (synchronously, before the loaded rounds)."""
    import urllib.request

    ids = []
    for i in range(count):
        body = trigger_body(10_000_000 + install.rendered + i, RENDER_PLATFORM)
        request = urllib.request.Request(
            install.url(), data=body, headers=install.headers(install.render_key), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            ids.append(json.loads(answer.read())["job_id"])
    install.rendered += count
    return ids


def summary_line(label: str, rounds: list[Round]) -> str:
    shares_by_worker = list(zip(*(r.worker_shares for r in rounds), strict=True))
    worker_text = ", ".join(f"{statistics.median(s):.2f}" for s in shares_by_worker)
    return (
        f"{label:<28}{statistics.median(r.rate for r in rounds):>8.0f}"
        f"{min(r.rate for r in rounds):>7.0f}{max(r.rate for r in rounds):>7.0f}"
        f"{statistics.median(r.p50_ms for r in rounds):>8.1f}"
        f"{statistics.median(r.p99_ms for r in rounds):>8.1f}"
        f"{statistics.median(r.api_cpu_ms for r in rounds):>9.2f}"
        f"   {worker_text:<14}{sum(r.renders_done for r in rounds):>6}"
    )


async def measure(installs: list[Install], args: argparse.Namespace) -> None:
    """The warm-up, the idle rounds, then the loaded rounds of every install, interleaved."""
    async with client_session(args.concurrency) as session:
        for install in installs:  # warm-up; the bench service's one start a day runs
            result = await post_all(
                session,
                install.url(),
                install.bodies(WARMUP),
                headers=install.headers(install.load_key),
                concurrency=args.concurrency,
            )
            for answer in result.answers:
                if answer.status != 202:
                    install.bad.setdefault(answer.status, answer.body)
        for install in installs:
            wait_until(partial(idle, install), 120, f"{install.name}'s workers to be idle")
        for round_no in range(args.idle_rounds):
            order = installs if round_no % 2 == 0 else installs[::-1]
            for install in order:
                made = await accept_round(
                    session, install, args.count, args.concurrency, loaded=False
                )
                install.idle.append(made)
        for install in installs:
            queue_renders(install, args.render_jobs)
        try:
            for round_no in range(args.loaded_rounds):
                order = installs if round_no % 2 == 0 else installs[::-1]
                for install in order:
                    for other in installs:  # the other installs' workers held still
                        hold(other, other is not install)
                    wait_until(partial(busy, install), 120, f"{install.name}'s workers to be busy")
                    made = await accept_round(
                        session, install, args.count, args.concurrency, loaded=True
                    )
                    install.loaded.append(made)
        finally:
            for install in installs:
                hold(install, False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--count", type=int, default=COUNT, help="requests per round")
    parser.add_argument("--idle-rounds", type=int, default=IDLE_ROUNDS)
    parser.add_argument("--loaded-rounds", type=int, default=LOADED_ROUNDS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--render-jobs", type=int, default=RENDER_JOBS)
    parser.add_argument(
        "--nice", default=None, help="GENHOOK_WORKER_NICE of the install under test (default unset)"
    )
    parser.add_argument(
        "--compare-nice0",
        action="store_true",
        help="also an install with GENHOOK_WORKER_NICE=0, reported beside (no target)",
    )
    parser.add_argument(
        "--vips-concurrency", default=None, help="VIPS_CONCURRENCY for the servers (default: unset)"
    )
    args = parser.parse_args()
    extra = {"VIPS_CONCURRENCY": args.vips_concurrency} if args.vips_concurrency else {}

    with temp_root("genhook-bench-share-") as tmp, Children() as children:
        root = Path(tmp)
        installs = [start_install(children, root, "main", args.nice, args.workers, extra)]
        if args.compare_nice0:
            installs.append(start_install(children, root, "nice0", "0", args.workers, extra))

        run_async(partial(measure, installs, args))
    return report(installs, args)


def report(installs: list[Install], args: argparse.Namespace) -> int:
    """Print the figures; 0 when the first install meets the targets, else 1."""
    print(
        f"load share: POST /v1/workflows/{WORKFLOW}/runs (valid trigger, no callback_url),"
        f" {args.concurrency} in flight over keep-alive; {WARMUP} warm-up, {args.idle_rounds}"
        f" idle and {args.loaded_rounds} loaded rounds of {args.count}; medians;"
        f" genhook serve --workers {args.workers}, loaded: every worker renders"
        f" {WORKFLOW} {RENDER_PLATFORM} jobs (2048x2048-class images)"
        + (f"; VIPS_CONCURRENCY={args.vips_concurrency}" if args.vips_concurrency else "")
    )
    print(machine_line() + "; load generator in the same process, sharing the cores")
    print(
        f"{'install / rounds':<28}{'req/s':>8}{'min':>7}{'max':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'API CPU':>9}   {'worker CPU':<14}{'renders':>6}"
    )
    print(f"{'':<28}{'':>8}{'':>7}{'':>7}{'':>8}{'':>8}{'ms/req':>9}   {'(cores each)':<14}")
    verdict = "ok"
    for install in installs:
        print(summary_line(f"{install.label}: idle", install.idle))
        print(summary_line(f"{install.label}: loaded", install.loaded))
    for install in installs:
        ratio = statistics.median(r.rate for r in install.loaded) / statistics.median(
            r.rate for r in install.idle
        )
        p99 = statistics.median(r.p99_ms for r in install.loaded)
        invalid = [note for r in install.loaded for note in r.notes]
        fine = ratio >= TARGET_RATIO and p99 < TARGET_P99_MS and not invalid and not install.bad
        line = (
            f"loaded / idle = {ratio:.2f}x (target >= {TARGET_RATIO:.2f}x), loaded p99"
            f" {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms)"
        )
        if install is installs[0]:
            print(f"{'ok' if fine else 'FAIL'}: {install.label}: {line}")
            verdict = "ok" if fine else "FAIL"
        else:
            print(f"info: {install.label}: {line}")
        for note in invalid:
            print(f"{'FAIL' if install is installs[0] else 'info'}: {install.name}: {note}")
        if install.bad:
            print(f"FAIL: {install.name} answered {install.bad}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
