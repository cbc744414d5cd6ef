"""Benchmark: memory of a worker process exporting 2048x2048 images, and of the API holding a
deep queue.

* **worker**: ``genhook serve --workers 0`` (the API) and one ``genhook worker`` process in a
  fresh ``GENHOOK_DATA_DIR``; JOBS product-image triggers for ``social_pack`` (per aspect class
  one procedural image of about 2048x2048 pixels, four of them, quality-checked, exported to the
  six social presets) are queued and the worker runs them one after another. Reported from
  /proc: its VmRSS at rest (ready, no job yet), its peak, the kernel's high-water mark VmHWM
  (reset once it is at rest, so no sample can miss it), over the first job and over all of
  them, what it holds after the last, and its CPU time and minor page faults per job. The
  baseline beside it is the pixels a job must hold at once: its four renders (3 bytes a
  pixel). Exits 1 when the peak is WORKER_TARGET_MIB or more.
* **API**: ``genhook serve --workers 0`` in another fresh data dir (no worker: every job stays
  queued), a service whose queue limit is above QUEUED; after WARMUP triggers (every code path
  of the accept warmed), VmRSS of the server process; then QUEUED more triggers accepted (202),
  and its VmRSS again (and its peak meanwhile). Exits 1 when the growth is API_TARGET_MIB or
  more.

Run: ``make bench`` or ``.venv/bin/python bench/memory.py [--jobs N] [--queued N]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from _common import (
    HOST,
    Children,
    RssSampler,
    bench_env,
    client_session,
    cpu_and_faults,
    create_service,
    genhook_command,
    machine_line,
    post_all,
    rss_kib,
    run_async,
    temp_root,
    trigger_body,
)

WORKFLOW = "product-image"
PLATFORM = "social_pack"
JOBS = 6
QUEUED = 10_000
WARMUP = 500
CONCURRENCY = 16
WORKER_TARGET_MIB = 250.0
API_TARGET_MIB = 50.0
JOB_TIMEOUT = 300.0
ENDED = ("succeeded", "failed", "cancelled")


def mib(kib: float) -> float:
    return kib / 1024


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    return {str(status): int(n) for status, n in rows}


def post(url: str, key: str, bodies: list[bytes], concurrency: int) -> dict[int, int]:
    """POST every body; the answers' status counts."""

    async def send() -> dict[int, int]:
        async with client_session(concurrency) as session:
            result = await post_all(
                session,
                url,
                bodies,
                headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
                concurrency=concurrency,
            )
        return dict(result.statuses)

    answered: dict[int, int] = run_async(send)
    return answered


def start_api(children: Children, root: Path, name: str, env: dict[str, str]) -> tuple[int, str]:
    server, port = children.serve(f"genhook serve ({name})", env, root / f"{name}-serve.log")
    return server.pid, f"http://{HOST}:{port}/v1/workflows/{WORKFLOW}/runs"


def high_water_kib(pid: int) -> int:
    """VmHWM of ``pid``: the most it has had resident since it started or since
    :func:`reset_high_water` (the kernel's own figure, no sample missed)."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def reset_high_water(pid: int) -> None:
    """Start ``pid``'s VmHWM again from what it has resident now (``clear_refs`` 5)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def worker_run(children: Children, root: Path, jobs: int) -> tuple[bool, list[str]]:
    data = root / "worker"
    env = bench_env(GENHOOK_DATA_DIR=str(data))
    key = create_service(env, "bench")["api_key"]
    _, url = start_api(children, root, "worker", env)
    worker = children.start("genhook worker", genhook_command("worker"), env, root / "worker.log")
    deadline = time.monotonic() + 120
    while f"worker process {worker.pid}: " not in worker.log_tail(200):
        if time.monotonic() > deadline or worker.proc.poll() is not None:
            raise RuntimeError(f"the worker did not start:\n{worker.log_tail()}")
        time.sleep(0.1)
    time.sleep(1.0)
    at_rest = rss_kib(worker.pid)
    reset_high_water(worker.pid)  # the start-up's own peak (imports, migrations) is not a job's
    first_peak = 0
    cpu, faults = cpu_and_faults(worker.pid)
    with RssSampler(worker.pid, interval=0.02) as rss:
        started = time.perf_counter()
        statuses = post(url, key, [trigger_body(i, PLATFORM) for i in range(jobs)], 1)
        deadline = time.monotonic() + JOB_TIMEOUT
        while (ended := sum(counts(data / "genhook.db").get(s, 0) for s in ENDED)) < jobs:
            if ended >= 1 and not first_peak:
                first_peak = high_water_kib(worker.pid)
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                raise RuntimeError(f"the jobs did not finish\n{worker.log_tail()}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu_after, faults_after = cpu_and_faults(worker.pid)
        peak_kib = high_water_kib(worker.pid)
    time.sleep(0.3)
    after = rss_kib(worker.pid)
    done = counts(data / "genhook.db")
    first_peak = first_peak or peak_kib
    pixels = renders_bytes()
    peak = mib(peak_kib)
    ok = peak < WORKER_TARGET_MIB and done.get("succeeded", 0) == jobs and statuses == {202: jobs}
    lines = [
        f"worker: {jobs} {WORKFLOW} {PLATFORM} jobs, one after another, in one `genhook worker`"
        f" ({elapsed / jobs:.2f} s, {(cpu_after - cpu) / jobs:.2f} s of CPU and"
        f" {(faults_after - faults) // jobs} minor page faults a job)",
        f"  VmRSS at rest {mib(at_rest):.0f} MiB; peak (VmHWM) over the first job"
        f" {mib(first_peak):.0f} MiB, over {jobs} jobs {peak:.0f} MiB (sampled every 20 ms:"
        f" {mib(rss.peak_kib):.0f} MiB); after the last {mib(after):.0f} MiB",
        f"  a job's renders: {mib(pixels / 1024):.0f} MiB of pixels; peak above rest"
        f" {peak - mib(at_rest):.0f} MiB = {(peak_kib - at_rest) * 1024 / pixels:.2f}x the"
        " renders",
        f"{'ok' if ok else 'FAIL'}: worker peak {peak:.0f} MiB (target < {WORKER_TARGET_MIB:.0f}"
        f" MiB); jobs {done}",
    ]
    return ok, lines


def renders_bytes() -> int:
    """The bytes of the images one social_pack job renders (3 a pixel), from the frame plan."""
    from genhook.media.aspect import plan_frames
    from genhook.nodes.targets import resolve_targets
    from genhook.presets import load_presets

    frames = plan_frames(resolve_targets(PLATFORM, load_presets()), 2048 * 2048)
    return sum(3 * f.width * f.height for f in frames)


def api_run(children: Children, root: Path, queued: int) -> tuple[bool, list[str]]:
    data = root / "api"
    env = bench_env(GENHOOK_DATA_DIR=str(data))
    key = create_service(env, "bench", ("--queue-limit", str(queued + WARMUP + 1)))["api_key"]
    pid, url = start_api(children, root, "api", env)
    warm = post(url, key, [trigger_body(i, "instagram_feed") for i in range(WARMUP)], CONCURRENCY)
    time.sleep(0.5)
    before = rss_kib(pid)
    bodies = [trigger_body(WARMUP + i, "instagram_feed") for i in range(queued)]
    with RssSampler(pid, interval=0.05) as rss:
        started = time.perf_counter()
        answered = post(url, key, bodies, CONCURRENCY)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)
    after = rss_kib(pid)
    waiting = counts(data / "genhook.db").get("queued", 0)
    growth = mib(after - before)
    ok = (
        growth < API_TARGET_MIB
        and answered == {202: queued}
        and warm == {202: WARMUP}
        and waiting == queued + WARMUP
    )
    lines = [
        f"API: `genhook serve --workers 0`, {WARMUP} warm-up triggers, then {queued} more"
        f" accepted ({queued / elapsed:.0f}/s), every job left queued ({waiting} queued)",
        f"  VmRSS before {mib(before):.0f} MiB, after {mib(after):.0f} MiB, peak meanwhile"
        f" {mib(rss.peak_kib):.0f} MiB",
        f"{'ok' if ok else 'FAIL'}: {queued} queued jobs cost the API {growth:.1f} MiB"
        f" (target < {API_TARGET_MIB:.0f} MiB); answers {answered}",
    ]
    return ok, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--queued", type=int, default=QUEUED)
    parser.add_argument("--no-api", action="store_true", help="the worker part only")
    parser.add_argument("--no-worker", action="store_true", help="the API part only")
    args = parser.parse_args()
    results: list[tuple[bool, list[str]]] = []
    with temp_root("genhook-bench-memory-") as tmp, Children() as children:
        root = Path(tmp)
        if not args.no_worker:
            results.append(worker_run(children, root, args.jobs))
        if not args.no_api:
            results.append(api_run(children, root, args.queued))
    print("memory: VmRSS from /proc (resident, shared libraries included)")
    print(machine_line())
    for _, lines in results:
        print("\n".join(lines))
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
