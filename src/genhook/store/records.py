"""Frozen records the store returns, one per table row that crosses the store's edge.

A row read as ``dict[str, Any]`` lets a misspelled column name through to run time; these
types make mypy check each one, and being frozen, nothing downstream can change what the
store read. Each is built from a row by ``from_row`` at the store's edge, so the columns it
needs are named in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Service:
    """A requesting service: who an API key belongs to, and the secret its callbacks carry.

    The key's hash is not kept here: once a key has been looked up, nothing needs it.
    """

    id: str
    name: str
    api_key_prefix: str
    webhook_secret: str = field(repr=False)  # never in a log line or a traceback
    rate_limit: str | None
    daily_budget: float | None
    paused_at: float | None
    created_at: float

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Service:
        """The service of a ``services`` row."""
        return cls(
            id=row["id"],
            name=row["name"],
            api_key_prefix=row["api_key_prefix"],
            webhook_secret=row["webhook_secret"],
            rate_limit=row["rate_limit"],
            daily_budget=row["daily_budget"],
            paused_at=row["paused_at"],
            created_at=row["created_at"],
        )
