"""Benchmark: 1,000 triggers end to end through a real ``genhook serve --workers 2``.

Each trigger goes the whole way: ``POST /v1/workflows/bench-avatar/runs`` (202), a worker claims
the job, runs the workflow (style preset, prompt, a 256x256 procedural generation, quality check,
metadata, export to the ``avatar`` preset: 512x512 WebP), stores the asset, ends the job, and the
outbox POSTs the signed completion payload to the job's ``callback_url``: a receiver in this
process (aiohttp, 127.0.0.1) that answers 200, checks every signature with the
``standardwebhooks`` library and records when each job id arrives.

Measured for the service:

* jobs/s: JOBS / (last callback received - first trigger sent);
* trigger-to-callback latency per job (callback arrival - trigger send), p50 and p99;
* peak memory: the largest summed VmRSS of the server's process tree, sampled every 100 ms;
* every job id must be called back exactly once, with a valid signature and ``status: success``.

Before the burst, on the idle service, SOLO (50) triggers one after the other, each sent when the
previous one was called back: genhook's own share of each one's latency, trigger-to-callback
minus the job's work (its ``processing_time_seconds``), p50 and p99, against the targets (p50
under 20 ms, p99 under 100 ms), and where it goes, from the store's timestamps: accept (trigger
sent to the job's ``created_at``), hand-off (to its claim), finish (the work's end to the
finishing transaction), to the outbox (to the delivery's first attempt) and the POST (to its
arrival at the receiver). ``--solo-only`` measures that alone (no burst, no burst baseline);
``--size`` renders larger images (2048: the product image's size).

Baseline in the same run: the same JOBS inputs through the same workflow with no service at all:
``Engine.load(...)`` then ``engine.execute(workflow, body, DirectorySink(dir))`` on 2 threads
(the service's worker count), in a subprocess of its own (``--baseline-run``) so that its memory
is measured the same way. That is the pure generation + QC + export (+ file write) cost; the ratio
service / baseline jobs/s is what the queue, HTTP, database and callbacks cost on top. Order:
baseline, service, baseline; the baseline's figure is the mean of its two runs. Both warm up on
WARMUP jobs first (imports, caches), not counted. Before them, the SOLO sequential inputs through
the engine alone on one thread: the engine's CPU time and duration per job that the sequential
triggers' figures stand beside (server CPU per job above the engine's is the orchestration's).

Exits 1 when a callback is missing, duplicated, badly signed or not a success, or when genhook's
own share of the sequential triggers misses its targets (the burst's ratio has no target yet: it
is reported). Run: ``make bench`` or
``.venv/bin/python bench/e2e.py [--jobs N] [--solo N] [--solo-only] [--size PX]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from _common import (
    HOST,
    Children,
    RssSampler,
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
    tree_pids,
)

WORKFLOW = "bench-avatar"
JOBS = 1000
WARMUP = 4
SOLO = 50  # one-at-a-time jobs on the idle service: genhook's own share of the latency
OWN_P50 = 0.020  # targets for that share (seconds)
OWN_P99 = 0.100
WORKERS = 2
CONCURRENCY = 32
CALLBACK_TIMEOUT = 600.0  # give up waiting for callbacks after this long
GRACE = 2.0  # after the last expected callback, wait this long for duplicates

# The shape of workflows/product-image.yaml, small: 256x256 generate, QC at 256, avatar export.
TEMPLATE = """\
id: bench-avatar
version: 1
description: >
  Benchmark workflow: product-image's nodes at 256x256, exported to the avatar preset only.
external_id: product_id

input:
  required: [product_id, product_name, target_style]
  properties:
    product_id: {type: string, minLength: 1, maxLength: 64}
    product_name: {type: string, minLength: 1, maxLength: 120}
    product_category: {type: string, maxLength: 80, default: ""}
    product_description: {type: string, maxLength: 2000, default: ""}
    target_style:
      x-enum-from: styles

nodes:
  style:
    kind: style_preset
    with:
      style: ${input.target_style}

  prompt:
    kind: prompt_builder
    with:
      template: >
        Product photograph of {{ input.product_name }}
        {%- if input.product_category %}, {{ input.product_category }}{% endif %},
        {{ style.prompt }}, {{ style.lighting | replace('_', ' ') }} lighting, {{ style.camera }}
      negative_template: "blurry, low resolution, watermark, deformed product"
      vars:
        style: ${style.preset}

  image:
    kind: generate
    with:
      backend: procedural
      model: procedural-v1
      prompt: ${prompt.prompt}
      negative_prompt: ${prompt.negative_prompt}
      subject: ${input.product_name}
      style: ${style.preset}
      width: 256
      height: 256

  qc:
    kind: quality_check
    with:
      result: ${image.result}
      min_width: 256
      min_height: 256
      faces: ignore
      max_retries: 2
      on_fail: deliver_with_warning

  seo:
    kind: metadata
    with:
      alt_text: >
        {{ input.product_name }}{% if input.product_category %}
        ({{ input.product_category }}){% endif %}
        in a {{ style.label | lower }} product shot
      caption: >
        {{ input.product_name }}{% if input.product_description %}:
        {{ input.product_description }}{% endif %}
      filename: "{{ input.product_id }} {{ input.product_name }}"
      vars:
        style: ${style.preset}

  export:
    kind: export
    with:
      image: ${qc.image}
      platforms: avatar
      seo: ${seo.seo}

outputs:
  assets:
    - ${export.assets}
  seo: ${seo.seo}
"""

STYLES = ("lifestyle", "studio_white")


def trigger(i: int) -> dict[str, Any]:
    """The i-th input: distinct ids and names, so every job renders a different image."""
    return {
        "product_id": f"SKU-{i:06d}",
        "product_name": f"Linen Shirt {i}",
        "product_category": "menswear",
        "product_description": "Breathable washed-linen shirt with a relaxed fit.",
        "target_style": STYLES[i % len(STYLES)],
    }


# the baseline: the engine alone, in a subprocess -------------------------------------------


def baseline_run(
    workflows: Path, out: Path, jobs: int, warmup: int, threads: int
) -> dict[str, Any]:
    """WARMUP then JOBS inputs through ``Engine.execute`` on ``threads``; timings as JSON."""
    from genhook.engine import Engine
    from genhook.sinks import DirectorySink

    engine = Engine.load(workflows)
    workflow = engine.workflow(WORKFLOW)
    sink = DirectorySink(out)

    def one(i: int) -> tuple[float, str]:
        started = time.perf_counter()
        outcome = engine.execute(workflow, trigger(i), sink)
        return time.perf_counter() - started, outcome.payload.status

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(jobs, jobs + warmup)))  # warm-up: other ids than the timed ones
        cpu = time.process_time()
        started = time.perf_counter()
        done = list(pool.map(one, range(jobs)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return {
        "elapsed": elapsed,
        "cpu": cpu,
        "job_seconds": [seconds for seconds, _ in done],
        "ok": sum(status == "success" for _, status in done),
    }


@dataclass
class BaselineResult:
    rate: float
    cpu_per_job: float
    job_p50: float
    ok: int
    peak_kib: int


def run_baseline(
    children: Children, root: Path, workflows: Path, jobs: int, n: int, threads: int = WORKERS
) -> BaselineResult:
    out = root / f"baseline-{n}"
    argv = [str(workflows), str(out), str(jobs), str(threads)]
    child = children.start(
        f"baseline {n}",
        [sys.executable, __file__, "--baseline-run", *argv],
        bench_env(),
        root / f"baseline-{n}.log",
    )
    with RssSampler(child.pid) as rss:
        code = child.proc.wait()
    if code != 0:
        raise RuntimeError(f"baseline run failed ({code}):\n{child.log_tail()}")
    lines = child.log.read_text(encoding="utf-8").splitlines()
    result = json.loads(lines[-1])
    return BaselineResult(
        rate=jobs / result["elapsed"],
        cpu_per_job=result["cpu"] / jobs,
        job_p50=percentile(result["job_seconds"], 50),
        ok=result["ok"],
        peak_kib=rss.peak_kib,
    )


# the service run ---------------------------------------------------------------------------


@dataclass
class Receiver:
    """Callbacks received: arrival times per job id, signature failures, non-success payloads."""

    secret: str
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    wall_arrivals: dict[str, float] = field(default_factory=dict)  # time.time(), the first
    bad_signatures: int = 0
    not_success: dict[str, Any] = field(default_factory=dict)
    work_seconds: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived, wall = time.perf_counter(), time.time()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=200)  # counted; do not make genhook retry it
        job_id = payload["job_id"]
        self.arrivals.setdefault(job_id, []).append(arrived)
        self.wall_arrivals.setdefault(job_id, wall)
        if payload.get("status") != "success" or len(payload.get("outputs") or []) != 1:
            self.not_success[job_id] = payload.get("error") or payload.get("status")
        self.work_seconds[job_id] = float(payload["metadata"]["processing_time_seconds"])
        self.changed.set()
        return web.Response(status=200)

    async def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while not ids.issubset(self.arrivals):
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
        return True


@dataclass
class Solo:
    """One trigger sent on the idle service, and when it was called back (wall clock)."""

    job_id: str
    sent: float
    arrived: float
    work: float  # its processing_time_seconds

    @property
    def own(self) -> float:
        return self.arrived - self.sent - self.work


# the stages of genhook's own share, from the store's timestamps: (name, what it spans)
STAGES = (
    ("accept", "trigger sent to the job's created_at"),
    ("hand-off", "created_at to its claim"),
    ("finish", "the claim plus its work to finished_at"),
    ("to outbox", "finished_at to the first delivery attempt"),
    ("POST", "the attempt to its arrival"),
)


@dataclass
class SoloResult:
    """The sequential triggers: genhook's own share of each, and its stages (seconds)."""

    jobs: list[Solo]
    stages: dict[str, list[float]]
    cpu_per_job: float  # the server's CPU time per sequential job
    worker_cpu_per_job: float  # the part of it in the worker processes

    @property
    def own(self) -> list[float]:
        return [s.own for s in self.jobs]


def split_cpu(root: int, workers: list[int]) -> tuple[float, float]:
    """CPU seconds so far of the whole server tree, and of its worker processes."""
    return cpu_seconds(root), sum(cpu_seconds(pid) for pid in workers)


def job_times(db: Path, ids: list[str]) -> list[tuple[float, float, float, float]]:
    """Per job: its created_at, first_claimed_at, finished_at and first delivery attempt."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [
            conn.execute(
                "SELECT j.created_at, j.first_claimed_at, j.finished_at, min(a.at)"
                " FROM jobs j JOIN deliveries d ON d.job_id = j.id"
                " JOIN delivery_attempts a ON a.delivery_id = d.id WHERE j.id = ?",
                (job_id,),
            ).fetchone()
            for job_id in ids
        ]


def solo_stages(db: Path, jobs: list[Solo]) -> dict[str, list[float]]:
    """Each stage of each sequential job, from the job's and its first attempt's timestamps."""
    stages: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for solo, times in zip(jobs, job_times(db, [s.job_id for s in jobs]), strict=True):
        created, claimed, finished, attempted = times
        spans = (
            created - solo.sent,
            claimed - created,
            finished - claimed - solo.work,
            attempted - finished,
            solo.arrived - attempted,
        )
        for (name, _), span in zip(STAGES, spans, strict=True):
            stages[name].append(span)
    return stages


@dataclass
class ServiceResult:
    rate: float
    burst: float  # seconds to get all triggers answered
    cpu_per_job: float  # the server's CPU time per job, first trigger to last callback
    bench_cpu_per_job: float  # this process's (load generator, receiver) CPU time per job
    p50: float
    p99: float
    work_p50: float
    to_outbox: list[float]  # each burst job's end (finished_at) to its first delivery attempt
    solo: SoloResult
    idle_kib: int
    peak_kib: int
    sent: int
    accepted: int
    received: int
    problems: list[str]
    db: dict[str, int]


def run_service(
    children: Children, root: Path, workflows: Path, jobs: int, solo: int
) -> ServiceResult:
    """Warm-up, ``solo`` sequential triggers, then ``jobs`` triggers at once (none: 0)."""
    data_dir = root / "service"
    env = bench_env(
        GENHOOK_DATA_DIR=str(data_dir),
        GENHOOK_WORKFLOWS_DIR=str(workflows),
        GENHOOK_ALLOW_PRIVATE_CALLBACKS="true",
    )
    service = create_service(env)
    server, port = children.serve("genhook serve", env, root / "service.log", workers=WORKERS)
    url = f"http://{HOST}:{port}/v1/workflows/{WORKFLOW}/runs"
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {service['api_key']}",
    }
    receiver = Receiver(service["webhook_secret"])
    problems: list[str] = []

    def bodies(indices: range, callback: str) -> list[bytes]:
        return [json.dumps({**trigger(i), "callback_url": callback}).encode() for i in indices]

    cpu: dict[str, float] = {}
    solos: list[Solo] = []  # one job at a time on the idle service

    async def drive() -> tuple[Any, float, float, int]:
        app = web.Application()
        app.router.add_post("/callback", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        callback_port = free_port()
        await web.TCPSite(runner, HOST, callback_port).start()
        callback = f"http://{HOST}:{callback_port}/callback"
        try:
            async with client_session(CONCURRENCY) as session:
                warm = await post_all(
                    session,
                    url,
                    bodies(range(jobs, jobs + WARMUP), callback),
                    headers=headers,
                    concurrency=CONCURRENCY,
                )
                warm_ids = {a.body["job_id"] for a in warm.answers if a.status == 202}
                if len(warm_ids) != WARMUP or not await receiver.wait_for(warm_ids, 120):
                    raise RuntimeError(f"warm-up failed:\n{server.log_tail()}")
                first_solo = jobs + WARMUP
                workers = tree_pids(server.pid)[1:]
                cpu["solo"], cpu["solo_workers"] = split_cpu(server.pid, workers)
                for body in bodies(range(first_solo, first_solo + solo), callback):
                    sent = time.time()
                    async with session.post(url, data=body, headers=headers) as answer:
                        job_id = (await answer.json())["job_id"]
                    if not await receiver.wait_for({job_id}, 60):
                        raise RuntimeError(f"solo job lost:\n{server.log_tail()}")
                    work = receiver.work_seconds[job_id]
                    solos.append(Solo(job_id, sent, receiver.wall_arrivals[job_id], work))
                total, in_workers = split_cpu(server.pid, workers)
                cpu["solo"] = (total - cpu["solo"]) / max(1, solo)
                cpu["solo_workers"] = (in_workers - cpu["solo_workers"]) / max(1, solo)
                idle = rss.last_kib
                cpu["server"], cpu["bench"] = cpu_seconds(server.pid), time.process_time()
                result = await post_all(
                    session,
                    url,
                    bodies(range(jobs), callback),
                    headers=headers,
                    concurrency=CONCURRENCY,
                )
                if not jobs:
                    await asyncio.sleep(GRACE)  # anything arriving now is a duplicate
                    return result, 0.0, 0.0, idle
            ids = {a.body["job_id"] for a in result.answers if a.status == 202}
            complete = await receiver.wait_for(ids, CALLBACK_TIMEOUT)
            cpu["server"] = cpu_seconds(server.pid) - cpu["server"]
            cpu["bench"] = time.process_time() - cpu["bench"]
            last = max((receiver.arrivals[i][0] for i in ids if i in receiver.arrivals), default=0)
            if not complete:
                problems.append(f"callbacks missing after {CALLBACK_TIMEOUT:.0f} s")
            await asyncio.sleep(GRACE)  # anything arriving now is a duplicate
            return result, min(a.sent for a in result.answers), last, idle
        finally:
            await runner.cleanup()

    with RssSampler(server.pid) as rss:
        result, first_sent, last_arrival, idle_kib = run_async(drive)
    server.stop()
    for status, n in result.statuses.items():
        if status != 202:
            problems.append(f"{n} triggers answered {status}")
    sent_at = {a.body["job_id"]: a.sent for a in result.answers if a.status == 202}
    latencies = [receiver.arrivals[j][0] - t for j, t in sent_at.items() if j in receiver.arrivals]
    missing = [j for j in sent_at if j not in receiver.arrivals]
    duplicated = [j for j, times in receiver.arrivals.items() if len(times) > 1]
    stray = [j for j in receiver.arrivals if j not in sent_at]
    if missing:
        problems.append(f"{len(missing)} jobs never called back, e.g. {missing[:3]}")
    if duplicated:
        problems.append(f"{len(duplicated)} jobs called back more than once")
    if len(stray) != WARMUP + solo:
        problems.append(f"{len(stray) - WARMUP - solo} callbacks for unknown job ids")
    if receiver.bad_signatures:
        problems.append(f"{receiver.bad_signatures} callbacks with a bad signature")
    if receiver.not_success:
        sample = list(receiver.not_success.items())[:3]
        problems.append(f"{len(receiver.not_success)} callbacks not a success: {sample}")
    with sqlite3.connect(f"file:{data_dir / 'genhook.db'}?mode=ro", uri=True) as conn:
        db = {
            "succeeded": conn.execute("SELECT count(*) FROM jobs WHERE status='succeeded'"),
            "delivered": conn.execute("SELECT count(*) FROM deliveries WHERE status='delivered'"),
            "attempts": conn.execute("SELECT count(*) FROM delivery_attempts"),
        }
        counts = {k: int(v.fetchone()[0]) for k, v in db.items()}
    work = [receiver.work_seconds[j] for j in sent_at if j in receiver.work_seconds]
    called = [j for j in sent_at if j in receiver.arrivals]
    ended = job_times(data_dir / "genhook.db", called)
    return ServiceResult(
        rate=len(latencies) / (last_arrival - first_sent) if latencies else 0.0,
        burst=result.elapsed,
        cpu_per_job=cpu["server"] / max(1, len(latencies)),
        bench_cpu_per_job=cpu["bench"] / max(1, len(latencies)),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        work_p50=percentile(work, 50),
        to_outbox=[attempted - finished for _, _, finished, attempted in ended],
        solo=SoloResult(
            solos, solo_stages(data_dir / "genhook.db", solos), cpu["solo"], cpu["solo_workers"]
        ),
        idle_kib=idle_kib,
        peak_kib=rss.peak_kib,
        sent=len(result.answers),
        accepted=len(sent_at),
        received=len(latencies),
        problems=problems,
        db=counts,
    )


def solo_lines(solo: SoloResult, base: BaselineResult) -> tuple[list[str], list[str]]:
    """The sequential triggers' lines, and the targets they miss."""
    own = solo.own
    base_cpu = base.cpu_per_job
    p50, p99 = percentile(own, 50), percentile(own, 99)
    work = percentile([s.work for s in solo.jobs], 50)
    total = percentile([s.arrived - s.sent for s in solo.jobs], 50)
    cpu = (
        f"server CPU {solo.cpu_per_job * 1000:.0f} ms/job (workers"
        f" {solo.worker_cpu_per_job * 1000:.0f}) against the engine's"
        f" {base_cpu * 1000:.0f} ms/job alone (+{(solo.cpu_per_job - base_cpu) * 1000:.0f} ms"
        f" of orchestration); the job's work p50 {work * 1000:.0f} ms, the engine's alone"
        f" {base.job_p50 * 1000:.0f} ms; trigger-to-callback p50 {total * 1000:.0f} ms"
        f" (+{(total - base.job_p50) * 1000:.0f} ms on the engine's alone)"
    )
    lines = [
        f"idle service, {len(own)} triggers one after the other: trigger-to-callback minus the"
        f" job's work (genhook's own share: HTTP, queue hand-off, store, delivery) p50"
        f" {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(own) * 1000:.1f} ms"
        f" (targets {OWN_P50 * 1000:.0f} / {OWN_P99 * 1000:.0f} ms); {cpu}",
        "  where it goes (p50 / p99 / max ms):",
    ]
    for name, what in STAGES:
        spans = solo.stages[name]
        figures = (percentile(spans, 50), percentile(spans, 99), max(spans))
        lines.append(
            f"    {name:<10} " + " ".join(f"{x * 1000:6.1f}" for x in figures) + f"  {what}"
        )
    misses = []
    if p50 >= OWN_P50:
        misses.append(f"own share p50 {p50 * 1000:.1f} ms, target under {OWN_P50 * 1000:.0f} ms")
    if p99 >= OWN_P99:
        misses.append(f"own share p99 {p99 * 1000:.1f} ms, target under {OWN_P99 * 1000:.0f} ms")
    return lines, misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS, help="triggers in the burst")
    parser.add_argument("--solo", type=int, default=SOLO, help="sequential triggers")
    parser.add_argument(
        "--solo-only", action="store_true", help="the sequential triggers alone (no burst)"
    )
    parser.add_argument("--size", type=int, default=256, help="the generated image's side")
    parser.add_argument(
        "--baseline-run",
        nargs=4,
        metavar=("WORKFLOWS", "OUT", "JOBS", "THREADS"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.baseline_run:
        workflows, out, jobs, threads = args.baseline_run
        done = baseline_run(Path(workflows), Path(out), int(jobs), WARMUP, int(threads))
        print(json.dumps(done))
        return 0

    jobs = 0 if args.solo_only else args.jobs
    size = args.size
    with temp_root("genhook-bench-e2e-") as tmp, Children() as children:
        root = Path(tmp)
        workflows = root / "workflows"
        workflows.mkdir()
        template = TEMPLATE.replace("256", str(size))
        (workflows / f"{WORKFLOW}.yaml").write_text(template, encoding="utf-8")
        # the engine alone, one job at a time like the sequential triggers
        alone = run_baseline(children, root, workflows, args.solo, 0, threads=1)
        bases = [run_baseline(children, root, workflows, jobs, 1)] if jobs else []
        svc = run_service(children, root, workflows, jobs, args.solo)
        if jobs:
            bases.append(run_baseline(children, root, workflows, jobs, 2))

    print(
        f"e2e: {jobs} triggers through {WORKFLOW} ({size}x{size} procedural generate, QC,"
        f" metadata, 512x512 WebP avatar export), {WORKERS} workers, {CONCURRENCY} triggers in"
        f" flight, after {args.solo} one after the other; callbacks to a local receiver"
    )
    print(machine_line() + "; load generator and receiver in this process, sharing the cores")
    lines, problems = solo_lines(svc.solo, alone)
    if jobs:
        print(
            f"service:  {svc.rate:6.1f} jobs/s, trigger-to-callback p50 {svc.p50:.2f} s,"
            f" p99 {svc.p99:.2f} s; per-job work (processing_time_seconds) p50"
            f" {svc.work_p50 * 1000:.0f} ms, its end to the first delivery attempt p50"
            f" {percentile(svc.to_outbox, 50) * 1000:.1f} ms, p99"
            f" {percentile(svc.to_outbox, 99) * 1000:.1f} ms;"
            f" server CPU {svc.cpu_per_job * 1000:.0f} ms/job"
            f" (+ {svc.bench_cpu_per_job * 1000:.0f} ms/job in this process);"
            f" RSS idle {svc.idle_kib / 1024:.0f} MiB, peak {svc.peak_kib / 1024:.0f} MiB"
        )
    print("\n".join(lines))
    for n, b in enumerate(bases, 1):
        print(
            f"baseline {n}: {b.rate:6.1f} jobs/s, per-job execute p50 {b.job_p50 * 1000:.0f} ms,"
            f" CPU {b.cpu_per_job * 1000:.0f} ms/job, peak RSS {b.peak_kib / 1024:.0f} MiB,"
            f" {b.ok}/{jobs} succeeded"
        )
    burst = (
        f"{svc.accepted}/{svc.sent} triggers answered 202 (in {svc.burst:.1f} s),"
        f" {svc.received} called back once each"
        if jobs
        else f"{len(svc.solo.jobs)} sequential triggers called back once each"
    )
    print(
        f"checks: {burst} with a valid signature; database: {svc.db['succeeded']} jobs succeeded"
        f" (warm-up included), {svc.db['delivered']} deliveries delivered in"
        f" {svc.db['attempts']} attempts"
    )
    problems += svc.problems
    problems += [
        f"baseline {n}: {b.ok}/{jobs} succeeded" for n, b in enumerate(bases, 1) if b.ok != jobs
    ]
    if alone.ok != args.solo:
        problems.append(f"the engine alone: {alone.ok}/{args.solo} succeeded")
    for problem in problems:
        print(f"FAIL: {problem}")
    verdict = "FAIL" if problems else "ok"
    if not jobs:
        print(f"{verdict}: sequential triggers only (--solo-only)")
        return 1 if problems else 0
    base_rate = sum(b.rate for b in bases) / len(bases)
    ratio = svc.rate / base_rate
    print(
        f"{verdict}: service / baseline = {ratio:.2f}x"
        f" ({svc.rate:.1f} / {base_rate:.1f} jobs/s; no target set, the ratio is reported)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
