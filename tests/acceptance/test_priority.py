"""Acceptance: the envelope's ``priority`` on a real server (SQLite and PostgreSQL). Triggers of
one service wait with no worker running, low, normal and high mixed; then one worker with one
slot takes them: every high job starts before every normal one, every normal before every low
one, first come first served within a priority; and another service's single job is not held
behind the first service's high ones (priorities order a service's own share only)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tests.acceptance.harness import Genhook, Receiver, verify, wait_for

ORDER = ["low", "high", "normal", "low", "high", "normal", "high", "low", "normal"]


def _started(g: Genhook, job_id: str) -> datetime:
    job = g.job(job_id)
    return datetime.fromisoformat(job["attempts"][0]["started_at"])


def test_priority_orders_a_services_own_jobs(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory(GENHOOK_WORKER_CONCURRENCY="1")
    g.serve(workers=0)
    other = g.new_service("other")
    ids: dict[str, list[str]] = {"low": [], "normal": [], "high": []}
    for n, priority in enumerate(ORDER):
        body = {"item_id": f"p-{n}", "priority": priority, "callback_url": receiver.url}
        answer = g.trigger("tiny", body)
        assert answer.status_code == 202, answer.text
        ids[priority].append(answer.json()["job_id"])
    lone = other.post("/v1/workflows/tiny/runs", json={"item_id": "other-1"})
    assert lone.status_code == 202, lone.text
    g.worker()
    everything = [j for group in ids.values() for j in group]
    for job_id in everything:
        (call,) = receiver.wait_job(job_id, timeout=120)
        assert verify(g.secret, call)["status"] == "success"
    lone_id = lone.json()["job_id"]
    wait_for(lambda: other.get(f"/v1/jobs/{lone_id}").json()["status"] == "succeeded", 60, "it")
    started = {j: _started(g, j) for j in everything}
    for earlier, later in (("high", "normal"), ("normal", "low")):
        assert max(started[j] for j in ids[earlier]) < min(started[j] for j in ids[later])
    for group in ids.values():  # first come, first served within a priority
        assert [started[j] for j in group] == sorted(started[j] for j in group)
    # the other service's one job went within the first two starts, not after the high ones
    theirs = datetime.fromisoformat(
        other.get(f"/v1/jobs/{lone_id}").json()["attempts"][0]["started_at"]
    )
    assert sum(1 for s in started.values() if s < theirs) <= 1
