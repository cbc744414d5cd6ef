"""The published completion schema is the one generated from the model, and it is strict."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, ValidationError

from genhook.contract.schema import completion_schema, render

PUBLISHED = Path(__file__).resolve().parent.parent / "docs" / "schemas" / "completion-v1.json"

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
            "sha256": "ab",
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


@pytest.mark.parametrize(
    "broken",
    [
        {**EXAMPLE, "status": "ok"},
        {**EXAMPLE, "schema_version": "2"},
        {k: v for k, v in EXAMPLE.items() if k != "job_id"},
        {**EXAMPLE, "outputs": [{"asset_url": "x"}]},
    ],
)
def test_schema_rejects_broken_payloads(broken: dict[str, object]) -> None:
    """A wrong status, version, missing field or partial output is refused."""
    with pytest.raises(ValidationError):
        Draft202012Validator(completion_schema()).validate(broken)
