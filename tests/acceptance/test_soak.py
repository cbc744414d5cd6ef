"""The soak (SQLite and PostgreSQL): a steady stream of triggers through `genhook serve` with two
worker processes and real callbacks, every process's RSS and open file descriptors sampled
every 2 s. After the warm-up (the first fifth of the run) memory grows by less than 10 %, no
process's descriptors keep growing, and at no sample is a job waiting more than 5 s past its
start time or a callback more than 5 s past its send time (the schedulers stay live); every
job is delivered, once.

`make test` runs it reduced (``GENHOOK_SOAK_JOBS``, default 300, at ``GENHOOK_SOAK_RATE`` 8 per
second); `make reliability` runs the full 10,000. ``GENHOOK_SOAK_REPORT`` names a JSON file
for the figures (docs/reliability.md records the last full run's)."""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.harness import Genhook, Receiver, wait_for

JOBS = int(os.environ.get("GENHOOK_SOAK_JOBS", "300"))
RATE = float(os.environ.get("GENHOOK_SOAK_RATE", "8"))
SAMPLE_SECONDS = 2.0
PAST_DUE = 5.0


def _family(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for path in glob.glob(f"/proc/{current}/task/*/children"):
            try:
                todo.extend(int(p) for p in Path(path).read_text().split())
            except OSError:
                continue
    return found


def _sample(pid: int) -> dict[int, tuple[int, int]]:
    """Each process's (RSS KiB, open descriptors)."""
    out: dict[int, tuple[int, int]] = {}
    for member in _family(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            rss = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
            )
            fds = len(os.listdir(f"/proc/{member}/fd"))
        except (OSError, StopIteration):
            continue
        out[member] = (rss, fds)
    return out


def test_soak(genhook_factory: Callable[..., Genhook], receiver: Receiver, db_kind: str) -> None:
    g = genhook_factory()
    server = g.serve(workers=2)
    sent: list[str] = []
    samples: list[dict[str, Any]] = []
    done = threading.Event()

    def feed() -> None:
        with httpx.Client(
            base_url=g.base, headers={"Authorization": f"Bearer {g.key}"}, timeout=30
        ) as http:
            started = time.monotonic()
            for i in range(JOBS):
                wait = started + i / RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                answer = http.post(
                    "/v1/workflows/tiny/runs",
                    json={"item_id": f"soak-{i}", "callback_url": receiver.url},
                )
                assert answer.status_code == 202, answer.text
                sent.append(answer.json()["job_id"])

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            now = time.time()
            (late_jobs,) = g.rows(
                "SELECT count(*) AS n FROM jobs WHERE status IN ('queued', 'retrying') "
                "AND run_after < :due",
                due=now - PAST_DUE,
            )
            (late_calls,) = g.rows(
                "SELECT count(*) AS n FROM deliveries WHERE status = 'pending' "
                "AND next_attempt_at < :due",
                due=now - PAST_DUE,
            )
            samples.append(
                {
                    "at": now,
                    "sent": len(sent),
                    "processes": _sample(server.pid),
                    "late_jobs": int(late_jobs["n"]),
                    "late_callbacks": int(late_calls["n"]),
                }
            )

    feeder = threading.Thread(target=feed, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    feeder.start()
    sampler.start()
    feeder.join(JOBS / RATE * 3 + 60)
    assert len(sent) == JOBS
    wanted = set(sent)
    wait_for(
        lambda: wanted <= {c.json["job_id"] for c in receiver.calls()},
        120,
        "every callback",
        every=0.5,
    )
    done.set()
    sampler.join(10)

    calls = [c for c in receiver.calls() if c.json["job_id"] in wanted]
    assert len(calls) == JOBS  # each job delivered once
    warm = [s for s in samples if s["sent"] >= JOBS // 5]
    assert len(warm) >= 3, samples
    first, tail = warm[0], warm[-max(1, len(warm) // 5) :]
    figures: dict[str, Any] = {
        "jobs": JOBS,
        "rate": RATE,
        "store": db_kind,
        "samples": len(samples),
    }
    growth = {}
    for pid, (rss, fds) in first["processes"].items():
        later = [s["processes"][pid] for s in tail if pid in s["processes"]]
        if not later:
            continue  # a process that ended (none should)
        rss_end = sum(r for r, _ in later) / len(later)
        growth[pid] = rss_end / rss - 1
        most_fds = max(f for _, f in (s["processes"].get(pid, (0, 0)) for s in warm))
        assert most_fds <= fds + 8, f"process {pid}: descriptors {fds} -> {most_fds}"
    figures["rss_growth_after_warm_up"] = {str(p): round(v, 4) for p, v in growth.items()}
    figures["most_late_jobs"] = max(s["late_jobs"] for s in samples)
    figures["most_late_callbacks"] = max(s["late_callbacks"] for s in samples)
    late = [s for s in samples if s["late_jobs"] or s["late_callbacks"]]
    figures["samples_late"] = len(late)
    if late:  # when, into the run, and how busy the machine was then
        figures["late_from_to_seconds"] = [
            round(late[0]["at"] - samples[0]["at"]),
            round(late[-1]["at"] - samples[0]["at"]),
        ]
    figures["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(figures))
    if report := os.environ.get("GENHOOK_SOAK_REPORT"):  # var/soak.json -> var/soak-sqlite.json
        path = Path(report)
        path = path.with_name(f"{path.stem}-{db_kind}{path.suffix}")
        path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    assert len(growth) >= 3, first  # the server and its two workers
    assert all(v < 0.10 for v in growth.values()), figures
    assert figures["most_late_jobs"] == 0 and figures["most_late_callbacks"] == 0, figures
