"""Entry-point registries: built-in node kinds and backends load the same way as plugins."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any


def load_group(group: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, loaded object)`` for each entry point of ``group``, sorted by name."""
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        yield ep.name, ep.load()
