"""A template schedule fired by a real ``genhook serve`` on the real clock: one job per item of
its CSV file, each delivered to a real receiver, signed; the fire recorded once; the schedule
seen through ``/v1/schedules`` with the service's key. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.acceptance.harness import TINY_FLOW, Genhook, Receiver, verify, wait_for

ITEMS = ["sku-1", "sku-2", "sku-3"]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _template(g: Genhook, what: str) -> None:
    """``scheduled.yaml``: the tiny flow, fired every minute as ``shop`` with ``what``."""
    flow = TINY_FLOW.replace("id: tiny\n", "id: scheduled\n", 1)
    (g.tmp / "flows" / "scheduled.yaml").write_text(
        flow
        + "schedules:\n"
        + "  - id: minutely\n"
        + '    cron: "* * * * *"\n'
        + "    timezone: Europe/Berlin\n"
        + "    service: shop\n"
        + what,
        encoding="utf-8",
    )


def test_a_schedule_fires_one_job_per_csv_item_through_serve(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory()
    flows = g.tmp / "flows"
    _template(g, f"    items: {{file: items.csv}}\n    callback_url: {receiver.url}\n")
    (flows / "items.csv").write_text("item_id\n" + "\n".join(ITEMS) + "\n", encoding="utf-8")
    g.serve(workers=1)
    listed = g.http.get("/v1/schedules")
    assert listed.status_code == 200, listed.text
    (schedule,) = listed.json()["schedules"]
    assert schedule["schedule_id"] == "scheduled:minutely" and schedule["service"] == "shop"
    # the next whole minute (a new schedule never fires for the past)
    fires = wait_for(
        lambda: g.rows("SELECT * FROM schedule_fires WHERE outcome = 'fired'"),
        100,
        "the schedule's first fire",
        every=0.5,
    )
    fire = fires[0]
    assert fire["schedule_key"] == "scheduled:minutely"
    assert fire["created"] == len(ITEMS) and fire["refused"] == 0
    job_ids = _json(fire["job_ids"])
    assert len(job_ids) == len(ITEMS)
    delivered = {}
    for job_id in job_ids:
        (call,) = receiver.wait_job(job_id, timeout=120)
        payload = verify(g.secret, call)
        assert payload["status"] == "success" and payload["event"] == "job.completed"
        delivered[payload["external_id"]] = job_id
    assert sorted(delivered) == ITEMS
    # one job per item for that due time, no more (whatever later minutes fire)
    keys = g.rows(
        "SELECT idempotency_key FROM jobs WHERE id IN ("
        + ", ".join(f"'{j}'" for j in job_ids)
        + ")"
    )
    assert sorted(r["idempotency_key"].rsplit(":", 1)[1] for r in keys) == ["0", "1", "2"]
    due_keys = {r["idempotency_key"].rsplit(":", 1)[0] for r in keys}
    (prefix,) = due_keys
    same_due = g.rows("SELECT id FROM jobs WHERE idempotency_key LIKE :p", p=prefix + ":%")
    assert len(same_due) == len(ITEMS)
    detail = g.http.get("/v1/schedules/scheduled:minutely").json()
    assert any(f["outcome"] == "fired" and f["jobs_created"] == 3 for f in detail["fires"])
    assert detail["last_outcome"] == "fired"


def test_a_standalone_worker_runs_the_schedules(genhook_factory: Callable[..., Genhook]) -> None:
    """No serve at all: `genhook worker` alone fires the schedule and runs its job."""
    g = genhook_factory()
    _template(g, "    input: {item_id: from-worker}\n")
    g.worker()
    fires = wait_for(
        lambda: g.rows("SELECT * FROM schedule_fires WHERE outcome = 'fired'"),
        100,
        "the worker's scheduler to fire",
        every=0.5,
    )
    (job_id,) = _json(fires[0]["job_ids"])
    wait_for(
        lambda: (
            g.rows("SELECT status FROM jobs WHERE id = :j", j=job_id)[0]["status"] == "succeeded"
        ),
        90,
        "the scheduled job to succeed",
        every=0.5,
    )
    (job,) = g.rows("SELECT input, external_id FROM jobs WHERE id = :j", j=job_id)
    assert job["external_id"] == "from-worker"
