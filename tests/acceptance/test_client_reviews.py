"""Acceptance: the client's review calls (``reviews()``, ``review()``) on a real ``genhook
serve`` with a workflow whose QC policy holds its job for review, on each store."""

from __future__ import annotations

from collections.abc import Callable

from genhook.client import CompletionPayload, Output, Receiver, Review, ReviewDecision
from tests.acceptance.harness import Genhook, wait_for
from tests.acceptance.harness import Receiver as Hooks
from tests.acceptance.test_client import client
from tests.acceptance.test_review import reviewing


def test_reviews_and_an_approval(genhook_factory: Callable[..., Genhook], receiver: Hooks) -> None:
    """reviews() lists the held job with typed outputs; review("approve", alt_text=...) lets it
    deliver, the edit in its payload."""
    g = reviewing(genhook_factory)
    g.serve(workers=1)
    with client(g) as genhook:
        accepted = genhook.trigger("review-tiny", {"item_id": "R-1"}, callback_url=receiver.url)

        def held() -> list[Review]:
            return [r for r in genhook.reviews() if r.job_id == accepted.job_id]

        (review,) = wait_for(held, 60, "the job held for review")
        assert review.status == "awaiting_review" and review.round == 1
        assert review.outputs and isinstance(review.outputs[0], Output)
        decision = genhook.review(accepted.job_id, "approve", alt_text="edited alt text")
        assert isinstance(decision, ReviewDecision) and decision.decision == "approve"
        job = genhook.wait(accepted.job_id, timeout=60)
        assert job.status == "succeeded" and job.result is not None
        assert job.result.outputs[0].alt_text == "edited alt text"
    (call,) = receiver.wait_job(accepted.job_id)
    payload = Receiver(g.secret).parse(call.body, call.headers)
    assert isinstance(payload, CompletionPayload) and payload == job.result
