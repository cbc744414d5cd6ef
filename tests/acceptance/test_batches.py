"""Batches on a real `genhook serve` (SQLite and PostgreSQL): a batch of 1,000 with invalid items
scattered through it, the limits, budget and breaker counting each item, the batch callback
(once, verified with ``standardwebhooks``), the batch's status, and bodies that are no batch."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify, wait_for
from tests.acceptance.test_budget import one_credit_per_image

# (index, the item there, the field its error names, its code): every 50th item is wrong
BROKEN: dict[int, tuple[dict[str, Any], str, str]] = {}
for _n, _i in enumerate(range(13, 1000, 50)):
    BROKEN[_i] = [
        ({}, "item_id", "missing_field"),
        ({"item_id": 7}, "item_id", "invalid_type"),
        ({"item_id": "x", "colour": "red"}, "colour", "unknown_field"),
        ({"item_id": "x", "callback_url": "ftp://nowhere"}, "callback_url", "invalid_callback_url"),
        ({"item_id": ""}, "item_id", "invalid_value"),
    ][_n % 5]


def _batch(g: Genhook, body: Any, client: Any = None, workflow: str = "tiny") -> Any:
    return (client or g.http).post(f"/v1/workflows/{workflow}/batches", json=body)


def _batch_callbacks(receiver: Receiver) -> list[Any]:
    return [c for c in receiver.calls() if c.json.get("event") == "batch.completed"]


def test_a_batch_of_1000_with_invalid_items_scattered(service: Genhook, receiver: Receiver) -> None:
    g = service
    items = [BROKEN[i][0] if i in BROKEN else {"item_id": f"b-{i}"} for i in range(1000)]
    other = g.new_service("bystander")
    before = other.post("/v1/workflows/tiny/runs", json={"item_id": "alone"})
    assert before.status_code == 202, before.text
    started = time.monotonic()
    answer = _batch(g, {"items": items, "callback_url": receiver.url})
    took = time.monotonic() - started
    assert answer.status_code == 202, answer.text
    body = answer.json()
    batch_id = body["batch_id"]
    entries = body["items"]
    assert [e["index"] for e in entries] == list(range(1000))
    for i, entry in enumerate(entries):
        if i in BROKEN:
            _, field, code = BROKEN[i]
            assert "job_id" not in entry
            assert (entry["error"]["field"], entry["error"]["error_code"]) == (field, code), i
            assert entry["error"]["error_description"]
        else:
            assert set(entry) == {"index", "job_id"}, entry
    job_ids = [e["job_id"] for e in entries if "job_id" in e]
    assert len(set(job_ids)) == 1000 - len(BROKEN)
    assert took < 30, took

    def ended() -> Any:
        batch = g.http.get(f"/v1/batches/{batch_id}").json()
        return batch["status"] == "ended" and batch

    batch = wait_for(ended, 600, "every job of the batch to end", every=1)
    counts = batch["counts"]
    assert counts["items"] == 1000 and counts["refused"] == len(BROKEN)
    assert counts["succeeded"] == 1000 - len(BROKEN), counts
    assert [i.get("status") for i in batch["items"] if "job_id" in i] == ["succeeded"] * len(
        job_ids
    )
    assert [i["index"] for i in batch["items"] if "error" in i] == sorted(BROKEN)
    # nothing else: one job per valid item, none for the invalid ones, the bystander's own job
    rows = g.rows(
        "SELECT j.batch_id, j.status, count(*) AS n FROM jobs j JOIN services s "
        "ON s.id = j.service_id WHERE s.name = 'shop' GROUP BY j.batch_id, j.status"
    )
    assert rows == [{"batch_id": batch_id, "status": "succeeded", "n": 1000 - len(BROKEN)}]
    solo = before.json()["job_id"]
    wait_for(
        lambda: other.get(f"/v1/jobs/{solo}").json()["status"] == "succeeded",
        60,
        "the bystander's job",
    )
    # the batch callback: once, signed with the service's secret, with the counts
    calls = wait_for(lambda: _batch_callbacks(receiver), 30, "the batch callback")
    time.sleep(1.0)  # a second one would have come by now
    calls = _batch_callbacks(receiver)
    assert len(calls) == 1
    payload = verify(g.secret, calls[0])
    assert payload["batch_id"] == batch_id and payload["workflow_id"] == "tiny"
    assert payload["counts"]["succeeded"] == 1000 - len(BROKEN)
    assert payload["counts"]["refused"] == len(BROKEN)
    assert payload["counts"]["items"] == 1000
    callback = wait_for(
        lambda: (
            (c := g.http.get(f"/v1/batches/{batch_id}").json()["callback"])
            and c["status"] == "delivered"
            and c
        ),
        30,
        "the batch callback's delivery to be recorded",
    )
    assert callback["delivery_id"] == calls[0].headers["webhook-id"]
    assert callback["attempts"] == 1 and callback["last_status_code"] == 200
    # no item's callback_url was called for the refused items (they are no jobs)
    assert [c for c in receiver.calls() if c.json.get("event") != "batch.completed"] == []
    # another service may not read the batch
    assert other.get(f"/v1/batches/{batch_id}").status_code == 403
    assert g.http.get("/v1/batches/bat_nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([{"item_id": "a"}], "invalid_batch", None),
        ({"item": [{"item_id": "a"}]}, "unknown_field", "item"),
        ({"items": "a"}, "invalid_batch", "items"),
        ({"items": []}, "invalid_batch", "items"),
        ({"items": [{"item_id": "a"}] * 1001}, "batch_too_large", "items"),
        ({"items": [{"item_id": "a"}], "callback_url": "nope"}, "invalid_callback_url", None),
    ],
)
def test_a_body_that_is_no_batch_is_refused_and_nothing_is_stored(
    service: Genhook, body: Any, code: str, field: str | None
) -> None:
    before = service.rows("SELECT count(*) AS n FROM jobs")[0]["n"]
    answer = _batch(service, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error_code"] == code
    if field is not None:
        assert answer.json()["field"] == field
    assert service.rows("SELECT count(*) AS n FROM jobs")[0]["n"] == before


def test_item_idempotency_keys_make_a_resent_batch_no_second_job(service: Genhook) -> None:
    items = [{"item_id": f"k-{n}", "idempotency_key": f"row-{n}"} for n in range(5)]
    first = _batch(service, {"items": items}).json()["items"]
    again = _batch(service, {"items": items}).json()["items"]
    assert [e["job_id"] for e in again] == [e["job_id"] for e in first]
    assert all(e.get("replayed") for e in again)
    changed = _batch(service, {"items": [{"item_id": "other", "idempotency_key": "row-0"}]})
    assert changed.json()["items"][0]["error"]["error_code"] == "idempotency_conflict"
    bad = _batch(service, {"items": [{"item_id": "z", "idempotency_key": ""}]}).json()
    assert bad["items"][0]["error"] == {
        "error_code": "invalid_batch",
        "error_description": "idempotency_key must be a string of 1 to 255 characters",
        "field": "idempotency_key",
    }
    # the Idempotency-Key header: HEADER:INDEX for items without a key of their own
    plain = {"items": [{"item_id": "h-0"}, {"item_id": "h-1"}]}
    one = service.http.post(
        "/v1/workflows/tiny/batches", json=plain, headers={"Idempotency-Key": "B1"}
    ).json()
    two = service.http.post(
        "/v1/workflows/tiny/batches", json=plain, headers={"Idempotency-Key": "B1"}
    ).json()
    assert [e["job_id"] for e in two["items"]] == [e["job_id"] for e in one["items"]]


def test_limits_budget_and_breaker_count_each_item(
    genhook_factory: Any, receiver: Receiver
) -> None:
    """Queue limit: items past it get their own queue_full. Rate: accepted and held. Storm
    breaker: trips inside the batch. Budget (one credit per job, --on-budget fail): exactly
    the budget's worth of the batch's jobs succeed."""
    g: Genhook = genhook_factory()
    one_credit_per_image(g)
    limited = g.new_service("limited", "--rate-limit", "4/h", "--queue-limit", "6")
    stormy = g.new_service("stormy", "--rate-limit", "1/h")
    made = g.cli("services", "create", "spender", "--daily-budget", "3", "--on-budget", "fail")
    spender_secret = json.loads(made.stdout)["webhook_secret"]
    spender = httpx.Client(
        base_url=g.base,
        headers={"Authorization": f"Bearer {json.loads(made.stdout)['api_key']}"},
        timeout=30,
    )
    g.clients.append(spender)
    g.serve(workers=2)

    items = [{"item_id": f"q-{n}"} for n in range(8)]
    entries = _batch(g, {"items": items}, limited, "one-image").json()["items"]
    assert ["job_id" in e for e in entries] == [True] * 6 + [False] * 2
    assert {e["error"]["error_code"] for e in entries[6:]} == {"queue_full"}
    holds = [limited.get(f"/v1/jobs/{e['job_id']}").json()["hold_reason"] for e in entries[:6]]
    assert holds[4:] == ["rate_limit", "rate_limit"], holds

    # 1/h: more than three triggers in the hour pause the service from the 4th item on
    entries = _batch(g, {"items": items[:6]}, stormy, "one-image").json()["items"]
    views = [stormy.get(f"/v1/jobs/{e['job_id']}").json() for e in entries]
    assert [v["hold_reason"] for v in views[3:]] == ["paused"] * 3
    assert (
        g.rows("SELECT count(*) AS n FROM operator_events WHERE event = 'service.paused'")[0]["n"]
        == 1
    )

    answer = _batch(g, {"items": items[:5], "callback_url": receiver.url}, spender, "one-image")
    batch_id = answer.json()["batch_id"]
    batch = wait_for(
        lambda: (b := spender.get(f"/v1/batches/{batch_id}").json())["status"] == "ended" and b,
        120,
        "the budgeted batch to end",
    )
    assert (batch["counts"]["succeeded"], batch["counts"]["failed"]) == (3, 2), batch["counts"]
    failed = [
        spender.get(f"/v1/jobs/{i['job_id']}").json()
        for i in batch["items"]
        if i["status"] == "failed"
    ]
    assert {f["result"]["error"]["error_code"] for f in failed} == {"budget_exceeded"}
    calls = wait_for(lambda: _batch_callbacks(receiver), 30, "the batch callback")
    assert len(calls) == 1
    assert verify(spender_secret, calls[0])["counts"]["failed"] == 2
