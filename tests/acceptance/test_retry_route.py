"""POST /v1/jobs/{job_id}/retry on a real `genhook serve`, SQLite and PostgreSQL: a new job
with the ended one's input, workflow version and callback, linked both ways; flow control as
for a trigger; 409 for a job that has not ended, 403 and 404 as for any job."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.acceptance.harness import Genhook, Receiver, wait_for


def test_a_retry_reruns_an_ended_job_and_links_both_ways(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = genhook_factory()
    g.serve(workers=1)
    old_id = g.trigger(
        "tiny",
        {"item_id": "R-1", "callback_url": receiver.url, "client_metadata": {"ref": "a"}},
    ).json()["job_id"]
    old = g.wait_status(old_id, {"succeeded", "failed"})
    assert old["status"] == "succeeded", old
    answer = g.http.post(f"/v1/jobs/{old_id}/retry")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["retry_of"] == old_id and body["status"] == "queued"
    new_id = body["job_id"]
    assert new_id != old_id
    new = g.wait_status(new_id, {"succeeded", "failed"})
    assert new["status"] == "succeeded"
    assert new["retry_of"] == old_id and new["retried_by"] == []
    assert (new["workflow_id"], new["workflow_version"]) == (old["workflow_id"], 1)
    assert new["external_id"] == "R-1" and new["callback_url"] == receiver.url
    stored = g.rows("SELECT input FROM jobs WHERE id IN (:a, :b)", a=old_id, b=new_id)
    inputs = [json.loads(r["input"]) if isinstance(r["input"], str) else r["input"] for r in stored]
    assert inputs[0] == inputs[1]
    assert g.job(old_id)["retried_by"] == [new_id]
    # the retry's callback goes to the same URL, for the new job
    (call,) = receiver.wait_job(new_id)
    assert call.json["job_id"] == new_id and call.json["status"] == "success"
    # a failed job is retried too; an Idempotency-Key gives the same retry again
    failed = g.trigger("remote-image", {"item_id": "R-2", "name": "vase"}).json()["job_id"]
    assert g.wait_status(failed, {"succeeded", "failed"})["status"] == "failed"
    first = g.http.post(f"/v1/jobs/{failed}/retry", headers={"Idempotency-Key": "k1"})
    again = g.http.post(f"/v1/jobs/{failed}/retry", headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["job_id"] == again.json()["job_id"]
    other = g.http.post(f"/v1/jobs/{old_id}/retry", headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409 and other.json()["error_code"] == "idempotency_conflict"
    assert g.job(failed)["retried_by"] == [first.json()["job_id"]]
    listed = g.http.get("/v1/jobs", params={"external_id": "R-2"}).json()["jobs"]
    assert [j["job_id"] for j in listed] == [first.json()["job_id"], failed]


def test_what_cannot_be_retried(genhook_factory: Callable[..., Genhook]) -> None:
    g = genhook_factory()
    g.serve(workers=1)
    # not ended: a job held by its service's rate limit stays queued
    limited = g.new_service("limited", "--rate-limit", "1/h")
    first = limited.post("/v1/workflows/tiny/runs", json={"item_id": "Q-1"}).json()["job_id"]
    held = limited.post("/v1/workflows/tiny/runs", json={"item_id": "Q-2"}).json()["job_id"]
    answer = limited.post(f"/v1/jobs/{held}/retry")
    assert answer.status_code == 409 and answer.json()["error_code"] == "not_retryable"
    # another service's job, and an unknown one
    assert g.http.post(f"/v1/jobs/{first}/retry").status_code == 403
    assert g.http.post(f"/v1/jobs/{first}/retry").json()["error_code"] == "forbidden"
    missing = g.http.post("/v1/jobs/job_01aaaaaaaaaaaaaaaaaaaaaaaa/retry")
    assert missing.status_code == 404 and missing.json()["error_code"] == "not_found"
    # a trigger refused as invalid input would be refused again
    refused = g.trigger("tiny", {"item_id": ""})
    assert refused.status_code == 422
    answer = g.http.post(f"/v1/jobs/{refused.json()['job_id']}/retry")
    assert answer.status_code == 409 and answer.json()["error_code"] == "not_retryable"
    # a job of a workflow version that is no longer the installed one
    ran = g.trigger("tiny", {"item_id": "V-1"}).json()["job_id"]
    g.wait_status(ran, {"succeeded", "failed"})
    g.rows("UPDATE jobs SET workflow_version = 0 WHERE id = :id", id=ran)
    answer = g.http.post(f"/v1/jobs/{ran}/retry")
    assert answer.status_code == 409 and answer.json()["error_code"] == "workflow_changed"


def test_flow_control_applies_to_a_retry(genhook_factory: Callable[..., Genhook]) -> None:
    """A retry is a trigger for its service's limits: over the rate it waits (rate_limit),
    past the queue limit it is refused (429 queue_full)."""
    g = genhook_factory()
    g.serve(workers=1)
    shop = g.new_service("capped", "--rate-limit", "1/h", "--queue-limit", "2")
    ran = shop.post("/v1/workflows/tiny/runs", json={"item_id": "F-1"}).json()["job_id"]
    view = wait_for(  # the first start of the hour is free
        lambda: (
            (v := shop.get(f"/v1/jobs/{ran}").json())["status"] in ("succeeded", "failed") and v
        ),
        60,
        "the first job to end",
    )
    assert view["status"] == "succeeded", view
    retried = shop.post(f"/v1/jobs/{ran}/retry")
    assert retried.status_code == 202, retried.text
    waiting = shop.get(f"/v1/jobs/{retried.json()['job_id']}").json()
    assert (waiting["status"], waiting["hold_reason"]) == ("queued", "rate_limit")
    assert waiting["eligible_at"] is not None
    second = shop.post(f"/v1/jobs/{ran}/retry")  # 2 waiting now: the queue limit
    assert second.status_code == 202
    full = shop.post(f"/v1/jobs/{ran}/retry")
    assert full.status_code == 429 and full.json()["error_code"] == "queue_full"
    assert "Retry-After" in full.headers
