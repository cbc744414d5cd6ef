"""Benchmark: 200 jobs waiting on a remote engine at once, in one worker process.

* **engine**: a fake of OpenAI's images API in a process of its own on 127.0.0.1 (aiohttp, a
  listen backlog of 2048), answering every ``POST /v1/images/generations`` after SECONDS with
  one 256x256 PNG (a smooth picture). (``tests/fake_openai.py`` is a ThreadingHTTPServer with
  the standard listen backlog of 5: 200 connections at once overflow it, and some are refused.)
* **baselines**: the plainest fast clients, each in a process of its own: JOBS threads, each
  making the same HTTP call with httpx at once, and one asyncio loop making them with aiohttp;
  each one's wall time (first request sent to last answer read), peak RSS (VmHWM) and CPU
  seconds (interpreter start-up and imports included).
* **genhook**: ``genhook serve --workers 0`` (the API, SQLite in a fresh ``GENHOOK_DATA_DIR``)
  accepts JOBS triggers of a small workflow (one 256x256 image from the ``openai`` backend at
  the fake, exported to the 512x512 avatar preset); one ``genhook worker --concurrency JOBS``
  process runs them. Reported: the wall time from the first trigger sent to the last job ended,
  the worker's RSS at rest and its peak (VmHWM, reset at rest), its CPU seconds over the run,
  and its threads at most.

Exits 1 when not every job succeeded within LIMIT_FACTOR times the engine's time.

Run: ``.venv/bin/python bench/concurrency.py [--jobs 200] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    Child,
    Children,
    bench_env,
    client_session,
    create_service,
    genhook_command,
    machine_line,
    post_all,
    process_cpu,
    rss_kib,
    run_async,
    temp_root,
)
from memory import high_water_kib, reset_high_water

JOBS = 200
SECONDS = 20.0
LIMIT_FACTOR = 2.0
KEY = "sk-bench-concurrency"
ENDED = ("succeeded", "failed", "cancelled")
FLOW = """\
id: remote-bench
external_id: item_id
input:
  required: [item_id]
  properties:
    item_id: {type: string}
nodes:
  image:
    kind: generate
    with:
      backend: openai
      model: gpt-image-1
      prompt: "studio photo of item ${input.item_id}"
      width: 256
      height: 256
  export:
    kind: export
    with:
      image: ${image.image}
      platforms: avatar
outputs:
  assets:
    - ${export.assets}
"""


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def engine_server(seconds: float, port_file: str) -> None:
    """The fake engine: OpenAI's ``POST /v1/images/generations`` (Bearer key checked), answered
    after ``seconds`` with ``{"created", "data": [{"b64_json"}]}`` holding one 256x256 PNG,
    the shape https://platform.openai.com/docs/api-reference/images/create documents; aiohttp
    with a listen backlog of 2048, so that 200 connections at once are all accepted."""
    import asyncio
    import base64
    import io

    import numpy as np
    from aiohttp import web
    from PIL import Image

    # a smooth picture (a photo compresses like this, noise does not: WebP of noise costs 3x)
    ramp = np.linspace(0, 255, 256, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), -1)
    pixels = pixels.astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    flight = [0, 0]  # requests in flight now, most at once
    answer = {"created": 0, "data": [{"b64_json": base64.b64encode(out.getvalue()).decode()}]}

    async def generate(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return web.json_response({"error": {**error, "param": None, "code": None}}, status=401)
        body = await request.json()
        if not body.get("prompt"):
            error = {"message": "prompt is required", "type": "invalid_request_error"}
            return web.json_response(
                {"error": {**error, "param": "prompt", "code": None}}, status=400
            )
        flight[0] += 1
        flight[1] = max(flight[1], flight[0])
        try:
            await asyncio.sleep(seconds)
        finally:
            flight[0] -= 1
        return web.json_response(answer)

    async def most(request: web.Request) -> web.Response:
        most_at_once, flight[1] = flight[1], flight[0]  # read and start again
        return web.json_response({"most_in_flight": most_at_once})

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/v1/images/generations", generate)
        app.router.add_get("/_bench/most-in-flight", most)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0, backlog=2048)
        await site.start()
        port = runner.addresses[0][1]
        Path(port_file).write_text(str(port), encoding="ascii")
        await asyncio.Event().wait()

    asyncio.run(serve())


def start_engine(children: Children, root: Path, seconds: float) -> tuple[Child, str]:
    """The fake engine in a process of its own, answering every generation after ``seconds``;
    its base URL."""
    port_file = root / "engine.port"
    argv = [sys.executable, __file__, "--engine", str(port_file), "--seconds", f"{seconds:g}"]
    child = children.start("engine", argv, os.environ, root / "engine.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text(encoding="ascii").strip():
            return child, f"http://{HOST}:{port_file.read_text(encoding='ascii').strip()}/v1"
        if child.proc.poll() is not None:
            raise RuntimeError(f"the fake engine exited:\n{child.log_tail()}")
        time.sleep(0.1)
    raise RuntimeError("the fake engine did not start")


# the baseline ------------------------------------------------------------------------------


def baseline_client(base_url: str, jobs: int) -> None:
    """JOBS threads, one httpx POST each, all at once; prints wall, VmHWM and CPU as JSON."""
    import httpx

    body = {"model": "gpt-image-1", "prompt": "studio photo", "n": 1, "size": "256x256"}
    headers = {"Authorization": f"Bearer {KEY}"}
    ok: list[int] = []
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=jobs))
    start = threading.Barrier(jobs + 1)

    def one() -> None:
        start.wait()
        answer = client.post(f"{base_url}/images/generations", json=body, headers=headers)
        answer.read()
        if answer.status_code == 200:
            ok.append(1)

    threads = [threading.Thread(target=one) for _ in range(jobs)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "ok": len(ok),
                "wall_s": wall,
                "hwm_kib": high_water_kib(os.getpid()),
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )


def most_in_flight(base_url: str) -> int:
    """The most requests the engine has had in flight at once since the last call."""
    with urllib.request.urlopen(f"{base_url.removesuffix('/v1')}/_bench/most-in-flight") as r:
        return int(json.loads(r.read())["most_in_flight"])


def baseline_asyncio(base_url: str, jobs: int) -> None:
    """The same calls from one asyncio loop with aiohttp; prints as :func:`baseline_client`."""
    import asyncio

    import aiohttp

    body = {"model": "gpt-image-1", "prompt": "studio photo", "n": 1, "size": "256x256"}
    headers = {"Authorization": f"Bearer {KEY}"}

    async def main() -> tuple[int, float]:
        connector = aiohttp.TCPConnector(limit=jobs)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> bool:
                url = f"{base_url}/images/generations"
                async with session.post(url, json=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status == 200

            began = time.perf_counter()
            ok = await asyncio.gather(*(one() for _ in range(jobs)))
            return sum(ok), time.perf_counter() - began

    ok, wall = asyncio.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    hwm = high_water_kib(os.getpid())
    print(json.dumps({"ok": ok, "wall_s": wall, "hwm_kib": hwm, "cpu_s": cpu}))


def run_baseline(base_url: str, jobs: int, flavour: str = "threads") -> dict[str, Any]:
    argv = [sys.executable, __file__, "--baseline-client", base_url, "--jobs", str(jobs)]
    done = subprocess.run(
        [*argv, "--flavour", flavour],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the baseline failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["most_in_flight"] = most_in_flight(base_url)
    return result


# genhook -----------------------------------------------------------------------------------


def ended(db: Path) -> tuple[int, int]:
    """(jobs ended, of them succeeded), read from the SQLite file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(
            "SELECT sum(status IN ('succeeded','failed','cancelled')), "
            "sum(status = 'succeeded') FROM jobs"
        ).fetchone()
    return int(row[0] or 0), int(row[1] or 0)


def attempts_summary(db: Path) -> str:
    """How the attempts ended (outcome, error code: count) and when the jobs were first claimed
    and finished, in seconds after the first job was created."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        outcomes = conn.execute(
            "SELECT outcome, error_code, substr(error_description, 1, 80), count(*) "
            "FROM job_attempts GROUP BY 1, 2, 3"
        ).fetchall()
        claimed, last_claim, done = conn.execute(
            "SELECT min(first_claimed_at) - min(created_at), max(first_claimed_at) - "
            "min(created_at), max(finished_at) - min(created_at) FROM jobs"
        ).fetchone()
    parts = [
        f"{o or 'running'}{'/' + c if c else ''}{' (' + d + ')' if d else ''}: {n}"
        for o, c, d, n in outcomes
    ]
    return (
        f"attempts {'; '.join(parts)}; claims from {claimed or 0:.1f} s to {last_claim or 0:.1f} s,"
        f" last finished at {done or 0:.1f} s"
    )


def run_genhook(
    children: Children, root: Path, base_url: str, jobs: int, limit: float
) -> dict[str, Any]:
    data = root / "data"
    flows = root / "flows"
    flows.mkdir()
    (flows / "remote-bench.yaml").write_text(FLOW, encoding="utf-8")
    env = bench_env(
        GENHOOK_DATA_DIR=str(data),
        GENHOOK_WORKFLOWS_DIR=str(flows),
        GENHOOK_OPENAI_BASE_URL=base_url,
        GENHOOK_OPENAI_API_KEY=KEY,
        GENHOOK_POLL_SECONDS="1",
    )
    api, port = children.serve("api", env, root / "api.log", workers=0)
    service = create_service(env)
    worker = children.start(
        "worker", genhook_command("worker", "--concurrency", str(jobs)), env, root / "worker.log"
    )
    # at rest: started, its catalog and backends built (its log says so), no job yet
    deadline = time.monotonic() + 120
    while "worker process" not in worker.log_tail(50):
        if worker.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{worker.log_tail()}")
        time.sleep(0.2)
    time.sleep(1.0)
    rest_kib = rss_kib(worker.pid)
    reset_high_water(worker.pid)
    cpu_before = process_cpu(worker.pid)
    most_threads = threads_of(worker.pid)
    url = f"http://{HOST}:{port}/v1/workflows/remote-bench/runs"
    bodies = [json.dumps({"item_id": f"item-{i:05d}"}).encode() for i in range(jobs)]
    headers = {"Authorization": f"Bearer {service['api_key']}", "Content-Type": "application/json"}

    async def post() -> Any:
        async with client_session(64) as session:
            return await post_all(session, url, bodies, headers=headers, concurrency=64)

    began = time.perf_counter()
    accepted = run_async(post)
    accept_s = time.perf_counter() - began
    db = data / "genhook.db"
    done = succeeded = 0
    while time.perf_counter() - began < limit + 30:
        most_threads = max(most_threads, threads_of(worker.pid))
        done, succeeded = ended(db)
        if done >= jobs:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - began
    result = {
        "accepted": accepted.statuses.get(202, 0),
        "accept_s": accept_s,
        "ended": done,
        "succeeded": succeeded,
        "wall_s": wall,
        "rest_kib": rest_kib,
        "hwm_kib": high_water_kib(worker.pid),
        "cpu_s": process_cpu(worker.pid) - cpu_before,
        "threads": most_threads,
        "attempts": attempts_summary(db),
        "most_in_flight": most_in_flight(base_url),
    }
    api.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--baseline-client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--flavour", default="threads", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        engine_server(args.seconds, args.engine)
        return 0
    if args.baseline_client:
        client = baseline_asyncio if args.flavour == "asyncio" else baseline_client
        client(args.baseline_client, args.jobs)
        return 0
    limit = LIMIT_FACTOR * args.seconds
    print(machine_line())
    with temp_root("genhook-bench-concurrency-") as tmp, Children() as children:
        root = Path(tmp)
        _, base_url = start_engine(children, root, args.seconds)
        base = run_baseline(base_url, args.jobs)
        print(
            f"baseline: {args.jobs} threads x 1 httpx call ({args.seconds:g} s each): "
            f"{base['ok']} ok in {base['wall_s']:.1f} s, peak RSS {base['hwm_kib'] / 1024:.1f} "
            f"MiB, CPU {base['cpu_s']:.2f} s; the engine had {base['most_in_flight']} in flight "
            "at most"
        )
        aio = run_baseline(base_url, args.jobs, "asyncio")
        print(
            f"baseline: 1 asyncio loop x {args.jobs} aiohttp calls: {aio['ok']} ok in "
            f"{aio['wall_s']:.1f} s, peak RSS {aio['hwm_kib'] / 1024:.1f} MiB, CPU "
            f"{aio['cpu_s']:.2f} s"
        )
        got = run_genhook(children, root, base_url, args.jobs, limit)
    print(
        f"genhook worker --concurrency {args.jobs}: {got['accepted']} accepted in "
        f"{got['accept_s']:.1f} s; {got['succeeded']}/{args.jobs} succeeded, all ended in "
        f"{got['wall_s']:.1f} s (engine {args.seconds:g} s, limit {limit:g} s); RSS at rest "
        f"{got['rest_kib'] / 1024:.1f} MiB, peak {got['hwm_kib'] / 1024:.1f} MiB; CPU "
        f"{got['cpu_s']:.2f} s ({1000 * got['cpu_s'] / max(1, args.jobs):.1f} ms a job); "
        f"threads at most {got['threads']}"
    )
    print(f"{got['attempts']}; the engine had {got['most_in_flight']} in flight at most")
    print(
        f"against the baseline: wall {got['wall_s'] / base['wall_s']:.2f}x, CPU "
        f"{got['cpu_s'] / max(base['cpu_s'], 1e-6):.1f}x"
    )
    if got["succeeded"] < args.jobs or got["wall_s"] > limit:
        print(f"FAIL: not every job succeeded within {limit:g} s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
