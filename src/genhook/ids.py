"""Identifiers: time-ordered, unguessable (``job_`` + a ULID)."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    """``prefix_`` + a 26-character ULID, lower-cased: sortable by creation time."""
    return f"{prefix}_{str(ULID()).lower()}"


def new_job_id() -> str:
    """A new job id."""
    return new_id("job")
