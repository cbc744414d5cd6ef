"""The published completion schema is the one generated from the model, and it is strict:
it requires every contract field, checks the timestamp, and ties ``event`` to ``status``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError
from pydantic import ValidationError as ModelError

from genhook.contract.completion import (
    CompletionPayload,
    failure_payload,
    job_failure_payload,
)
from genhook.contract.schema import completion_schema, render
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.storage import LocalStorage
from genhook.workflow.inputs import check_trigger

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "schemas" / "completion-v1.json"

EXAMPLE = {
    "schema_version": "1",
    "event": "job.completed",
    "job_id": "job_01",
    "workflow_id": "product-image",
    "status": "success",
    "external_id": "SKU-123",
    "outputs": [
        {
            "asset_url": "http://localhost/assets/x.jpg",
            "asset_type": "image",
            "format": "jpeg",
            "width": 1080,
            "height": 1080,
            "platform_code": "instagram_feed",
            "bytes": 183211,
            "sha256": "129e269f9a7eaf3a982bc6f9d006b1d6e1c5f3f2a9874376657a003344242297",
            "alt_text": "a",
            "filename_suggestion": "x.jpg",
            "caption": "c",
        }
    ],
    "seo": {"alt_text": "a", "filename_suggestion": "x.jpg", "caption": "c"},
    "metadata": {
        "prompt_used": "p",
        "model_id": "m",
        "credit_cost": 4.0,
        "processing_time_seconds": 12.7,
        "attempts": 1,
        "seed": 1234,
    },
    "quality_warning": None,
    "error": None,
    "timestamp": "2026-11-28T12:00:00Z",
}


def test_published_schema_is_generated() -> None:
    """docs/schemas/completion-v1.json is exactly what `make schema` generates."""
    assert PUBLISHED.read_text(encoding="utf-8") == render()


def test_contract_example_validates() -> None:
    """The contract's example payload is valid against the schema."""
    Draft202012Validator.check_schema(completion_schema())
    Draft202012Validator(completion_schema()).validate(EXAMPLE)


def _validator() -> Draft202012Validator:
    """The published schema with format checking on (``date-time`` needs rfc3339-validator)."""
    assert importlib.util.find_spec("rfc3339_validator"), "dev extra: rfc3339-validator"
    return Draft202012Validator(
        completion_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


FAILED = {
    **EXAMPLE,
    "event": "job.failed",
    "status": "failed",
    "outputs": [],
    "seo": None,
    "error": {"error_code": "unknown_style", "error_description": "no", "field": "target_style"},
}


def _without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


@pytest.mark.parametrize(
    "broken",
    [
        {**EXAMPLE, "status": "ok"},
        {**EXAMPLE, "schema_version": "2"},
        _without(EXAMPLE, "schema_version"),
        _without(EXAMPLE, "job_id"),
        {**EXAMPLE, "outputs": [{"asset_url": "x"}]},
        {**EXAMPLE, "outputs": [{**EXAMPLE["outputs"][0], "sha256": "ab"}]},
        {**EXAMPLE, "timestamp": "yesterday"},
        {**EXAMPLE, "timestamp": "2026-11-28 12:00:00"},
        {**EXAMPLE, "timestamp": "2026-11-28T12:00:00+01:00"},
        {**EXAMPLE, "timestamp": "2026-13-45T12:00:00Z"},  # the pattern fits; the format not
        {**EXAMPLE, "status": "failed"},  # event job.completed with status failed
        {**EXAMPLE, "error": FAILED["error"]},  # job.completed with an error
        {**FAILED, "status": "success"},
        {**FAILED, "outputs": EXAMPLE["outputs"]},
        {**FAILED, "error": None},
    ],
)
def test_schema_rejects_broken_payloads(broken: dict[str, object]) -> None:
    """A wrong status, version, timestamp, missing field, partial output or an event that
    contradicts the status is refused."""
    with pytest.raises(ValidationError):
        _validator().validate(broken)


def test_failed_example_validates() -> None:
    _validator().validate(FAILED)


def test_model_refuses_an_inconsistent_payload() -> None:
    """The builder cannot make what the schema refuses."""
    fields = {k: v for k, v in EXAMPLE.items() if k != "schema_version"}
    CompletionPayload.model_validate(fields)
    with pytest.raises(ModelError, match=r"event job\.completed with status failed"):
        CompletionPayload.model_validate({**fields, "status": "failed"})
    with pytest.raises(ModelError, match="no outputs and an error"):
        CompletionPayload.model_validate({**FAILED, "error": None})


def test_real_payloads_validate(engine: Engine, tmp_path: Path) -> None:
    """What genhook really sends passes, format checking on: a run of a shipped sample, the
    failed payloads of an invalid trigger and of a cancelled job, and the API docs' example."""
    wf = engine.workflow("product-image")
    sample = ROOT / "workflows" / "samples" / "product-image" / "linen-shirt.json"
    trigger = check_trigger(wf, json.loads(sample.read_text(encoding="utf-8")))
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8080")
    outcome = engine.execute(wf, trigger.input, storage)
    payloads = [outcome.payload.to_json()]
    assert payloads[0]["status"] == "success"
    error = InvalidInput(ErrorCode.UNKNOWN_STYLE, "no such style", field="target_style")
    payloads.append(
        failure_payload(job_id="job_01", workflow_id=wf.id, external_id=None, error=error).to_json()
    )
    job = SimpleNamespace(
        id="job_02",
        workflow_id=wf.id,
        external_id="SKU-1",
        attempts=1,
        processing_seconds=0.25,
        credit_cost=0.0,
    )
    payloads.append(job_failure_payload(job, GenhookError(ErrorCode.CANCELLED)).to_json())
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import openapi_doc
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    payloads.append(openapi_doc._examples()["job"]["result"])
    for payload in payloads:
        _validator().validate(json.loads(json.dumps(payload)))
