"""The published JSON Schema of the completion payload, generated from the pydantic model.

``python -m genhook.contract.schema docs/schemas/completion-v1.json`` writes it (``make schema``).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from genhook.contract.completion import CompletionPayload

SCHEMA_ID = "https://genhook.dev/schemas/completion-v1.json"


@cache
def completion_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of completion payload v1."""
    schema = CompletionPayload.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def render() -> str:
    """The schema as the text written to ``docs/schemas/completion-v1.json``."""
    return json.dumps(completion_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(render(), encoding="utf-8")
