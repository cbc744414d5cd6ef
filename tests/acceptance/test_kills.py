"""Acceptance: SIGKILL on real processes (SQLite and PostgreSQL).

- The API killed in the middle of a burst of 2,000 triggers from 8 concurrent clients: every
  trigger that got its 202 completes after a restart and is delivered, one message (one
  ``webhook-id``) per job; what was in flight when it died was never acknowledged.
- Worker processes killed at random moments while 50 jobs run, a new one started after each
  kill, each kill landing at a random moment of a job: every job ends exactly once with one
  message; a job fails (``worker_lost``) only when its first try and its three retries were all
  lost to kills, never otherwise.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import httpx

from tests.acceptance.harness import Genhook, Receiver, verify, wait_for

BURST, CLIENTS, KILL_AFTER = 2000, 8, 600
KILLED_JOBS = 50


def _messages(receiver: Receiver, wanted: set[str]) -> dict[str, set[str]]:
    """Each wanted job's webhook-ids among the calls received."""
    found: dict[str, set[str]] = {}
    for call in receiver.calls():
        job_id = call.json["job_id"]
        if job_id in wanted:
            found.setdefault(job_id, set()).add(call.headers["webhook-id"])
    return found


def test_the_api_killed_mid_burst_loses_no_acknowledged_trigger(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory()
    server = g.serve(workers=0)
    accepted: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def client(offset: int) -> None:
        with httpx.Client(
            base_url=g.base, headers={"Authorization": f"Bearer {g.key}"}, timeout=30
        ) as http:
            for i in range(offset, BURST, CLIENTS):
                body = {"item_id": f"burst-{i}", "callback_url": receiver.url}
                try:
                    answer = http.post("/v1/workflows/tiny/runs", json=body)
                except httpx.HTTPError:
                    return  # the server died under this request: not acknowledged
                if answer.status_code != 202:
                    assert killed.is_set(), answer.text
                    return
                with lock:
                    accepted.append(answer.json()["job_id"])

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(accepted) >= KILL_AFTER, 120, f"{KILL_AFTER} triggers accepted")
    killed.set()
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    for thread in threads:
        thread.join(30)
    acknowledged = set(accepted)
    assert KILL_AFTER <= len(acknowledged) < BURST
    g.serve(workers=2)
    wait_for(
        lambda: len(_messages(receiver, acknowledged)) == len(acknowledged),
        300,
        f"the callbacks of {len(acknowledged)} acknowledged triggers",
        every=1.0,
    )
    messages = _messages(receiver, acknowledged)
    assert all(len(ids) == 1 for ids in messages.values())
    statuses = {
        row["status"]
        for row in g.rows(
            "SELECT status FROM jobs WHERE service_id = :s", s=g.service["service_id"]
        )
        if row is not None
    }
    assert statuses <= {"succeeded", "queued", "running"} and "succeeded" in statuses
    for call in receiver.calls()[:50]:
        assert verify(g.secret, call)["status"] == "success"


def test_workers_killed_at_random_moments_end_every_job_once(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory(GENHOOK_LEASE_SECONDS="2", GENHOOK_HEARTBEAT_SECONDS="0.5")
    g.serve(workers=0)
    workers: list[subprocess.Popen[bytes]] = [g.worker(), g.worker()]
    ids = [
        g.trigger("product-image", _product(i, receiver.url)).json()["job_id"]
        for i in range(KILLED_JOBS)
    ]
    wanted = set(ids)
    rng = random.Random(20261203)
    kills = 0
    deadline = time.monotonic() + 240
    while len(_messages(receiver, wanted)) < len(wanted) and time.monotonic() < deadline:
        if kills >= 25:
            break
        busy = {  # the workers holding a job now (a lease owner is host:pid:token)
            int(row["lease_owner"].split(":")[1])
            for row in g.rows("SELECT lease_owner FROM jobs WHERE status = 'running'")
            if row["lease_owner"]
        }
        victims = [w for w in workers if w.pid in busy]
        if not victims:
            time.sleep(0.1)
            continue
        victim = rng.choice(victims)
        time.sleep(rng.uniform(0.0, 0.5))  # a random moment of its job
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        workers.remove(victim)
        kills += 1
        workers.append(g.worker())
    wait_for(lambda: len(_messages(receiver, wanted)) == len(wanted), 120, "every job's end")
    assert kills >= 10
    messages = _messages(receiver, wanted)
    assert all(len(webhook_ids) == 1 for webhook_ids in messages.values()), messages
    time.sleep(1.0)  # a second message would have arrived by now
    assert len(_messages(receiver, wanted)) == len(wanted)
    assert sum(1 for c in receiver.calls() if c.json["job_id"] in wanted) == len(wanted)
    lost_any = 0
    for job_id in ids:
        job = g.job(job_id)
        outcomes = [a["outcome"] for a in job["attempts"]]
        lost_any += "lost" in outcomes
        if job["status"] == "failed":  # only once its whole retry schedule was lost to kills
            # four tries lost, then the attempt that ends it worker_lost; a kill can land on
            # that short attempt too (it then counts as lost and the next one ends the job)
            assert outcomes[-1] == "failed" and set(outcomes[:-1]) == {"lost"}, outcomes
            assert outcomes.count("lost") >= 4, outcomes
            assert job["result"]["error"]["error_code"] == "worker_lost", job["result"]
        else:
            assert job["status"] == "succeeded", job
            assert outcomes[-1] == "succeeded" and set(outcomes[:-1]) <= {"lost"}, outcomes
    assert lost_any, "no kill landed in the middle of a job"


def _product(i: int, callback: str) -> dict[str, str]:
    return {
        "product_id": f"KILL-{i}",
        "product_name": f"Stool {i}",
        "target_style": "minimal",
        "target_platform": "x_post",
        "callback_url": callback,
    }
