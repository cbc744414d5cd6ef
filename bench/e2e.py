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

Baseline in the same run: the same JOBS inputs through the same workflow with no service at all:
``Engine.load(...)`` then ``engine.execute(workflow, body, DirectorySink(dir))`` on 2 threads
(the service's worker count), in a subprocess of its own (``--baseline-run``) so that its memory
is measured the same way. That is the pure generation + QC + export (+ file write) cost; the ratio
service / baseline jobs/s is what the queue, HTTP, database and callbacks cost on top. Order:
baseline, service, baseline; the baseline's figure is the mean of its two runs. Both warm up on
WARMUP jobs first (imports, caches), not counted.

Exits 1 when a callback is missing, duplicated, badly signed or not a success (the ratio has no
target yet: it is reported). Run: ``make bench`` or ``.venv/bin/python bench/e2e.py [--jobs N]``.
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
    genhook_command,
    machine_line,
    percentile,
    post_all,
    run_async,
    temp_root,
)

WORKFLOW = "bench-avatar"
JOBS = 1000
WARMUP = 4
SOLO = 20  # one-at-a-time jobs on the idle service: genhook's own share of the latency
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


def baseline_run(workflows: Path, out: Path, jobs: int, warmup: int) -> dict[str, Any]:
    """WARMUP then JOBS inputs through ``Engine.execute`` on WORKERS threads; timings as JSON."""
    from genhook.engine import Engine
    from genhook.sinks import DirectorySink

    engine = Engine.load(workflows)
    workflow = engine.workflow(WORKFLOW)
    sink = DirectorySink(out)

    def one(i: int) -> tuple[float, str]:
        started = time.perf_counter()
        outcome = engine.execute(workflow, trigger(i), sink)
        return time.perf_counter() - started, outcome.payload.status

    with ThreadPoolExecutor(WORKERS) as pool:
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
    children: Children, root: Path, workflows: Path, jobs: int, n: int
) -> BaselineResult:
    out = root / f"baseline-{n}"
    child = children.start(
        f"baseline {n}",
        [sys.executable, __file__, "--baseline-run", str(workflows), str(out), str(jobs)],
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
    bad_signatures: int = 0
    not_success: dict[str, Any] = field(default_factory=dict)
    work_seconds: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.perf_counter()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=200)  # counted; do not make genhook retry it
        job_id = payload["job_id"]
        self.arrivals.setdefault(job_id, []).append(arrived)
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
class ServiceResult:
    rate: float
    burst: float  # seconds to get all triggers answered
    cpu_per_job: float  # the server's CPU time per job, first trigger to last callback
    bench_cpu_per_job: float  # this process's (load generator, receiver) CPU time per job
    p50: float
    p99: float
    work_p50: float
    own_p50: float  # one job on an idle service: latency minus its processing time
    own_max: float
    idle_kib: int
    peak_kib: int
    sent: int
    accepted: int
    received: int
    problems: list[str]
    db: dict[str, int]


def run_service(children: Children, root: Path, workflows: Path, jobs: int) -> ServiceResult:
    data_dir = root / "service"
    env = bench_env(
        GENHOOK_DATA_DIR=str(data_dir),
        GENHOOK_WORKFLOWS_DIR=str(workflows),
        GENHOOK_ALLOW_PRIVATE_CALLBACKS="true",
    )
    service = create_service(env)
    port = free_port()
    server = children.start(
        "genhook serve",
        genhook_command("serve", "--port", str(port), "--workers", str(WORKERS)),
        env,
        root / "service.log",
    )
    server.wait_http(f"http://{HOST}:{port}/healthz")
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
    own: list[float] = []  # trigger-to-callback minus the job's own work, one job at a time

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
                for body in bodies(range(first_solo, first_solo + SOLO), callback):
                    sent = time.perf_counter()
                    async with session.post(url, data=body, headers=headers) as answer:
                        job_id = (await answer.json())["job_id"]
                    if not await receiver.wait_for({job_id}, 60):
                        raise RuntimeError(f"solo job lost:\n{server.log_tail()}")
                    total = receiver.arrivals[job_id][0] - sent
                    own.append(total - receiver.work_seconds[job_id])
                idle = rss.last_kib
                cpu["server"], cpu["bench"] = cpu_seconds(server.pid), time.process_time()
                result = await post_all(
                    session,
                    url,
                    bodies(range(jobs), callback),
                    headers=headers,
                    concurrency=CONCURRENCY,
                )
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
    if len(stray) != WARMUP + SOLO:
        problems.append(f"{len(stray) - WARMUP - SOLO} callbacks for unknown job ids")
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
    return ServiceResult(
        rate=len(latencies) / (last_arrival - first_sent) if latencies else 0.0,
        burst=result.elapsed,
        cpu_per_job=cpu["server"] / max(1, len(latencies)),
        bench_cpu_per_job=cpu["bench"] / max(1, len(latencies)),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        work_p50=percentile(work, 50),
        own_p50=percentile(own, 50),
        own_max=max(own),
        idle_kib=idle_kib,
        peak_kib=rss.peak_kib,
        sent=len(result.answers),
        accepted=len(sent_at),
        received=len(latencies),
        problems=problems,
        db=counts,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument(
        "--baseline-run", nargs=3, metavar=("WORKFLOWS", "OUT", "JOBS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.baseline_run:
        workflows, out, jobs = args.baseline_run
        print(json.dumps(baseline_run(Path(workflows), Path(out), int(jobs), WARMUP)))
        return 0

    jobs = args.jobs
    with temp_root("genhook-bench-e2e-") as tmp, Children() as children:
        root = Path(tmp)
        workflows = root / "workflows"
        workflows.mkdir()
        (workflows / f"{WORKFLOW}.yaml").write_text(TEMPLATE, encoding="utf-8")
        base1 = run_baseline(children, root, workflows, jobs, 1)
        svc = run_service(children, root, workflows, jobs)
        base2 = run_baseline(children, root, workflows, jobs, 2)

    base_rate = (base1.rate + base2.rate) / 2
    print(
        f"e2e: {jobs} triggers through {WORKFLOW} (256x256 procedural generate, QC, metadata,"
        f" 512x512 WebP avatar export), {WORKERS} workers, {CONCURRENCY} triggers in flight,"
        f" callbacks to a local receiver"
    )
    print(machine_line() + "; load generator and receiver in this process, sharing the cores")
    print(
        f"service:  {svc.rate:6.1f} jobs/s, trigger-to-callback p50 {svc.p50:.2f} s,"
        f" p99 {svc.p99:.2f} s; per-job work (processing_time_seconds) p50"
        f" {svc.work_p50 * 1000:.0f} ms; server CPU {svc.cpu_per_job * 1000:.0f} ms/job"
        f" (+ {svc.bench_cpu_per_job * 1000:.0f} ms/job in this process);"
        f" RSS idle {svc.idle_kib / 1024:.0f} MiB, peak {svc.peak_kib / 1024:.0f} MiB"
    )
    print(
        f"idle service, {SOLO} jobs one at a time: trigger-to-callback minus the job's work"
        f" (genhook's own share: HTTP, queue hand-off, store, delivery) p50"
        f" {svc.own_p50 * 1000:.1f} ms, max {svc.own_max * 1000:.1f} ms"
    )
    for n, b in ((1, base1), (2, base2)):
        print(
            f"baseline {n}: {b.rate:6.1f} jobs/s, per-job execute p50 {b.job_p50 * 1000:.0f} ms,"
            f" CPU {b.cpu_per_job * 1000:.0f} ms/job, peak RSS {b.peak_kib / 1024:.0f} MiB,"
            f" {b.ok}/{jobs} succeeded"
        )
    print(
        f"checks: {svc.accepted}/{svc.sent} triggers answered 202 (in {svc.burst:.1f} s),"
        f" {svc.received} called back once"
        f" each with a valid signature; database: {svc.db['succeeded']} jobs succeeded,"
        f" {svc.db['delivered']} deliveries delivered in {svc.db['attempts']} attempts"
    )
    problems = list(svc.problems)
    problems += [
        f"baseline {n}: {b.ok}/{jobs} succeeded"
        for n, b in ((1, base1), (2, base2))
        if b.ok != jobs
    ]
    for problem in problems:
        print(f"FAIL: {problem}")
    ratio = svc.rate / base_rate
    verdict = "FAIL" if problems else "ok"
    print(
        f"{verdict}: service / baseline = {ratio:.2f}x"
        f" ({svc.rate:.1f} / {base_rate:.1f} jobs/s; no target set, the ratio is reported)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
