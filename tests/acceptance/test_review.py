"""The review queue on a real `genhook serve`, SQLite and PostgreSQL, with a real receiver that
checks every callback's signature (standardwebhooks): a workflow whose QC policy is
``on_fail: review`` and whose quality check can never pass (an impossible contrast threshold)
holds its job ``awaiting_review``: nothing is delivered, ``GET /v1/reviews`` lists it with its
outputs (asset URLs that serve the bytes), QC figures and text, and its credits are settled.
Rejected with a note, it generates again with the note in ``prompt_used`` (and spends again);
approved with edited alt text and caption, exactly one callback goes out, carrying the edits and
a ``quality_warning`` that still says what failed. Bad bodies answer 422 with stable codes, a
job not held answers 409, another service's job 403, and a held job can be cancelled."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from genhook.review import APPROVED_LEAD
from tests.acceptance.harness import ROOT, Genhook, Receiver, verify, wait_for

ADMIN = "review-test-operator-key"

REVIEW_FLOW = """\
id: review-tiny
version: 1
description: One small image whose quality check never passes, held for a person's review.
external_id: item_id
input:
  required: [item_id]
  properties:
    item_id: {type: string, minLength: 1}
nodes:
  prompt:
    kind: prompt_builder
    with:
      template: "product shot of item {{ input.item_id }}"
  image:
    kind: generate
    with:
      prompt: ${prompt.prompt}
      subject: ${input.item_id}
      width: 128
      height: 128
  qc:
    kind: quality_check
    with:
      result: ${image.result}
      min_contrast: 100000
      max_retries: 0
      on_fail: review
  seo:
    kind: metadata
    with:
      alt_text: "item {{ input.item_id }}"
      caption: "item {{ input.item_id }} caption"
      filename: "{{ input.item_id }}"
  export:
    kind: export
    with:
      image: ${qc.image}
      platforms: thumb
      seo: ${seo.seo}
outputs:
  assets:
    - ${export.assets}
  seo: ${seo.seo}
"""


def reviewing(factory: Callable[..., Genhook]) -> Genhook:
    """A genhook with the review workflow, procedural priced at one credit per image."""
    g = factory(GENHOOK_ADMIN_KEY=ADMIN)
    (g.tmp / "flows" / "review-tiny.yaml").write_text(REVIEW_FLOW, encoding="utf-8")
    shipped = (ROOT / "presets" / "pricing.yaml").read_text(encoding="utf-8")
    procedural = 'procedural:\n  "*": {per_image: 0, per_video_second: 0}'
    one_credit = 'procedural:\n  "*": {per_image: 1.0, per_video_second: 0}'
    priced = shipped.replace(procedural, one_credit, 1)
    assert priced != shipped
    (g.tmp / "pricing.yaml").write_text(priced, encoding="utf-8")
    g.env["GENHOOK_PRICING_FILE"] = str(g.tmp / "pricing.yaml")
    return g


def held(g: Genhook, job_id: str, round_: int) -> dict[str, Any]:
    """The job's entry in ``GET /v1/reviews`` once it is held in ``round_``."""

    def found() -> dict[str, Any] | None:
        answer = g.http.get("/v1/reviews")
        assert answer.status_code == 200, answer.text
        mine = [r for r in answer.json()["reviews"] if r["job_id"] == job_id]
        return mine[0] if mine and mine[0]["round"] == round_ else None

    return dict(wait_for(found, 60, f"{job_id} held for review (round {round_})"))


def review(g: Genhook, job_id: str, body: Any) -> httpx.Response:
    return g.http.post(f"/v1/jobs/{job_id}/review", json=body)


def test_review_queue_end_to_end(
    genhook_factory: Callable[..., Genhook], receiver: Receiver
) -> None:
    g = reviewing(genhook_factory)
    g.serve(workers=1)
    accepted = g.trigger("review-tiny", {"item_id": "SKU-7", "callback_url": receiver.url})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    # held: not delivered, no callback, outputs stored and served, credits settled
    job = g.wait_status(job_id, {"awaiting_review", "succeeded", "failed"})
    assert job["status"] == "awaiting_review", job
    assert job["result"] is None and job["finished_at"] is None
    assert job["credit_cost"] == pytest.approx(1.0)
    assert [a["outcome"] for a in job["attempts"]] == ["awaiting_review"]
    first = held(g, job_id, 1)
    assert first["status"] == "awaiting_review" and first["external_id"] == "SKU-7"
    assert first["workflow_id"] == "review-tiny" and first["earlier_rounds"] == []
    [output] = first["outputs"]
    assert output["alt_text"] == "item SKU-7" and output["caption"] == "item SKU-7 caption"
    image = httpx.get(output["asset_url"], timeout=30)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(image.content).hexdigest() == output["sha256"]
    warning = first["quality_warning"]
    [check] = [c for c in warning["failed_checks"] if c["check"] == "contrast"]
    assert check["threshold"] == 100000 and check["measured"] < 100000
    [report] = first["quality"]
    assert (report["node"], report["passed"], report["attempts"]) == ("qc", False, 1)
    assert [(c["check"], c["measured"]) for c in report["failed_checks"]] == [
        (c["check"], c["measured"]) for c in warning["failed_checks"]
    ]
    assert first["metadata"]["prompt_used"].startswith("product shot of item SKU-7")
    assert first["metadata"]["credit_cost"] == pytest.approx(1.0)
    assert first["seo"]["alt_text"] == "item SKU-7"
    time.sleep(1.5)  # the outbox polls every 0.3 s: a callback would have gone out by now
    assert receiver.for_job(job_id) == []
    events = g.rows("SELECT COUNT(*) AS n FROM deliveries WHERE job_id = :j", j=job_id)
    assert events[0]["n"] == 0

    # bad bodies: 422 with stable codes, nothing changed
    for body, code, field in (
        ({"decision": "maybe"}, "invalid_review", "decision"),
        ({}, "invalid_review", "decision"),
        ({"decision": "reject"}, "invalid_review", "note"),
        ({"decision": "reject", "note": "   "}, "invalid_review", "note"),
        ({"decision": "reject", "note": "x", "caption": "y"}, "invalid_review", "caption"),
        ({"decision": "approve", "alt_text": 5}, "invalid_review", "alt_text"),
        ({"decision": "approve", "caption": "c" * 2201}, "invalid_review", "caption"),
        ({"decision": "approve", "comment": "ok"}, "unknown_field", "comment"),
        (["approve"], "invalid_review", None),
    ):
        answer = review(g, job_id, body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error_code"] == code and answer.json()["field"] == field, body
    answer = g.http.post(
        f"/v1/jobs/{job_id}/review", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422 and answer.json()["error_code"] == "invalid_json"
    # another service sees none of it and cannot decide
    other = g.new_service("other")
    assert other.get("/v1/reviews").json() == {"reviews": []}
    answer = other.post(f"/v1/jobs/{job_id}/review", json={"decision": "approve"})
    assert answer.status_code == 403, answer.text
    assert g.job(job_id)["status"] == "awaiting_review"

    # rejected with a note: generated again, the note folded into the prompt
    note = "warmer light, the label facing the camera"
    answer = review(g, job_id, {"decision": "reject", "note": note})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "job_id": job_id,
        "decision": "reject",
        "status": "queued",
        "round": 1,
    }
    second = held(g, job_id, 2)
    assert note in second["metadata"]["prompt_used"]
    assert second["metadata"]["prompt_used"].startswith("product shot of item SKU-7")
    assert second["metadata"]["credit_cost"] == pytest.approx(2.0)
    [past] = second["earlier_rounds"]
    assert past["decision"] == "reject" and past["note"] == note
    assert past["decided_by"] == "service:shop"
    assert note not in (past["prompt_used"] or "")
    job = g.job(job_id)
    assert job["credit_cost"] == pytest.approx(2.0)
    assert [a["outcome"] for a in job["attempts"]] == ["awaiting_review", "awaiting_review"]
    assert receiver.for_job(job_id) == []

    # approved with edited text: one callback, signed, with the edits, QC's failure still said
    alt, caption = "A linen shirt, folded, on a white table", "Our linen shirt, reviewed by hand"
    answer = review(g, job_id, {"decision": "approve", "alt_text": alt, "caption": caption})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded" and answer.json()["round"] == 2
    [call] = receiver.wait_job(job_id)
    payload = verify(g.secret, call)
    assert payload["event"] == "job.completed" and payload["status"] == "success"
    assert payload["job_id"] == job_id and payload["external_id"] == "SKU-7"
    assert [o["alt_text"] for o in payload["outputs"]] == [alt]
    assert [o["caption"] for o in payload["outputs"]] == [caption]
    assert payload["seo"]["alt_text"] == alt and payload["seo"]["caption"] == caption
    assert payload["outputs"][0]["asset_url"] == second["outputs"][0]["asset_url"]
    assert payload["outputs"][0]["sha256"] == second["outputs"][0]["sha256"]
    quality = payload["quality_warning"]
    assert quality is not None and quality["message"].startswith(APPROVED_LEAD)
    assert quality["failed_checks"] == second["quality_warning"]["failed_checks"]
    assert note in payload["metadata"]["prompt_used"]
    assert payload["metadata"]["credit_cost"] == pytest.approx(2.0)
    image = httpx.get(payload["outputs"][0]["asset_url"], timeout=30)
    assert hashlib.sha256(image.content).hexdigest() == payload["outputs"][0]["sha256"]
    job = g.job(job_id)
    assert job["status"] == "succeeded" and job["result"] == payload
    assert job["finished_at"] is not None

    # decided once: a second decision is 409, the queue is empty, no second callback
    answer = review(g, job_id, {"decision": "approve"})
    assert answer.status_code == 409 and answer.json()["error_code"] == "not_awaiting_review"
    assert g.http.get("/v1/reviews").json() == {"reviews": []}
    time.sleep(1.0)
    assert len(receiver.for_job(job_id)) == 1

    # a held job can be cancelled: it ends cancelled, its callback says so
    other_job = g.trigger("review-tiny", {"item_id": "SKU-8", "callback_url": receiver.url})
    cancel_id = other_job.json()["job_id"]
    held(g, cancel_id, 1)
    answer = g.http.post(f"/v1/jobs/{cancel_id}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled", answer.text
    [call] = receiver.wait_job(cancel_id)
    cancelled = verify(g.secret, call)
    assert cancelled["event"] == "job.failed"
    assert cancelled["error"]["error_code"] == "cancelled"
    assert cancelled["metadata"]["credit_cost"] == pytest.approx(1.0)
    answer = review(g, cancel_id, {"decision": "approve"})
    assert answer.status_code == 409 and answer.json()["error_code"] == "not_awaiting_review"
    # a job never held: 409 too
    plain = g.trigger("tiny", {"item_id": "PLAIN-1"}).json()["job_id"]
    g.wait_status(plain, {"succeeded"})
    answer = review(g, plain, {"decision": "approve"})
    assert answer.status_code == 409 and answer.json()["error_code"] == "not_awaiting_review"


def test_operator_reviews_every_service(genhook_factory: Callable[..., Genhook]) -> None:
    """``/v1/ops/reviews`` lists every service's held jobs (each with its service); the
    operator's approve delivers like the service's; the service's key is refused there."""
    g = reviewing(genhook_factory)
    other = g.new_service("cms")
    g.serve(workers=1)
    mine = g.trigger("review-tiny", {"item_id": "OPS-1"}).json()["job_id"]
    theirs = other.post("/v1/workflows/review-tiny/runs", json={"item_id": "OPS-2"}).json()
    held(g, mine, 1)
    ops = httpx.Client(base_url=g.base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    try:
        listed = wait_for(
            lambda: len(r := ops.get("/v1/ops/reviews").json()["reviews"]) == 2 and r,
            60,
            "both services' jobs held",
        )
        assert {(r["service"], r["job_id"]) for r in listed} == {
            ("shop", mine),
            ("cms", theirs["job_id"]),
        }
        assert g.http.get("/v1/ops/reviews").status_code == 401
        assert g.http.post(f"/v1/ops/jobs/{mine}/review", json={}).status_code == 401
        answer = ops.post(
            f"/v1/ops/jobs/{theirs['job_id']}/review",
            json={"decision": "approve", "caption": "approved by ops"},
        )
        assert answer.status_code == 200, answer.text
        done = other.get(f"/v1/jobs/{theirs['job_id']}").json()
        assert done["status"] == "succeeded"
        assert [o["caption"] for o in done["result"]["outputs"]] == ["approved by ops"]
        rows = g.rows(
            "SELECT decided_by, decision FROM job_reviews WHERE job_id = :j", j=theirs["job_id"]
        )
        assert rows == [{"decided_by": "operator", "decision": "approve"}]
        [left] = ops.get("/v1/ops/reviews").json()["reviews"]
        assert left["job_id"] == mine
        answer = ops.post(f"/v1/ops/jobs/{theirs['job_id']}/review", json={"decision": "approve"})
        assert answer.status_code == 409
    finally:
        ops.close()
