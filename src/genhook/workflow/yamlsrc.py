"""YAML that remembers where each value came from, so template errors can name their line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass
class Located:
    """A parsed YAML document and the 1-based line of every path in it."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int]] = field(default_factory=list)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest located parent."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


class YamlSyntaxError(Exception):
    """The text is not YAML; ``line`` is where the parser stopped."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def load_located(text: str) -> Located:
    """Parse one YAML document with safe semantics, recording lines and duplicate keys."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise YamlSyntaxError(str(exc), mark.line + 1 if mark else None) from exc
    located = Located(data=None)
    if root is None:
        return located
    constructor = yaml.SafeLoader("")
    located.data = _build(root, (), located, constructor)
    return located


def _build(node: yaml.Node, path: Path, out: Located, ctor: yaml.SafeLoader) -> Any:
    out.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                key = str(key)
            child = (*path, key)
            if key in result:
                out.duplicates.append((child, key_node.start_mark.line + 1))
            out.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(value_node, child, out, ctor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), out, ctor) for i, item in enumerate(node.value)]
    return ctor.construct_object(node, deep=True)
