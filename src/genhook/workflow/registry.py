"""The registry of node kinds: built-ins and third-party kinds from the ``genhook.nodes`` group."""

from __future__ import annotations

from genhook.plugins import load_group
from genhook.workflow.node import Node


class NodeRegistry:
    """Maps a template's ``kind`` to a node instance."""

    def __init__(self) -> None:
        self._kinds: dict[str, Node] = {}

    @classmethod
    def from_entry_points(cls) -> NodeRegistry:
        """Every kind installed: genhook's own and any plugin's."""
        registry = cls()
        for name, factory in load_group("genhook.nodes"):
            registry.register(factory(), name=name)
        return registry

    def register(self, node: Node, *, name: str | None = None) -> None:
        """Add (or replace) a kind."""
        self._kinds[name or node.kind] = node

    def get(self, kind: str) -> Node | None:
        """The node of ``kind``, or None."""
        return self._kinds.get(kind)

    def kinds(self) -> list[str]:
        """All kind names, sorted."""
        return sorted(self._kinds)
