"""Entry-point registries: built-in node kinds and backends load the same way as plugins."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


def load_group(group: str) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, loaded object)`` for each entry point of ``group``, sorted by name."""
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        yield ep.name, ep.load()


def load_group_tolerant(group: str) -> Iterator[tuple[str, Any, Exception | None]]:
    """Like :func:`load_group`, but an entry point that fails to import yields its error
    (``(name, None, error)``) instead of taking every other plugin down with it."""
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            loaded = ep.load()
        except Exception as exc:  # a plugin whose own dependencies are missing
            yield ep.name, None, exc
        else:
            yield ep.name, loaded, None


class Registry(Generic[T]):
    """Named plugin instances; each entry point names a class built with no arguments."""

    group: str = ""

    def __init__(self) -> None:
        self._items: dict[str, T] = {}

    @classmethod
    def from_entry_points(cls) -> Self:
        """Every installed plugin of the class's entry point group: genhook's own and others'."""
        registry = cls()
        for name, factory in load_group(cls.group):
            registry.register(factory(), name=name)
        return registry

    def register(self, item: T, *, name: str | None = None) -> None:
        """Add (or replace) a plugin, under ``name`` or its own ``name``/``kind``."""
        key = name or getattr(item, "name", None) or getattr(item, "kind", None)
        if not isinstance(key, str):
            raise ValueError("a plugin needs a name")
        self._items[key] = item

    def names(self) -> list[str]:
        """All names, sorted."""
        return sorted(self._items)

    def find(self, name: str) -> T | None:
        """The plugin called ``name``, or None."""
        return self._items.get(name)
