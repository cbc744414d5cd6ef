"""The completion payload on the wire: the one encoding of a payload into the bytes a receiver gets.

A payload is encoded exactly once, when the job ends: those bytes are stored in the delivery row
(and signed and POSTed as they are, on every attempt), and the job's stored ``result`` is parsed
back from the same bytes, so ``GET /v1/jobs/{id}`` and the callback can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The canonical bytes of ``payload``: compact JSON, UTF-8 (no ``\\u`` escapes for non-ASCII),
    keys in the builder's order. ``NaN`` and infinities are refused: they are not JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def decode_payload(body: bytes) -> dict[str, Any]:
    """The payload that ``body`` (bytes from :func:`encode_payload`) encodes."""
    value = json.loads(body.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("a completion payload is a JSON object")
    return value
