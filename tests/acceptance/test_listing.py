"""GET /v1/jobs on a real `genhook serve`, SQLite and PostgreSQL: the calling service's jobs
newest first, filtered, a page at a time from an opaque cursor that holds while jobs are
added; bad filters and cursors are 422 with their code and field; ``?external_id=`` as before."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.acceptance.harness import Genhook, ts


def _walk(g: Genhook, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every job of a listing, page after page."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = g.http.get("/v1/jobs", params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen += body["jobs"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert len(body["jobs"]) == limit


def _ended(g: Genhook, ids: list[str]) -> None:
    for job_id in ids:
        g.wait_status(job_id, {"succeeded", "failed"})


def test_the_listing_pages_and_filters(service: Genhook) -> None:
    g = service
    before = {j["job_id"] for j in _walk(g, 500)}  # the module's earlier jobs, if any
    made = [g.trigger("tiny", {"item_id": f"L-{i}"}).json()["job_id"] for i in range(9)]
    refused = [g.trigger("tiny", {"item_id": ""}).json()["job_id"] for _ in range(3)]  # 422
    _ended(g, made)
    listed = [j for j in _walk(g, 4) if j["job_id"] not in before]
    assert [j["job_id"] for j in listed] == list(reversed(made + refused))
    created = [ts(j["created_at"]) for j in listed]
    assert created == sorted(created, reverse=True)
    first = listed[0]  # each job as GET /v1/jobs/{id} shows it
    assert {"status", "attempts", "result", "retry_of", "retried_by", "workflow_id"} <= set(first)

    failed = _walk(g, 2, status="failed")
    assert {j["job_id"] for j in failed} >= set(refused)
    assert all(j["status"] == "failed" for j in failed)
    several = _walk(g, 50, status="succeeded,failed")
    assert {j["job_id"] for j in several} >= set(made + refused)
    assert _walk(g, 50, workflow_id="product-image") == []
    assert {j["job_id"] for j in _walk(g, 3, workflow_id="tiny")} >= set(made + refused)
    # a time window: [created_after, created_before)
    lo, hi = listed[-3]["created_at"], listed[2]["created_at"]
    window = _walk(g, 2, created_after=lo, created_before=hi)
    assert [j["job_id"] for j in window] == [j["job_id"] for j in listed[3:-2]]
    # the external_id search of before: same shape, plus next_cursor
    found = g.http.get("/v1/jobs", params={"external_id": "L-4"}).json()
    assert [j["job_id"] for j in found["jobs"]] == [made[4]] and found["next_cursor"] is None


def test_pages_hold_while_jobs_are_added(service: Genhook) -> None:
    g = service
    ids = [g.trigger("tiny", {"item_id": f"S-{i}"}).json()["job_id"] for i in range(6)]
    first = g.http.get("/v1/jobs", params={"limit": 3}).json()
    assert [j["job_id"] for j in first["jobs"]] == ids[:2:-1]
    newer = [g.trigger("tiny", {"item_id": f"N-{i}"}).json()["job_id"] for i in range(3)]
    second = g.http.get("/v1/jobs", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [j["job_id"] for j in second["jobs"]] == ids[2::-1]  # not shifted by the new jobs
    top = g.http.get("/v1/jobs", params={"limit": 3}).json()
    assert [j["job_id"] for j in top["jobs"]] == newer[::-1]
    _ended(g, ids + newer)


def test_only_the_callers_jobs_are_listed(service: Genhook) -> None:
    g = service
    other = g.new_service(f"lister-{datetime.now(UTC).timestamp():.0f}")
    assert other.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}
    job_id = other.post("/v1/workflows/tiny/runs", json={"item_id": "O-1"}).json()["job_id"]
    assert [j["job_id"] for j in other.get("/v1/jobs").json()["jobs"]] == [job_id]
    assert job_id not in {j["job_id"] for j in _walk(g, 500)}


def test_bad_filters_and_cursors_are_422_with_their_field(service: Genhook) -> None:
    g = service
    for _ in range(2):
        g.trigger("tiny", {"item_id": "C-1"})
    cursor = g.http.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    cases = [
        ({"limit": 0}, "invalid_value", "limit"),
        ({"limit": 501}, "invalid_value", "limit"),
        ({"limit": "many"}, "invalid_value", "limit"),
        ({"status": "done"}, "invalid_value", "status"),
        ({"status": "failed,nope"}, "invalid_value", "status"),
        ({"created_after": "yesterday"}, "invalid_value", "created_after"),
        ({"created_before": "2026-11-28T12:00:00"}, "invalid_value", "created_before"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor", "cursor"),
        ({"cursor": cursor[:-4]}, "invalid_cursor", "cursor"),
        ({"cursor": cursor, "status": "failed"}, "invalid_cursor", "cursor"),  # other filters
    ]
    for params, code, field in cases:
        answer = g.http.get("/v1/jobs", params=params)
        assert answer.status_code == 422, (params, answer.text)
        body = answer.json()
        assert (body["error_code"], body["field"]) == (code, field), (params, body)
    assert g.http.get("/v1/jobs", params={"limit": 500}).status_code == 200
    assert g.http.get("/v1/jobs", params={"cursor": cursor, "limit": 1}).status_code == 200
