"""Stable seeds: the same trigger through the same workflow node gets the same seed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

SEED_SPACE = 2**31 - 1


def stable_seed(*parts: Any) -> int:
    """A seed in ``[0, 2**31 - 1)`` derived from ``parts`` by SHA-256 (never Python's ``hash``)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % SEED_SPACE
