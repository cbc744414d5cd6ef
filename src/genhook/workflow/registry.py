"""The registry of node kinds: built-ins and third-party kinds from the ``genhook.nodes`` group."""

from __future__ import annotations

from genhook.plugins import Registry
from genhook.workflow.node import Node


class NodeRegistry(Registry[Node]):
    """Maps a template's ``kind`` to a node instance."""

    group = "genhook.nodes"

    def get(self, kind: str) -> Node | None:
        """The node of ``kind``, or None."""
        return self.find(kind)

    def kinds(self) -> list[str]:
        """All kind names, sorted."""
        return self.names()
