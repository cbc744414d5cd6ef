"""Batches in the store: one transaction admits a batch's items as single triggers are admitted,
and the batch callback is outboxed once, by the transaction that ends the batch's last job.

On real SQLite and PostgreSQL stores (the ``flow`` fixture: an injected clock); the HTTP side
is in tests/acceptance/test_batches.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.api.batches import parse_batch
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.status import JobStatus
from genhook.store.batches import BATCH_KIND
from genhook.store.schema import deliveries, job_rollups, jobs, services
from genhook.store.store import Store
from tests.conftest import new_service
from tests.test_admit import _item


def _refused(field: str) -> GenhookError:
    return InvalidInput(ErrorCode.INVALID_TYPE, f"{field} is wrong", field=field)


def _submit(store: Store, service_id: str, items: list[Any], **kw: Any) -> list[dict[str, Any]]:
    return store.submit_batch(
        batch_id=kw.pop("batch_id", "bat_1"),
        service_id=service_id,
        workflow_id="product-image",
        items=items,
        callback_url=kw.pop("callback_url", "http://127.0.0.1:9/hook"),
        callback_private=True,
    )


def _batch_deliveries(store: Store, batch_id: str) -> list[dict[str, Any]]:
    with store._read() as conn:
        rows = conn.execute(sa.select(deliveries).where(deliveries.c.batch_id == batch_id))
        return [dict(r) for r in rows.mappings()]


def _end_all(store: Store, status: JobStatus = JobStatus.SUCCEEDED, most: int = 10_000) -> int:
    """Claim and finish claimable jobs (at most ``most``); how many ended."""
    ended = 0
    while ended < most and (job := store.claim("w1", 30)) is not None:
        store.finish(
            job.id,
            "w1",
            status=status,
            payload={"job_id": job.id, "status": "success"},
            error=None if status is JobStatus.SUCCEEDED else GenhookError(ErrorCode.BACKEND_ERROR),
            credit_cost=0.0,
            work_seconds=0.1,
        )
        ended += 1
    return ended


def test_entries_in_order_refused_items_named_and_jobs_tagged(flow: Store) -> None:
    svc = new_service(flow, "shop")
    items: list[Any] = [_item(flow, svc, n) for n in range(6)]
    items[1] = _refused("product_name")
    items[4] = _refused("target_style")
    entries = _submit(flow, svc, items)
    assert [e["index"] for e in entries] == list(range(6))
    assert entries[1]["error"]["field"] == "product_name"
    assert entries[4]["error"] == {
        "error_code": "invalid_type",
        "error_description": "target_style is wrong",
        "field": "target_style",
    }
    made = [e["job_id"] for e in entries if "job_id" in e]
    assert len(made) == 4
    assert {j.id for j in flow.batch_jobs("bat_1")} == set(made)
    assert {flow.job(j).batch_id for j in made} == {"bat_1"}  # type: ignore[union-attr]
    with flow._read() as conn:
        refused = conn.execute(
            sa.select(sa.func.sum(job_rollups.c.refused)).where(job_rollups.c.service_id == svc)
        ).scalar()
        waiting = conn.execute(sa.select(services.c.waiting).where(services.c.id == svc)).scalar()
        failed = conn.execute(
            sa.select(sa.func.count()).where(jobs.c.status == JobStatus.FAILED)
        ).scalar()
    assert (refused, waiting, failed) == (2, 4, 0)  # refused items are no jobs
    batch = flow.batch("bat_1")
    assert batch is not None
    counts = batch.counts()
    assert (counts["items"], counts["accepted"], counts["refused"], counts["queued"]) == (
        6,
        4,
        2,
        4,
    )


def test_the_queue_limit_refuses_the_items_past_it_alone(flow: Store) -> None:
    svc = new_service(flow, "small", queue_limit=3)
    entries = _submit(flow, svc, [_item(flow, svc, n) for n in range(5)])
    assert ["job_id" in e for e in entries] == [True, True, True, False, False]
    assert {e["error"]["error_code"] for e in entries[3:]} == {"queue_full"}


def test_the_rate_limit_holds_items_as_single_triggers(flow: Store) -> None:
    svc = new_service(flow, "slow", rate_limit="2/m")
    entries = _submit(flow, svc, [_item(flow, svc, n) for n in range(5)])
    held = {j.id: j.hold_reason for j in flow.batch_jobs("bat_1")}
    order = [held[e["job_id"]] for e in entries]
    assert order == [None, None, "rate_limit", "rate_limit", "rate_limit"]


def test_item_keys_replay_their_jobs_and_a_changed_item_conflicts(flow: Store) -> None:
    svc = new_service(flow, "keys")
    first = _submit(
        flow,
        svc,
        [_item(flow, svc, n, idempotency_key=f"k{n}", request_hash=f"h{n}") for n in range(3)],
    )
    again = _submit(
        flow,
        svc,
        [
            _item(flow, svc, 0, idempotency_key="k0", request_hash="h0"),
            _item(flow, svc, 1, idempotency_key="k1", request_hash="other"),
            _item(flow, svc, 9, idempotency_key="k9", request_hash="h9"),
        ],
        batch_id="bat_2",
    )
    assert again[0] == {"index": 0, "job_id": first[0]["job_id"], "replayed": True}
    assert again[1]["error"]["error_code"] == "idempotency_conflict"
    assert "replayed" not in again[2]
    with flow._read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 4


def test_the_last_job_to_end_outboxes_one_signed_batch_callback(flow: Store) -> None:
    svc = new_service(flow, "done")
    items: list[Any] = [_item(flow, svc, n) for n in range(4)]
    items[2] = _refused("product_name")
    entries = _submit(flow, svc, items)
    assert _end_all(flow, most=2) == 2
    assert _batch_deliveries(flow, "bat_1") == []  # one job still open
    assert flow.batch("bat_1").open == 1  # type: ignore[union-attr]
    (third,) = [j.id for j in flow.batch_jobs("bat_1") if j.status == JobStatus.QUEUED]
    assert third in {e.get("job_id") for e in entries}
    flow.cancel(third, lambda job: {"job_id": job.id, "status": "failed"})
    sent = _batch_deliveries(flow, "bat_1")
    assert len(sent) == 1
    assert (sent[0]["kind"], sent[0]["job_id"], sent[0]["service_id"]) == (BATCH_KIND, None, svc)
    body = json.loads(sent[0]["body"])
    assert body["event"] == "batch.completed" and body["batch_id"] == "bat_1"
    assert body["counts"] == {
        "items": 4,
        "accepted": 3,
        "refused": 1,
        "created": 3,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 1,
        "expired": 0,
    }
    batch = flow.batch("bat_1")
    assert batch is not None and batch.open == 0 and batch.ended_at is not None
    assert batch.callback is not None
    assert (batch.callback["delivery_id"], batch.callback["status"]) == (sent[0]["id"], "pending")
    # the outbox's claim signs it with the service's secret, under the batch's callback policy
    leased = flow.claim_deliveries(10, 30, "o1")
    assert [(d.id, d.callback_private, d.is_alert) for d in leased] == [
        (sent[0]["id"], True, False)
    ]


def test_a_batch_that_creates_no_job_ends_at_once(flow: Store) -> None:
    svc = new_service(flow, "empty")
    _submit(flow, svc, [_refused("a"), _refused("b")])
    sent = _batch_deliveries(flow, "bat_1")
    assert len(sent) == 1
    assert json.loads(sent[0]["body"])["counts"]["refused"] == 2


def test_a_batch_without_callback_url_outboxes_nothing(flow: Store) -> None:
    svc = new_service(flow, "quiet")
    _submit(flow, svc, [_item(flow, svc, 0)], callback_url=None)
    _end_all(flow, JobStatus.FAILED)
    assert _batch_deliveries(flow, "bat_1") == []
    assert flow.batch("bat_1").ended_at is not None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([], "invalid_batch", None),
        ({}, "invalid_batch", "items"),
        ({"items": {}}, "invalid_batch", "items"),
        ({"items": []}, "invalid_batch", "items"),
        ({"items": [{}] * 1001}, "batch_too_large", "items"),
        ({"items": [{}], "extra": 1}, "unknown_field", "extra"),
        ({"items": [{}], "callback_url": "ftp://x"}, "invalid_callback_url", "callback_url"),
    ],
)
def test_a_batch_body_that_is_not_one_is_refused_with_a_stable_code(
    body: Any, code: str, field: str | None
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_batch(body)
    assert (caught.value.code.value, caught.value.field) == (code, field)
