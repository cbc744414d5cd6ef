"""The review queue's parts: the review body's checks, the approved payload, folding notes into a
prompt, and the store's transactions on SQLite and PostgreSQL (hold, list, reject and claim
again with the attempts spared, hold again, approve with its outbox row, a decision that comes
second, a cancel that came first, cancelling a held job, two decisions at once, retention)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from genhook.clock import ManualClock
from genhook.errors import ErrorCode, GenhookError
from genhook.nodes.generate import fold_notes
from genhook.review import APPROVED_LEAD, ReviewBody, approved_payload, check_review, parse_review
from genhook.status import AttemptOutcome, JobStatus
from genhook.store.schema import deliveries, job_reviews, services
from genhook.store.store import Store

HOOK = "https://hooks.example.com/in"
INVALID = ErrorCode.INVALID_REVIEW

WARNING = {
    "message": "delivered the best output although it failed: contrast (attempts qc: 1)",
    "failed_checks": [
        {
            "node": "qc",
            "check": "contrast",
            "measured": 31.8,
            "threshold": 100000.0,
            "comparison": ">=",
            "shortfall": 0.9997,
        }
    ],
}


def candidate(job_id: str, prompt: str = "a mug") -> dict[str, Any]:
    """A held job's payload, as the engine builds it (the parts the review reads)."""
    output = {"asset_url": "http://g/assets/x/a.jpg", "alt_text": "a mug", "caption": "mug"}
    return {
        "event": "job.completed",
        "job_id": job_id,
        "status": "success",
        "outputs": [dict(output), {**output, "asset_url": "http://g/assets/x/b.jpg"}],
        "seo": {"alt_text": "a mug", "caption": "mug", "filename_suggestion": "a-mug.jpg"},
        "metadata": {"prompt_used": prompt, "credit_cost": 1.0},
        "quality_warning": WARNING,
        "error": None,
        "timestamp": "2026-12-01T00:00:00Z",
    }


QUALITY = [
    {"node": "qc", "passed": False, "attempts": 1, "failed_checks": WARNING["failed_checks"]}
]


# -- the body, the payload, the prompt ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"decision": "maybe"}, ErrorCode.INVALID_REVIEW, "decision"),
        ({}, ErrorCode.INVALID_REVIEW, "decision"),
        ({"decision": None}, ErrorCode.INVALID_REVIEW, "decision"),
        ({"decision": "reject"}, ErrorCode.INVALID_REVIEW, "note"),
        ({"decision": "reject", "note": " \n "}, ErrorCode.INVALID_REVIEW, "note"),
        ({"decision": "reject", "note": "n" * 1001}, ErrorCode.INVALID_REVIEW, "note"),
        (
            {"decision": "reject", "note": "x", "alt_text": "y"},
            ErrorCode.INVALID_REVIEW,
            "alt_text",
        ),
        ({"decision": "approve", "caption": ["x"]}, ErrorCode.INVALID_REVIEW, "caption"),
        ({"decision": "approve", "alt_text": "a" * 1001}, ErrorCode.INVALID_REVIEW, "alt_text"),
        ({"decision": "approve", "by": "me"}, ErrorCode.UNKNOWN_FIELD, "by"),
        ("approve", ErrorCode.INVALID_REVIEW, None),
    ],
)
def test_bad_review_bodies_name_their_field(body: Any, code: ErrorCode, field: str | None) -> None:
    with pytest.raises(GenhookError) as raised:
        check_review(body)
    assert raised.value.code is code and raised.value.field == field
    assert raised.value.invalid_input  # answered 422


def test_review_bodies() -> None:
    assert check_review({"decision": "approve"}) == ReviewBody("approve")
    assert check_review(
        {"decision": "approve", "note": " fine ", "alt_text": " A mug ", "caption": None}
    ) == ReviewBody("approve", note="fine", alt_text="A mug")
    assert check_review({"decision": "reject", "note": "warmer"}) == ReviewBody("reject", "warmer")
    with pytest.raises(GenhookError) as raised:
        parse_review(b"{not json")
    assert raised.value.code is ErrorCode.INVALID_JSON


def test_approved_payload_carries_the_edits_and_still_says_what_failed() -> None:
    held = candidate("job_1")
    review = ReviewBody("approve", alt_text="A blue mug", caption="Our mug")
    approved = approved_payload(held, review)
    assert [o["alt_text"] for o in approved["outputs"]] == ["A blue mug", "A blue mug"]
    assert [o["caption"] for o in approved["outputs"]] == ["Our mug", "Our mug"]
    assert approved["seo"] == {
        "alt_text": "A blue mug",
        "caption": "Our mug",
        "filename_suggestion": "a-mug.jpg",
    }
    warning = approved["quality_warning"]
    assert warning["failed_checks"] == WARNING["failed_checks"]
    assert warning["message"] == f"{APPROVED_LEAD}; {WARNING['message']}"
    assert approved["timestamp"] != held["timestamp"]
    assert held["outputs"][0]["alt_text"] == "a mug"  # the held payload is left as it was
    # no edits: the text as made
    plain = approved_payload(held, ReviewBody("approve"))
    assert [o["alt_text"] for o in plain["outputs"]] == ["a mug", "a mug"]


def test_notes_fold_into_the_prompt_once_each_in_order() -> None:
    assert fold_notes("a mug", []) == "a mug"
    assert fold_notes("a mug", ["warmer light"]) == "a mug, warmer light"
    assert fold_notes("a mug", [" warmer light ", "no text", "warmer light", ""]) == (
        "a mug, warmer light, no text"
    )


# -- the store ----------------------------------------------------------------------------------


@pytest.fixture
def held_store(store: Store) -> Store:
    store.clock = ManualClock()
    return store


def _service(store: Store, name: str = "shop") -> str:
    return str(store.create_service(name)["service_id"])


def _submit(store: Store, service_id: str, callback: str | None = HOOK) -> str:
    job, _ = store.submit(
        service_id=service_id,
        workflow_id="review-tiny",
        workflow_version=1,
        trigger={"item_id": "SKU-1"},
        external_id="SKU-1",
        callback_url=callback,
    )
    return str(job.id)


def _hold(
    store: Store, prompt: str = "a mug", cost: float = 1.5, job: Any = None
) -> tuple[str, Any]:
    """Claim the next job (or take ``job``, claimed already) and hold it for review."""
    job = job or store.claim("w", 900)
    assert job is not None
    status = store.hold_for_review(
        job.id,
        "w",
        payload=candidate(job.id, prompt),
        quality=QUALITY,
        credit_cost=cost,
        work_seconds=2.0,
        cancelled={"job_id": job.id, "cancelled": True},
        made={"image": 1},
    )
    return job.id, status


def _callbacks(store: Store, job_id: str) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        bodies = conn.execute(
            sa.select(deliveries.c.body).where(deliveries.c.job_id == job_id)
        ).scalars()
        return [json.loads(bytes(b)) for b in bodies]


def _waiting(store: Store, service_id: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(services.c.waiting).where(services.c.id == service_id)
            ).scalar_one()
        )


def test_hold_reject_hold_again_approve(held_store: Store) -> None:
    store = held_store
    shop = _service(store)
    job_id = _submit(store, shop)
    assert _waiting(store, shop) == 1
    held_id, status = _hold(store)
    assert (held_id, status) == (job_id, JobStatus.AWAITING_REVIEW)
    job = store.job(job_id)
    assert job is not None and job.status is JobStatus.AWAITING_REVIEW
    assert job.result is None and job.finished_at is None and job.credit_cost == 1.5
    assert [a.outcome for a in store.attempts(job_id)] == [AttemptOutcome.AWAITING_REVIEW]
    assert _callbacks(store, job_id) == [] and _waiting(store, shop) == 0
    assert store.claim("w", 900) is None  # a held job is not claimable
    [listed] = store.held_reviews(shop)
    assert (listed.job_id, listed.round, listed.service, listed.external_id) == (
        job_id,
        1,
        "shop",
        "SKU-1",
    )
    assert listed.quality == QUALITY and listed.payload["metadata"]["prompt_used"] == "a mug"
    assert store.held_reviews(_service(store, "other")) == []
    assert store.review_notes(job_id) == []

    store.clock.advance(60)
    done = store.decide_review(job_id, ReviewBody("reject", note="warmer light"), by="operator")
    assert (done.status, done.round, done.decision) == (JobStatus.QUEUED, 1, "reject")
    assert store.job(job_id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert _waiting(store, shop) == 1 and store.held_reviews() == []
    assert store.review_notes(job_id) == ["warmer light"]
    again = store.claim("w", 900)
    assert again is not None and again.id == job_id
    assert again.attempts == 2 and again.counted_attempts == 1  # the retry schedule afresh
    _, status = _hold(store, prompt="a mug, warmer light", job=again)
    assert status is JobStatus.AWAITING_REVIEW
    [listed] = store.held_reviews()
    assert listed.round == 2
    [past] = listed.history
    assert (past["round"], past["decision"], past["note"]) == (1, "reject", "warmer light")
    assert past["decided_by"] == "operator" and past["prompt_used"] == "a mug"
    assert store.job(job_id).credit_cost == 3.0  # type: ignore[union-attr]

    review = ReviewBody("approve", alt_text="A mug in warm light", caption="Warm")
    done = store.decide_review(job_id, review, by="service:shop")
    assert (done.status, done.round) == (JobStatus.SUCCEEDED, 2)
    job = store.job(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.finished_at is not None
    [payload] = _callbacks(store, job_id)
    assert payload == job.result
    assert [o["alt_text"] for o in payload["outputs"]] == ["A mug in warm light"] * 2
    assert payload["seo"]["caption"] == "Warm"
    assert payload["quality_warning"]["message"].startswith(APPROVED_LEAD)
    assert payload["metadata"]["prompt_used"] == "a mug, warmer light"
    assert store.held_reviews() == []
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(job_reviews.c.round, job_reviews.c.decision, job_reviews.c.decided_by)
            .where(job_reviews.c.job_id == job_id)
            .order_by(job_reviews.c.round)
        ).all()
    assert [tuple(r) for r in rows] == [(1, "reject", "operator"), (2, "approve", "service:shop")]
    # a second decision changes nothing
    for second in (ReviewBody("approve"), ReviewBody("reject", note="x")):
        with pytest.raises(GenhookError) as raised:
            store.decide_review(job_id, second, by="operator")
        assert raised.value.code is ErrorCode.NOT_AWAITING_REVIEW
    assert len(_callbacks(store, job_id)) == 1
    with pytest.raises(GenhookError) as raised:
        store.decide_review("job_nope", ReviewBody("approve"), by="operator")
    assert raised.value.code is ErrorCode.NOT_FOUND


def test_a_cancel_asked_first_wins_over_the_hold(held_store: Store) -> None:
    store = held_store
    shop = _service(store)
    job_id = _submit(store, shop)
    claimed = store.claim("w", 900)
    assert claimed is not None
    assert store.cancel(job_id, lambda row: {}) is JobStatus.RUNNING  # flagged
    published: list[bool] = []
    status = store.hold_for_review(
        job_id,
        "w",
        payload=candidate(job_id),
        quality=QUALITY,
        credit_cost=1.0,
        work_seconds=1.0,
        cancelled={"job_id": job_id, "event": "job.failed"},
        publish=lambda: published.append(True),
    )
    assert status is JobStatus.CANCELLED and published == []
    assert store.job(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert _callbacks(store, job_id) == [{"job_id": job_id, "event": "job.failed"}]
    assert store.held_reviews() == []
    # a lease that is not the worker's: nothing
    _submit(store, shop)
    other = store.claim("w", 900)
    assert other is not None
    assert (
        store.hold_for_review(
            other.id,
            "someone-else",
            payload=candidate(other.id),
            quality=QUALITY,
            credit_cost=0.0,
            work_seconds=0.0,
            cancelled={},
        )
        is None
    )


def test_cancelling_a_held_job(held_store: Store) -> None:
    store = held_store
    _service(store)
    job_id, _ = _hold_new(store)
    assert store.cancel_held(job_id, lambda row: {"job_id": row.id, "cost": row.credit_cost}) is (
        JobStatus.CANCELLED
    )
    job = store.job(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED
    assert _callbacks(store, job_id) == [{"job_id": job_id, "cost": 1.5}]
    assert store.cancel_held(job_id, lambda row: {}) is None
    with pytest.raises(GenhookError) as raised:
        store.decide_review(job_id, ReviewBody("approve"), by="operator")
    assert raised.value.code is ErrorCode.NOT_AWAITING_REVIEW


def _hold_new(store: Store, callback: str | None = HOOK) -> tuple[str, Any]:
    service_id = store.service_by_name("shop").id  # type: ignore[union-attr]
    _submit(store, service_id, callback)
    return _hold(store)


def test_two_decisions_at_once_one_wins(held_store: Store) -> None:
    store = held_store
    _service(store)
    job_id, _ = _hold_new(store)
    results: list[Any] = []
    start = threading.Barrier(2)

    def decide(review: ReviewBody) -> None:
        start.wait()
        try:
            results.append(store.decide_review(job_id, review, by="operator").status)
        except GenhookError as exc:
            results.append(exc.code)

    threads = [
        threading.Thread(target=decide, args=(ReviewBody("approve"),)),
        threading.Thread(target=decide, args=(ReviewBody("reject", note="again"),)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ErrorCode.NOT_AWAITING_REVIEW in results and len(results) == 2
    won = next(r for r in results if r is not ErrorCode.NOT_AWAITING_REVIEW)
    job = store.job(job_id)
    assert job is not None and job.status is won
    assert len(_callbacks(store, job_id)) == (1 if won is JobStatus.SUCCEEDED else 0)


def test_retention_keeps_a_held_job_and_purges_an_ended_ones_reviews(held_store: Store) -> None:
    store = held_store
    shop = _service(store)
    job_id, _ = _hold_new(store, callback=None)
    far = store.clock.now() + 10**9
    assert store.purge_batch(shop, far, 100)["job_ids"] == []  # held: not ended, kept
    store.decide_review(job_id, ReviewBody("approve"), by="operator")
    assert store.purge_batch(shop, far, 100)["job_ids"] == [job_id]
    with store.engine.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count())
            .select_from(job_reviews)
            .where(job_reviews.c.job_id == job_id)
        ).scalar_one()
    assert left == 0 and store.job(job_id) is None
