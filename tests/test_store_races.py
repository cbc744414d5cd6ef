"""Cancels racing claims and finishes, on a real SQLite file and a real PostgreSQL database.

Threads play separate processes (each its own Store, so its own connections): workers claim and
finish (some attempts retry), while cancellers cancel every job in a random order. Whatever the
interleaving, each job must end in one consistent state: one terminal status, no attempt left
open, one callback whose event matches the status, and the cancel's answer honoured (a job the
cancel flagged while running ends cancelled; a job that had ended is never overwritten).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genhook.errors import ErrorCode, GenhookError
from genhook.store.records import Job, StoredJob
from genhook.store.store import Store
from tests.databases import database_url

JOBS = 120
WORKERS = 4
CANCELLERS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as found:
        yield found


def cancelled_payload(row: StoredJob | Job) -> dict[str, Any]:
    return {"job_id": row.id, "event": "job.failed", "error_code": "cancelled"}


def work(store: Store, name: str, done: threading.Event, rng: random.Random) -> None:
    """Claim and end jobs until the cancellers are done and nothing is left to claim."""
    while True:
        job = store.claim(name, 30)
        if job is None:
            if done.is_set():
                return
            time.sleep(0.001)
            continue
        if rng.random() < 0.5:
            time.sleep(0.001)  # let a cancel land while the job runs
        cancelled = cancelled_payload(job)
        if job.attempts == 1 and rng.random() < 0.3:
            store.retry(
                job.id,
                name,
                error=GenhookError(ErrorCode.BACKEND_ERROR, "503"),
                delay=0,
                credit_cost=0.5,
                work_seconds=0.001,
                cancelled=cancelled,
            )
            continue
        store.finish(
            job.id,
            name,
            status="succeeded",
            payload={"job_id": job.id, "event": "job.completed"},
            error=None,
            credit_cost=1.0,
            work_seconds=0.001,
            cancelled=cancelled,
        )


def test_cancels_racing_claims_leave_every_job_consistent(url: str) -> None:
    setup = Store(url)
    setup.migrate()
    service = setup.create_service("shop")["service_id"]
    ids = [
        setup.submit(
            service_id=service,
            workflow_id="wf",
            workflow_version=1,
            trigger={"n": n},
            external_id=str(n),
            callback_url="https://hooks.example/cb",
        )[0].id
        for n in range(JOBS)
    ]
    answers: dict[str, str] = {}
    lock = threading.Lock()
    cancels_done = threading.Event()
    stores = [Store(url) for _ in range(WORKERS + CANCELLERS)]

    def cancel_all(store: Store, seed: int) -> None:
        mine = [job_id for i, job_id in enumerate(ids) if i % CANCELLERS == seed]
        random.Random(seed).shuffle(mine)
        for job_id in mine:
            answer = store.cancel(job_id, cancelled_payload)
            with lock:
                answers[job_id] = answer

    workers = [
        threading.Thread(
            target=work, args=(stores[i], f"w{i}", cancels_done, random.Random(i)), daemon=True
        )
        for i in range(WORKERS)
    ]
    cancellers = [
        threading.Thread(target=cancel_all, args=(stores[WORKERS + i], i), daemon=True)
        for i in range(CANCELLERS)
    ]
    for thread in workers + cancellers:
        thread.start()
    for thread in cancellers:
        thread.join(120)
    cancels_done.set()
    for thread in workers:
        thread.join(120)
    assert not any(t.is_alive() for t in workers + cancellers)
    assert set(answers) == set(ids)

    problems: list[str] = []
    outcomes: dict[str, int] = {}
    for job_id in ids:
        job = setup.job(job_id)
        assert job is not None
        status = job.status
        outcomes[status] = outcomes.get(status, 0) + 1
        tries = setup.attempts(job_id)
        deliveries = setup.deliveries(job_id)
        events = [e.status for e in setup.events(job_id)]
        expected_event = {"succeeded": "job.completed", "cancelled": "job.failed"}.get(status)
        answer = answers[job_id]
        if expected_event is None:
            problems.append(f"{job_id}: ended {status}")
        if any(a.ended_at is None for a in tries):
            problems.append(f"{job_id}: {status} with an open attempt")
        if len(deliveries) != 1:
            problems.append(f"{job_id}: {len(deliveries)} callbacks")
        elif json.loads(deliveries[0].body)["event"] != expected_event:
            problems.append(f"{job_id}: {status} but its callback is another event")
        if job.result is None or job.result.get("event") != expected_event:
            problems.append(f"{job_id}: {status} with result {job.result}")
        if sum(e in ("succeeded", "failed", "cancelled") for e in events) != 1:
            problems.append(f"{job_id}: terminal events {events}")
        # a job cancelled while it waited for its retry has no attempt of its own
        allowed = {status, "retrying"} if status == "cancelled" else {status}
        if tries and tries[-1].outcome not in allowed:
            problems.append(f"{job_id}: {status} but its last attempt {tries[-1].outcome}")
        if answer in ("cancelled", "running") and status != "cancelled":
            problems.append(f"{job_id}: cancel answered {answer} but the job {status}")
        if answer == "succeeded" and status != "succeeded":
            problems.append(f"{job_id}: had succeeded, then became {status}")
        if answer == "cancelled" and any(a.outcome == "succeeded" for a in tries):
            problems.append(f"{job_id}: cancelled although an attempt succeeded")
    for store in [setup, *stores]:
        store.close()
    assert problems == [], f"{len(problems)} inconsistent jobs (of {outcomes}): {problems[:10]}"
    assert outcomes.get("cancelled", 0) > 0
