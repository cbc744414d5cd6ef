"""Acceptance: real `genhook serve`, real callbacks verified with standardwebhooks."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.acceptance.harness import Genhook, Receiver, verify
from tests.conftest import SAMPLES

SAMPLE_FILES = sorted(SAMPLES.glob("*/*.json"))
PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG", "avif": "AVIF"}


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_workflow_round_trip(sample: Path, service: Genhook, receiver: Receiver) -> None:
    """Trigger -> 202 -> a signed success callback; every asset fetched and decoded."""
    body = {**json.loads(sample.read_text(encoding="utf-8")), "callback_url": receiver.url}
    answer = service.trigger(sample.parent.name, body)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert set(accepted) >= {"job_id", "status", "workflow_id", "status_url", "created_at"}
    assert accepted["status"] == "queued" and accepted["workflow_id"] == sample.parent.name
    (call,) = receiver.wait_job(accepted["job_id"])
    payload = verify(service.secret, call)
    assert payload["status"] == "success" and payload["event"] == "job.completed"
    assert payload["outputs"], "a success has outputs"
    for output in payload["outputs"]:
        got = httpx.get(output["asset_url"], timeout=30)
        assert got.status_code == 200
        assert got.headers["content-type"] == f"{output['asset_type']}/{output['format']}"
        assert len(got.content) == output["bytes"]
        if output["asset_type"] == "video":  # decoded with PyAV in tests/test_video_pipeline.py
            poster = httpx.get(output["poster_url"], timeout=30)
            assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
            continue
        image = Image.open(io.BytesIO(got.content))
        assert image.size == (output["width"], output["height"])
        assert image.format == PIL_FORMATS[output["format"]]
    job = service.http.get(accepted["status_url"]).json()
    assert job["status"] == "succeeded"
    assert job["result"] == payload
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"]
    found = service.http.get("/v1/jobs", params={"external_id": payload["external_id"]}).json()
    assert accepted["job_id"] in [j["job_id"] for j in found["jobs"]]


def test_invalid_trigger_gets_422_and_a_failed_callback(
    service: Genhook, receiver: Receiver
) -> None:
    """An unknown style: 422 with code, field and job_id at once, and a signed failed payload."""
    body = {
        "product_id": "SKU-1",
        "product_name": "Mug",
        "target_style": "baroque",
        "target_platform": "instagram_feed",
        "callback_url": receiver.url,
    }
    answer = service.trigger("product-image", body)
    assert answer.status_code == 422
    error = answer.json()
    assert error["error_code"] == "unknown_style" and error["field"] == "target_style"
    assert error["error_description"] and error["job_id"].startswith("job_")
    (call,) = receiver.wait_job(error["job_id"])
    payload = verify(service.secret, call)
    assert payload["status"] == "failed" and payload["event"] == "job.failed"
    assert payload["error"] == {k: error[k] for k in ("error_code", "error_description", "field")}
    assert payload["external_id"] == "SKU-1"
    job = service.job(error["job_id"])
    assert job["status"] == "failed" and job["attempts"] == []


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (
            {"product_name": "x", "target_style": "minimal", "target_platform": "x_post"},
            "missing_field",
            "product_id",
        ),
        (
            {
                "product_id": 5,
                "product_name": "x",
                "target_style": "minimal",
                "target_platform": "x_post",
            },
            "invalid_type",
            "product_id",
        ),
        (
            {
                "product_id": "a",
                "product_name": "x",
                "target_style": "minimal",
                "target_platform": "fax",
            },
            "unknown_platform",
            "target_platform",
        ),
        (
            {
                "product_id": "a",
                "product_name": "x",
                "target_style": "minimal",
                "target_platform": "x_post",
                "callback_url": "gopher://x",
            },
            "invalid_callback_url",
            "callback_url",
        ),
    ],
)
def test_invalid_inputs(service: Genhook, body: dict[str, Any], code: str, field: str) -> None:
    """Each kind of invalid input: 422 with its stable code and the field as sent."""
    answer = service.trigger("product-image", body)
    assert answer.status_code == 422
    assert (answer.json()["error_code"], answer.json()["field"]) == (code, field)


def test_bad_bodies_never_500(service: Genhook) -> None:
    """Not JSON, not an object, too large: clear errors with stable codes, never a 500."""
    url = "/v1/workflows/product-image/runs"
    not_json = service.http.post(
        url, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422 and not_json.json()["error_code"] == "invalid_json"
    array = service.http.post(url, json=[1, 2])
    assert array.status_code == 422 and array.json()["error_code"] == "invalid_body"
    huge = service.http.post(url, content=b"{" + b" " * 300_000 + b"}")
    assert huge.status_code == 413 and huge.json()["error_code"] == "payload_too_large"
    binary = service.http.post(url, content=bytes(range(256)))
    assert binary.status_code == 422 and binary.json()["error_code"] == "invalid_json"
    form = service.http.post(url, content=b"a=1", headers={"content-type": "text/plain"})
    assert form.status_code == 415 and form.json()["error_code"] == "unsupported_media_type"


def test_auth_and_ownership(genhook_factory: Any, service: Genhook) -> None:
    """No key 401, a wrong key 401, another service's job 403, unknown ids 404."""
    url = "/v1/workflows/product-image/runs"
    assert httpx.post(service.base + url, json={}).status_code == 401
    wrong = httpx.post(service.base + url, json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error_code"] == "unauthorized"
    body = {
        "product_id": "a",
        "product_name": "x",
        "target_style": "minimal",
        "target_platform": "x_post",
    }
    job_id = service.trigger("product-image", body).json()["job_id"]
    import subprocess

    from tests.acceptance.harness import GENHOOK

    other = json.loads(
        subprocess.run(
            [GENHOOK, "services", "create", "crm"],
            env=service.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    headers = {"Authorization": f"Bearer {other['api_key']}"}
    theirs = httpx.get(f"{service.base}/v1/jobs/{job_id}", headers=headers)
    assert theirs.status_code == 403 and theirs.json()["error_code"] == "forbidden"
    assert service.http.get("/v1/jobs/job_nope").status_code == 404
    missing = service.trigger("no-such-workflow", body)
    assert missing.status_code == 404 and missing.json()["error_code"] == "unknown_workflow"
    assert service.http.get("/v1/nowhere").json()["error_code"] == "not_found"


def test_events_stream_ends_with_completion(service: Genhook) -> None:
    """Server-Sent Events: queued, running, succeeded with the payload, then the stream ends."""
    body = {"item_id": "sse-1"}
    job_id = service.trigger("tiny", body).json()["job_id"]
    events = []
    with service.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if line.startswith("data: ") and events and events[-1] == "succeeded":
                last = json.loads(line.removeprefix("data: "))
    assert events[0] == "queued" and events[-1] == "succeeded" and "running" in events
    assert last["result"]["job_id"] == job_id and last["result"]["status"] == "success"


def test_dry_run_maps_without_generating(service: Genhook) -> None:
    """Dry run: the rendered prompt, the style, the outputs it would make, a credit estimate."""
    body = {
        "product_id": "SKU-7",
        "product_name": "Wool Scarf",
        "target_style": "luxury",
        "target_platform": "social_pack",
    }
    answer = service.http.post("/v1/workflows/product-image/dry-run", json=body)
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert plan["style"] == "luxury"
    assert "Wool Scarf" in plan["prompts"][0] and "premium luxury" in plan["prompts"][0]
    assert {o["platform_code"] for o in plan["outputs"]} >= {"instagram_feed", "x_post"}
    assert plan["outputs"][0]["filename_suggestion"].startswith("sku-7-wool-scarf-")
    assert plan["credit_estimate"] == {"expected": 0.0, "max": 0.0}
    bad = service.http.post(
        "/v1/workflows/product-image/dry-run", json={**body, "target_style": "x"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "target_style"
    assert service.http.get("/v1/jobs", params={"external_id": "SKU-7"}).json()["jobs"] == []


def test_discovery_routes(service: Genhook) -> None:
    """Workflows with enums, the completion schema, OpenAPI and health answer as documented."""
    wf = service.http.get("/v1/workflows/product-image").json()
    assert "lifestyle" in wf["input_schema"]["properties"]["target_style"]["enum"]
    assert "instagram_feed" in wf["input_schema"]["properties"]["target_platform"]["enum"]
    assert {"workflow_id", "version", "description", "input_schema", "error_codes"} <= set(wf)
    ids = {w["workflow_id"] for w in service.http.get("/v1/workflows").json()["workflows"]}
    assert {"product-image", "article-header", "user-hero", "onboarding-kit"} <= ids
    schema = service.http.get("/v1/schemas/completion-v1.json").json()
    assert schema["properties"]["schema_version"]["const"] == "1"
    openapi = httpx.get(service.base + "/openapi.json").json()
    assert "/v1/workflows/{workflow_id}/runs" in openapi["paths"]
    assert httpx.get(service.base + "/healthz").json()["status"] == "ok"
