"""Real answers have the shapes the OpenAPI document declares (in process, on a real SQLite store).

The app that ``genhook serve`` builds answers a walk through its routes (triggers accepted,
replayed and refused, a job, the listing, cancel, retry, deliveries and their replay, a batch,
workflows, the dry run, health, readiness, the operator's routes, schedules, reviews, and error
answers); each answer is validated by schemathesis against the document's schema for its
operation and status (shape, status code, content type). The fuzzer
(tests/acceptance/test_fuzz_api.py) makes up requests; this walk reaches the answers a made-up
request rarely gets, such as a succeeded replay. Also the regressions the fuzzer found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient

from genhook.api.app import create_app
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.paths import shipped_dir
from genhook.runtime import Runtime
from tests.databases import database_url

ADMIN = "gh-admin-shapes-0123456789abcdef"
TRIGGER = {
    "product_id": "SKU-123",
    "product_name": "Linen Shirt",
    "target_style": "lifestyle",
    "target_platform": "instagram_feed",
}


class Walk:
    """A client of the in-process app that checks every answer against the document."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.key = key
        self.schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        self.checked: set[tuple[str, str, int]] = set()

    def call(self, method: str, path: str, template: str | None = None, **kw: Any) -> Any:
        operator = path.startswith(("/v1/ops", "/dashboard"))
        headers = {"Authorization": f"Bearer {ADMIN if operator else self.key}"}
        headers.update(kw.pop("headers", {}))
        answer: httpx.Response = self.client.request(method, path, headers=headers, **kw)
        operation = self.schema[template or path][method]
        operation.validate_response(answer)  # FailureGroup, with the reasons, when it does not
        self.checked.add((method, template or path, answer.status_code))
        return answer


@pytest.fixture(params=["sqlite", "postgresql"])
def walk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Walk]:
    with database_url(request.param, tmp_path) as url:
        yield from _walk(tmp_path, url)


def _walk(tmp_path: Path, url: str) -> Iterator[Walk]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        workflows_dir=shipped_dir("workflows"),
        admin_key=ADMIN,
        allow_private_callbacks=True,  # a callback URL on loopback is kept; nothing sends here
    ).resolved()
    runtime = Runtime.build(settings, clock=ManualClock())
    try:
        with TestClient(create_app(runtime), base_url="http://127.0.0.1:8080") as client:
            yield Walk(client, runtime.store.create_service("shop")["api_key"])
    finally:
        runtime.store.close()


RUNS = "/v1/workflows/{workflow_id}/runs"
JOB = "/v1/jobs/{job_id}"


def test_real_answers_have_their_documented_shapes(walk: Walk) -> None:
    w = walk
    body = {**TRIGGER, "callback_url": "http://127.0.0.1:9/hook", "client_metadata": {"a": 1}}
    first = w.call(
        "POST",
        "/v1/workflows/product-image/runs",
        RUNS,
        json=body,
        headers={"Idempotency-Key": "k1"},
    )
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    again = w.call(
        "POST",
        "/v1/workflows/product-image/runs",
        RUNS,
        json=body,
        headers={"Idempotency-Key": "k1"},
    )
    assert again.status_code == 200 and again.json()["job_id"] == job_id
    refused = w.call("POST", "/v1/workflows/product-image/runs", RUNS, json={"product_id": "x"})
    assert refused.status_code == 422 and refused.json()["job_id"]
    not_json = w.call(
        "POST",
        "/v1/workflows/product-image/runs",
        RUNS,
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 422 and not_json.json()["job_id"] is None
    assert w.call("POST", "/v1/workflows/nope/runs", RUNS, json=TRIGGER).status_code == 404
    assert w.call("GET", f"/v1/jobs/{job_id}", JOB).status_code == 200
    assert w.call("GET", f"/v1/jobs/{refused.json()['job_id']}", JOB).status_code == 200
    assert w.call("GET", "/v1/jobs/job_nope", JOB).status_code == 404
    page = w.call("GET", "/v1/jobs", params={"limit": 1})
    assert page.status_code == 200 and page.json()["next_cursor"]
    assert w.call("GET", "/v1/jobs", params={"status": "nope"}).status_code == 422
    cancelled = w.call("POST", f"/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = w.call("POST", f"/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    # found by the fuzzer: the stream was documented as one string, not as events
    events = w.call("GET", f"/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/events")
    assert events.status_code == 200 and "event: cancelled" in events.text
    retry = w.call("POST", f"/v1/jobs/{job_id}/retry", "/v1/jobs/{job_id}/retry")
    assert retry.status_code == 202 and retry.json()["retry_of"] == job_id
    assert w.call("GET", f"/v1/jobs/{job_id}", JOB).json()["retried_by"]
    log = w.call("GET", "/v1/deliveries", params={"job_id": job_id})
    deliveries = log.json()["deliveries"]
    assert log.status_code == 200 and deliveries
    delivery_id = deliveries[0]["delivery_id"]
    replay = "/v1/deliveries/{delivery_id}/replay"
    assert w.call("POST", f"/v1/deliveries/{delivery_id}/replay", replay).status_code == 202

    batch = w.call(
        "POST",
        "/v1/workflows/product-image/batches",
        "/v1/workflows/{workflow_id}/batches",
        json={"items": [TRIGGER, {"product_id": "x"}, {**TRIGGER, "idempotency_key": "b"}]},
    )
    assert batch.status_code == 202, batch.text
    batch_id = batch.json()["batch_id"]
    assert w.call("GET", f"/v1/batches/{batch_id}", "/v1/batches/{batch_id}").status_code == 200

    assert w.call("GET", "/v1/workflows").status_code == 200
    one = "/v1/workflows/{workflow_id}"
    assert w.call("GET", "/v1/workflows/product-image", one).status_code == 200
    dry = "/v1/workflows/{workflow_id}/dry-run"
    assert (
        w.call("POST", "/v1/workflows/product-image/dry-run", dry, json=TRIGGER).status_code == 200
    )
    assert w.call("GET", "/v1/schemas/completion-v1.json").status_code == 200
    assert w.call("GET", "/healthz").status_code == 200
    assert w.call("GET", "/readyz").status_code in (200, 503)
    assert w.call("GET", "/v1/ops/summary").status_code == 200
    resume = "/v1/ops/services/{service}/resume"
    assert w.call("POST", "/v1/ops/services/shop/resume", resume).status_code == 200
    assert w.call("POST", "/v1/ops/services/nope/resume", resume).status_code == 404
    assert w.call("GET", "/v1/ops/endpoints").status_code == 200
    enable = {"service": "shop", "endpoint": "http://127.0.0.1:9"}
    assert w.call("POST", "/v1/ops/endpoints/enable", json=enable).status_code == 200
    assert w.call("GET", "/v1/schedules").status_code == 200
    assert w.call("GET", "/v1/reviews").status_code == 200
    assert w.call("GET", "/v1/ops/reviews").status_code == 200
    review = "/v1/jobs/{job_id}/review"
    decided = w.call("POST", f"/v1/jobs/{job_id}/review", review, json={"decision": "approve"})
    assert decided.status_code == 409
    assert w.call("GET", "/metrics").status_code == 200
    assert w.call("GET", "/dashboard").status_code == 200
    assert len(w.checked) >= 30, sorted(w.checked)


def test_a_body_that_is_not_utf8_is_invalid_json_on_every_route(walk: Walk) -> None:
    """Found by the fuzzer: a JSON route of FastAPI's own parsing answered a body that is not
    UTF-8 with 400 ``invalid_value`` (undocumented; every other route says 422 invalid_json)."""
    w = walk
    for raw in (b"\xff\xfe{", b"{not json"):
        answer = w.call(
            "POST",
            "/v1/ops/endpoints/enable",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error_code"] == "invalid_json"


def test_a_nul_in_the_path_or_a_query_value_is_refused_on_every_store(walk: Walk) -> None:
    """Found by the fuzzer: GET /v1/deliveries?job_id= with a NUL answered 500 on PostgreSQL
    (which cannot compare text holding one); a NUL names nothing and filters nothing."""
    w = walk
    answer = w.call("GET", "/v1/deliveries", params={"job_id": "job_\x00x"})
    assert answer.status_code == 422 and answer.json()["field"] == "job_id", answer.text
    answer = w.call("GET", "/v1/jobs", params={"external_id": "a\x00"})
    assert answer.status_code == 422 and answer.json()["field"] == "external_id", answer.text
    for path, template in (
        ("/v1/jobs/job_%00x", JOB),
        ("/v1/batches/bat_%00", "/v1/batches/{batch_id}"),
        ("/v1/ops/services/a%00/resume", "/v1/ops/services/{service}/resume"),
    ):
        answer = w.call("POST" if "resume" in path else "GET", path, template)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json()["error_code"] == "not_found"
