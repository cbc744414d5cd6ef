"""Acceptance: the trigger's edge on a real server. Unknown fields, idempotent refusals, hostile
JSON (SQLite and PostgreSQL), and the envelope kept out of what is generated."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.acceptance.harness import Genhook, Receiver, verify

PRODUCT = {
    "product_id": "SKU-5",
    "product_name": "Oak Stool",
    "target_style": "minimal",
    "target_platform": "x_post",
}
RUNS = "/v1/workflows/product-image/runs"
DRY = "/v1/workflows/product-image/dry-run"

HOSTILE = {
    "deep nesting": b'{"product_id": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "5000-digit integer": b'{"product_id": ' + b"9" * 5000 + b"}",
    "lone surrogate": b'{"product_id": "\\ud800", "product_name": "x"}',
    "NaN": b'{"product_id": "A", "product_name": NaN}',
    "Infinity": b'{"product_id": "A", "product_name": Infinity}',
    "1e999": b'{"product_id": "A", "product_name": 1e999}',
    "NUL in a valid trigger": b'{"product_id": "A\\u0000", "product_name": "x", '
    b'"target_style": "minimal", "target_platform": "x_post"}',
    "NUL in an invalid trigger": b'{"product_id": "A\\u0000"}',
    "NUL in a key": b'{"product_id\\u0000": "A"}',
    "duplicate callback_url": b'{"product_id": "A", "product_name": "x", "target_style": '
    b'"minimal", "target_platform": "x_post", "callback_url": "http://127.0.0.1:9/a", '
    b'"callback_url": "http://127.0.0.1:9/b"}',
}


def stored_jobs(g: Genhook) -> int:
    """How many jobs the server's database holds, read from the database itself."""
    [row] = g.rows("SELECT count(*) AS n FROM jobs")
    return int(row["n"])


@pytest.fixture
def any_store(genhook_factory: Callable[..., Genhook]) -> Genhook:
    """A running genhook on a real SQLite file, or on a real PostgreSQL database (db_kind)."""
    g = genhook_factory()
    g.serve(workers=1)
    return g


def test_hostile_json_is_422_and_nothing_is_stored(any_store: Genhook) -> None:
    """Each form that gave 500 (parser or database) is 422 invalid_json, on runs and dry-run,
    and leaves no job behind; the server then still accepts a clean trigger."""
    g = any_store
    for name, raw in HOSTILE.items():
        for route in (RUNS, DRY):
            answer = g.http.post(route, content=raw, headers={"content-type": "application/json"})
            assert answer.status_code == 422, (name, route, answer.text)
            assert answer.json()["error_code"] == "invalid_json", (name, answer.json())
            assert answer.json()["error_description"], name
    assert stored_jobs(g) == 0
    # an external id longer than its column (the template sets no maxLength): 422, not 500
    long_id = g.trigger("tiny", {"item_id": "i" * 300})
    assert (long_id.status_code, long_id.json()["field"]) == (422, "item_id"), long_id.text
    # an invalid trigger whose text is clean is still recorded (and its input stored) as before
    refused = g.trigger("product-image", {"product_id": "A", "product_name": 5})
    assert refused.status_code == 422 and refused.json()["job_id"]
    assert g.trigger("product-image", PRODUCT).status_code == 202
    assert stored_jobs(g) == 3


def test_unknown_field_is_refused_naming_it(service: Genhook) -> None:
    """A misspelled field: 422 unknown_field naming it (with the declared name), recorded as a
    failed job with attempts 0."""
    answer = service.trigger("product-image", {**PRODUCT, "product_categroy": "chairs"})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert (body["error_code"], body["field"]) == ("unknown_field", "product_categroy")
    assert "product_category" in body["error_description"]
    job = service.job(body["job_id"])
    assert job["status"] == "failed"
    assert job["result"]["metadata"]["attempts"] == 0
    assert job["result"]["error"]["error_code"] == "unknown_field"


IGNORING_FLOW = """\
id: whole-record
version: 1
description: Takes a CRM's whole record; fields it does not declare are ignored.
external_id: item_id
additional_fields: ignore
input:
  required: [item_id]
  properties:
    item_id: {type: string, minLength: 1}
nodes:
  image:
    kind: generate
    with:
      prompt: "item ${input.item_id}"
      subject: ${input.item_id}
      width: 128
      height: 128
  export:
    kind: export
    with:
      image: ${image.image}
      platforms: thumb
outputs:
  assets:
    - ${export.assets}
"""


def test_a_template_can_opt_into_ignoring_extra_fields(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """`additional_fields: ignore`: extra fields are accepted (202) and the job succeeds; the
    published input_schema says so; the envelope is still split off and checked."""
    g = genhook_factory()
    (g.tmp / "flows" / "whole-record.yaml").write_text(IGNORING_FLOW, encoding="utf-8")
    g.serve(workers=1)
    answer = g.trigger("whole-record", {"item_id": "R-1", "crm_owner": "ana", "stage": 3})
    assert answer.status_code == 202, answer.text
    assert g.wait_status(answer.json()["job_id"], {"succeeded"})["status"] == "succeeded"
    schema = g.http.get("/v1/workflows/whole-record").json()["input_schema"]
    assert "additionalProperties" not in schema and "callback_url" in schema["properties"]
    strict = g.http.get("/v1/workflows/tiny").json()["input_schema"]
    assert strict["additionalProperties"] is False
    bad = g.trigger("whole-record", {"item_id": "R-2", "priority": "asap"})
    assert (bad.status_code, bad.json()["field"]) == (422, "priority")


def test_same_key_same_invalid_body_same_answer_one_callback(
    service: Genhook, receiver: Receiver
) -> None:
    """A retried invalid request is the same request: the same 422 and job_id, one delivery,
    one callback. Another body with the key, valid or not, is 409."""
    body = {**PRODUCT, "target_style": "baroque", "callback_url": receiver.url}
    key = {"Idempotency-Key": "invalid-retry-1"}
    first = service.trigger("product-image", body, **key)
    again = service.trigger("product-image", dict(reversed(list(body.items()))), **key)
    assert first.status_code == again.status_code == 422
    assert first.json() == again.json()
    job_id = first.json()["job_id"]
    (call,) = receiver.wait_job(job_id)
    assert verify(service.secret, call)["error"]["error_code"] == "unknown_style"
    deliveries = service.http.get("/v1/deliveries", params={"job_id": job_id}).json()
    assert len(deliveries["deliveries"]) == 1
    other = service.trigger("product-image", {**body, "target_style": "gothic"}, **key)
    assert other.status_code == 409 and other.json()["error_code"] == "idempotency_conflict"
    valid = service.trigger("product-image", {**PRODUCT, "callback_url": receiver.url}, **key)
    assert valid.status_code == 409
    third = service.trigger("product-image", body, **key)
    assert third.json()["job_id"] == job_id
    assert len(receiver.for_job(job_id)) == 1
    assert (
        len(service.http.get("/v1/deliveries", params={"job_id": job_id}).json()["deliveries"]) == 1
    )


def _asset_digests(g: Genhook, result: dict[str, Any]) -> list[str]:
    digests = []
    for output in result["outputs"]:
        data = g.http.get(output["asset_url"]).content
        digests.append(hashlib.sha256(data).hexdigest())
        assert digests[-1] == output["sha256"]
    return digests


def test_callback_url_changes_neither_seed_nor_image(service: Genhook, receiver: Receiver) -> None:
    """No callback, callback A, callback B: one seed, byte-identical assets, and the dry-run's
    seed is the run's. The stored job keeps the callback apart from the input."""
    other = Receiver().start()
    try:
        bodies = [PRODUCT, {**PRODUCT, "callback_url": receiver.url}]
        bodies.append({**PRODUCT, "callback_url": other.url, "priority": "high"})
        ids = [service.trigger("product-image", b).json()["job_id"] for b in bodies]
        results = [service.wait_status(i, {"succeeded"})["result"] for i in ids]
        other.wait_job(ids[2])
    finally:
        other.stop()
    seeds = {r["metadata"]["seed"] for r in results}
    assert len(seeds) == 1
    digests = [_asset_digests(service, r) for r in results]
    assert digests[0] == digests[1] == digests[2]
    plan = service.http.post(DRY, json={**PRODUCT, "callback_url": receiver.url}).json()
    assert [s["seed"] for s in plan["steps"] if s["kind"] == "generate"] == list(seeds)
    assert "callback_url" not in plan["input"]
    assert service.job(ids[1])["callback_url"] == receiver.url


def test_refused_before_storing_has_null_job_id(service: Genhook) -> None:
    """A body that is not strict JSON has no job: `job_id` is null; the shape is the same."""
    answer = service.http.post(
        RUNS, content=b'{"a": NaN}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert set(answer.json()) == {"error_code", "error_description", "field", "job_id"}
    assert answer.json()["job_id"] is None
