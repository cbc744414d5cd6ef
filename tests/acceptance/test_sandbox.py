"""Sandbox services (``--test``) on a real `genhook serve`, SQLite and PostgreSQL: the dry run
says what the sandbox runs (procedural, 0 credits), and every payload says ``"test": true``,
also those of jobs that end without running (an invalid trigger, a cancel) and of a retry.
(The run itself, on a workflow naming a paid engine: test_flow_control.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.acceptance.harness import Genhook, Receiver, wait_for

VASE = {"item_id": "S-1", "name": "vase"}


def test_a_sandbox_dry_run_is_free_and_on_procedural(
    genhook_factory: Callable[..., Genhook],
) -> None:
    g = genhook_factory()
    g.serve(workers=1)
    sandbox = g.new_service("sandbox", "--test")
    paid = g.http.post("/v1/workflows/remote-image/dry-run", json=VASE)
    free = sandbox.post("/v1/workflows/remote-image/dry-run", json=VASE)
    assert paid.status_code == free.status_code == 200, (paid.text, free.text)
    paid_step = next(s for s in paid.json()["steps"] if s["kind"] == "generate")
    free_step = next(s for s in free.json()["steps"] if s["kind"] == "generate")
    assert paid_step["backend"] == "openai" and paid.json()["credit_estimate"]["max"] > 0
    assert free_step["backend"] == "procedural"
    assert free.json()["credit_estimate"] == {"expected": 0, "max": 0}
    assert free.json()["prompts"] == paid.json()["prompts"]  # the same mapping otherwise


def test_every_sandbox_payload_says_test(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory()
    g.serve(workers=1)
    sandbox = g.new_service("sandbox", "--test", "--rate-limit", "1/h")
    listed = {s["service"]: s for s in json.loads(g.cli("services", "list").stdout)}
    assert listed["sandbox"]["test"] is True and listed["shop"]["test"] is False

    # an invalid trigger: answered 422, and its failed payload is a sandbox one too
    refused = sandbox.post(
        "/v1/workflows/remote-image/runs", json={"item_id": "S-0", "callback_url": receiver.url}
    )
    assert refused.status_code == 422
    (call,) = receiver.wait_job(refused.json()["job_id"])
    assert call.json["status"] == "failed" and call.json["test"] is True

    # a job that runs, then one held by the rate limit and cancelled before it starts
    ran = sandbox.post(
        "/v1/workflows/remote-image/runs", json={**VASE, "callback_url": receiver.url}
    ).json()["job_id"]
    held = sandbox.post(
        "/v1/workflows/remote-image/runs",
        json={"item_id": "S-2", "name": "cup", "callback_url": receiver.url},
    ).json()["job_id"]
    assert sandbox.post(f"/v1/jobs/{held}/cancel").status_code == 202
    (cancelled,) = receiver.wait_job(held)
    assert cancelled.json["error"]["error_code"] == "cancelled" and cancelled.json["test"] is True
    (done,) = receiver.wait_job(ran)
    assert done.json["status"] == "success" and done.json["test"] is True
    assert done.json["metadata"]["credit_cost"] == 0

    # a retry of a sandbox job is a sandbox job (it waits for the rate limit: over it here)
    retry = sandbox.post(f"/v1/jobs/{ran}/retry").json()["job_id"]
    view = sandbox.get(f"/v1/jobs/{retry}").json()
    assert view["hold_reason"] == "rate_limit"
    assert sandbox.post(f"/v1/jobs/{retry}/cancel").status_code == 202
    ended = wait_for(
        lambda: (v := sandbox.get(f"/v1/jobs/{retry}").json())["result"] and v,
        30,
        "the cancelled retry's payload",
    )
    assert ended["result"]["test"] is True
    # the same routes for a normal service: "test": false
    normal = g.http.post(f"/v1/jobs/{refused.json()['job_id']}/cancel")
    assert normal.status_code == 403
    mine = g.trigger("remote-image", {"item_id": "N-0"})
    assert mine.status_code == 422
    (stored,) = g.rows("SELECT result FROM jobs WHERE id = :id", id=mine.json()["job_id"])
    result = stored["result"]
    result = json.loads(result) if isinstance(result, str) else result
    assert result["test"] is False
